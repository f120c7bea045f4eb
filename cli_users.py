"""`drip users …`: staff accounts from the command line. Thin over `accounts.users` and
`accounts.mfa`, the same functions the staff UI calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.cli_support import CLI_ACTOR, friendly, runtime
from patient_drip.models import User
from patient_drip.runtime import utcnow
from patient_drip.settings import load_settings

@click.group()
def users() -> None:
    """Staff accounts for the web UI."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff", "marketing", "clinician"]), required=True,
              help="What the user may do.")
@click.option("--name", default="", help="Display name.")
@click.option("--password", envvar="DRIP_NEW_USER_PASSWORD", default=None,
              help="Password (at least 12 characters, not a common or breached password); generated and printed when omitted.")
@friendly
def users_add(email: str, role: str, name: str, password: str | None) -> None:
    """Create a staff user."""
    from patient_drip.accounts.users import create_user, generate_password

    settings = load_settings()
    chosen = password or generate_password()
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        user = create_user(session, email, chosen, role, utcnow(), CLI_ACTOR, name=name)
    click.echo(f"user {user.email} ({role}) created" + ("" if password else f"; password: {chosen}"))


def _change_user(email: str, change: Callable[[Session, User, datetime], object]) -> User:
    """Find the user `email` and apply one `accounts.users` change to it in one transaction."""
    from patient_drip.accounts.users import find_user

    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        user = find_user(session, email)
        change(session, user, utcnow())
    return user


@users.command("disable")
@click.argument("email")
@friendly
def users_disable(email: str) -> None:
    """Disable a staff user (they can no longer sign in; their API tokens are revoked, and enabling
    them again revives none). The last active admin cannot be disabled."""
    from patient_drip.accounts.users import disable_user

    user = _change_user(email, lambda session, user, now: disable_user(session, user, now, CLI_ACTOR))
    click.echo(f"user {user.email} disabled")


@users.command("enable")
@click.argument("email")
@friendly
def users_enable(email: str) -> None:
    """Let a disabled staff user sign in again."""
    from patient_drip.accounts.users import enable_user

    user = _change_user(email, lambda session, user, now: enable_user(session, user, now, CLI_ACTOR))
    click.echo(f"user {user.email} enabled")


@users.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(["admin", "staff", "marketing", "clinician"]))
@friendly
def users_role(email: str, role: str) -> None:
    """Give a staff user another role; their API tokens are revoked (the last active admin cannot be
    demoted)."""
    from patient_drip.accounts.users import change_role

    user = _change_user(email, lambda session, user, now: change_role(session, user, role, now, CLI_ACTOR))
    click.echo(f"user {user.email} is now {role}")


@users.command("clinician")
@click.argument("email")
@click.option("--off", is_flag=True, help="Take the clinician's duties away instead of giving them.")
@friendly
def users_clinician(email: str, off: bool) -> None:
    """Give a staff user (typically an admin) the clinician's duties besides their role: approving
    templates and managing the claims library. A user with the role clinician has them anyway."""
    from patient_drip.accounts.users import set_clinician

    user = _change_user(email, lambda session, user, now: set_clinician(session, user, not off, now, CLI_ACTOR))
    click.echo(f"user {user.email} {'no longer holds' if off else 'now holds'} the clinician's duties")


@users.command("reset-password")
@click.argument("email")
@click.option("--password", envvar="DRIP_NEW_USER_PASSWORD", default=None,
              help="New password (at least 12 characters, not a common or breached password); generated and printed when omitted.")
@friendly
def users_reset_password(email: str, password: str | None) -> None:
    """Set a new password for a staff user; their sessions end and their API tokens are revoked."""
    from patient_drip.accounts.users import generate_password, reset_password

    chosen = password or generate_password()
    user = _change_user(email, lambda session, user, now: reset_password(session, user, now, CLI_ACTOR, chosen))
    click.echo(f"password of {user.email} reset" + ("" if password else f"; password: {chosen}"))


@users.command("list")
@friendly
def users_list() -> None:
    """List staff users and their roles."""
    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session:
        for user in session.scalars(select(User).order_by(User.email)):
            click.echo(f"{user.email:<40} {user.role:<10} {'disabled' if user.disabled else 'active'}")



@users.command("require-mfa")
@click.option("--role", "role", type=click.Choice(["admin", "staff", "marketing", "clinician"]), required=True,
              help="The role whose users must use two-step sign-in.")
@click.option("--no", "off", is_flag=True, default=False,
              help="Stop requiring it for ROLE (refused for admin and clinician: always required).")
@friendly
def users_require_mfa(role: str, off: bool) -> None:
    """Require two-step sign-in (TOTP) for every user of a role; they enrol at their next request."""
    from patient_drip.accounts.mfa import roles_requiring_mfa, set_mfa_required

    settings = load_settings()
    with runtime(settings) as rt, rt.sessions() as session, session.begin():
        changed = set_mfa_required(session, role, not off, utcnow(), CLI_ACTOR)
        now_required = sorted(roles_requiring_mfa(session))
    state = "no longer required" if off else "required"
    click.echo(f"two-step sign-in {state} for {role}" + ("" if changed else " (unchanged)")
               + f"; required for: {', '.join(now_required)}")


@users.command("reset-mfa")
@click.argument("email")
@friendly
def users_reset_mfa(email: str) -> None:
    """Remove a staff user's two-step sign-in (a lost phone): their recovery codes and sessions end;
    they set it up again at their next sign-in. Audited."""
    from patient_drip.accounts.mfa import reset_mfa

    user = _change_user(email, lambda session, user, now: reset_mfa(session, user, now, CLI_ACTOR))
    click.echo(f"two-step sign-in of {user.email} removed; they set it up again at their next sign-in")
