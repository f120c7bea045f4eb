"""What every `drip` command module shares: the one-line error, the `friendly` wrapper, a runtime
for a command, the audit actor of the command line. Imported by `cli.py` and `cli_users.py` (so the
command modules do not import each other).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from patient_drip import db
from patient_drip.accounts.users import AccountError
from patient_drip.contacts.changes import ContactNotFound
from patient_drip.contacts.enrollment import EnrollmentError
from patient_drip.contacts.fields import FieldError
from patient_drip.content.campaign import Campaign, CampaignError, UnknownCampaign
from patient_drip.content.campaign_versions import version_in_force
from patient_drip.content.rendering import RenderError
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.settings import Settings, SettingsError, load_settings

F = TypeVar("F", bound=Callable[..., Any])
CLI_ACTOR = f"cli:{os.environ.get('USER', 'operator')}"


class UserError(click.ClickException):
    """Printed as `error: message`, exit code 1."""

    def format_message(self) -> str:
        return self.message

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def friendly(func: F) -> F:
    """Turn the errors a user can cause into one line instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SettingsError, CampaignError, UnknownCampaign, FieldError, EnrollmentError, ContactNotFound,
                AccountError, RenderError) as exc:
            raise UserError(str(exc)) from None
        except (OperationalError, ProgrammingError) as exc:
            text = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
            if "no such table" in text or "does not exist" in text:
                raise UserError("the database has no schema yet; run `drip init` first") from None
            raise UserError(f"database error: {text.splitlines()[0]}") from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def runtime(settings: Settings | None = None, *, sends: bool = True) -> Iterator[Runtime]:
    """The command's runtime, closed after. `sends=False` for a command that never sends a message:
    no provider sender is built (nor its SDK loaded)."""
    settings = settings or load_settings()
    rt = build_runtime(settings) if sends else build_runtime(settings, senders={})
    try:
        yield rt
    finally:
        rt.close()




def in_force_or_file(settings: Settings, campaign: Campaign) -> Campaign:
    """`campaign` as a new enrollment would follow it now (its timing version in force), read from
    the database; the file itself when there is no database yet (`drip simulate` works before
    `drip init`: it shows the file)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not os.path.exists(url.database)):
        return campaign  # no database file yet: do not create one just to look
    engine = db.make_engine(settings.database_url)
    try:
        with db.make_session_factory(engine)() as session:
            return version_in_force(session, campaign)
    except (OperationalError, ProgrammingError):
        return campaign
    finally:
        engine.dispose()
