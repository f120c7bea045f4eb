"""What routes share: FastAPI dependencies and request helpers. Imports no routes.

The runtime, a session (IMMEDIATE on SQLite, for routes that write) and a read session (DEFERRED,
for pages that only read), the clock, the client's address, the page templates and the public page
renderer; the signed-in person (`CurrentUser`), the two authentication errors, and the bearer-token
check every `/api/v1` route and `/metrics` depend on. Every route module (public pages, webhooks,
metrics, `admin/`) imports from here and `app.py` imports them: no route module imports `app.py`,
so the web package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from patient_drip.accounts.api_tokens import user_for_token
from patient_drip.accounts.users import Role
from patient_drip.runtime import Runtime

WEB_DIR = Path(__file__).resolve().parent

# One template environment for the public and the staff pages (`web/templates/`, not the message
# `templates/`); `admin.common` adds the staff pages' filters to it.
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))

ALL_ROLES = tuple(role.value for role in Role)


# -- runtime, sessions, clock -------------------------------------------------------------------


def get_runtime(request: Request) -> Runtime:
    """The runtime `create_app` was built with."""
    return request.app.state.rt  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """A session for a route that writes (IMMEDIATE on SQLite: it takes the write lock at once)."""
    with get_runtime(request).sessions() as session:
        yield session


@contextmanager
def read_session(rt: Runtime) -> Iterator[Session]:
    """A session for reading only. On SQLite its transaction is DEFERRED (db.py makes transactions
    IMMEDIATE by default, which takes the write lock): a page view, the sign-in check or the
    funnel count then never holds up the dispatcher or a webhook (WAL lets readers and one writer
    work at once). Never write through it."""
    with rt.sessions() as session:
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """`read_session` as a dependency."""
    with read_session(get_runtime(request)) as session:
        yield session


def get_now(request: Request) -> datetime:
    """The app's clock (tests replace it with a virtual one)."""
    return request.app.state.clock()  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
# For GET pages: they only read. State-changing routes use SessionDep.
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
NowDep = Annotated[datetime, Depends(get_now)]


def client_ip(request: Request) -> str:
    """The connecting client's address ("unknown" when the server does not know it)."""
    return request.client.host if request.client else "unknown"


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A public page from `web/templates/`, with the clinic's name, phone and address filled in."""
    settings = get_runtime(request).settings
    base = {"clinic_name": settings.clinic_name, "clinic_phone": settings.clinic_phone,
            "clinic_address": settings.clinic_address}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


# -- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The signed-in person, detached from any database session."""

    id: int
    email: str
    name: str
    role: str
    csrf: str = ""
    via_api: bool = False
    must_enrol: bool = False  # signed in only to enrol a second factor (see admin.auth.require)

    def can(self, *roles: str) -> bool:
        """Admins can do everything; others only what their role is listed for."""
        return self.role == Role.ADMIN or self.role in roles

    @property
    def actor(self) -> str:
        """How this person appears in the audit log and as template author/approver."""
        return self.email

    @property
    def label(self) -> str:
        """The name to show (the email when no name is set)."""
        return self.name or self.email


class NotAuthenticated(Exception):
    """No valid session (or API token): the handler redirects to the login page or answers 401."""


class Forbidden(Exception):
    """Signed in, but the role does not allow this (or the CSRF token is missing/wrong)."""

    def __init__(self, message: str = "Your role does not allow this page or action.") -> None:
        self.message = message
        super().__init__(message)


bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiToken", bearerFormat="drip_<random>",
    description="A personal API token created on the staff UI's Account page (`Authorization: Bearer drip_...`).",
)


def api_user_for_token(rt: Runtime, token: str, now: datetime) -> CurrentUser | None:
    """The enabled user who owns this unrevoked API token, or None (its use is recorded)."""
    with rt.sessions() as session:
        user = user_for_token(session, token, now)
        if user is None:
            return None
        current = CurrentUser(user.id, user.email, user.name, user.role, via_api=True)
        session.commit()
        return current


def api_require(*roles: str) -> Callable[..., CurrentUser]:
    """Dependency for `/api/v1` and `/metrics`: a valid bearer token whose user's role is one of
    `roles` (admins always pass). Raises NotAuthenticated or Forbidden."""

    def dependency(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> CurrentUser:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise NotAuthenticated()
        user = api_user_for_token(get_runtime(request), credentials.credentials, get_now(request))
        if user is None:
            raise NotAuthenticated()
        if not user.can(*roles):
            raise Forbidden()
        return user

    dependency.__name__ = f"api_require_{'_'.join(roles) or 'any'}"
    dependency.drip_auth = True  # type: ignore[attr-defined]  # the route-protection test looks for it
    return dependency
