"""Staff accounts: argon2-hashed passwords, roles, and every change to a user.

Creating a user, changing a role, disabling, enabling and resetting a password each live here once;
the CLI (`drip users …`) and the staff UI both call them. The last active admin can be neither
disabled nor demoted, from anywhere; nobody can disable their own account. Sign-in sessions are
the web's business: the staff UI ends them after a disable or reset (a disabled user is refused at
every request anyway).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.accounts.api_tokens import RevokeReason, revoke_user_tokens
from patient_drip.accounts.passwords import check_password
from patient_drip.accounts.sessions import end_all_sessions
from patient_drip.contacts.fields import FieldError, normalize_email
from patient_drip.models import User, audit

_hasher = PasswordHasher()


class Role(StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    MARKETING = "marketing"
    CLINICIAN = "clinician"


class AccountError(Exception):
    """A change to a user that the rules refuse; the message says why."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A random password that passes the rule (16 URL-safe characters, 96 bits)."""
    return secrets.token_urlsafe(12)


def check_role(role: str) -> Role:
    """The role named `role`. Raises `FieldError` on `role` for any other word."""
    if role not in {r.value for r in Role}:
        raise FieldError("role", f"{role!r} is not a role; choose from {', '.join(r.value for r in Role)}")
    return Role(role)


def create_user(session: Session, email: str, password: str, role: str, now: datetime, actor: str,
                name: str = "") -> User:
    """A new active user. Raises `FieldError` (email, role, password breaking `accounts.passwords`'
    rule, email taken)."""
    address = normalize_email(email, field="email")
    check_role(role)
    check_password(password)
    if session.scalar(select(User).where(User.email == address)) is not None:
        raise FieldError("email", f"a user with {address} already exists")
    user = User(email=address, name=name, password_hash=hash_password(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    audit(session, actor, "user_created", now, user=address, role=role)
    return user


def is_clinician(user: User) -> bool:
    """Whether `user` holds the clinician's duties: approving or rejecting templates and managing
    the claims library. The role "clinician" does; an admin (or anyone) does only when given the
    clinician flag (`set_clinician`): being an admin is not being a clinician."""
    return not user.disabled and (user.role == Role.CLINICIAN or bool(user.clinician))


def set_clinician(session: Session, user: User, on: bool, now: datetime, actor: str, *,
                  acting_user_id: int | None = None) -> bool:
    """Give `user` the clinician's duties besides their role, or take them away. Raises
    `AccountError` for one's own account (as for roles: another admin must do it). Returns whether
    anything changed. A user with the role "clinician" holds the duties through the role."""
    if acting_user_id is not None and user.id == acting_user_id:
        raise AccountError("You cannot change your own clinician duties; ask another admin.")
    if bool(user.clinician) == on:
        return False
    user.clinician = on
    audit(session, actor, "user_clinician_changed", now, user=user.email, clinician=on)
    return True


def find_user(session: Session, email: str) -> User:
    """The user with this email address (any case). Raises `AccountError` when there is none.

    A look-up, not a validation: an address that would not be accepted today still finds its user."""
    user = session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        raise AccountError(f"no user {email}")
    return user


def has_admin(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == Role.ADMIN, User.disabled.is_(False)).limit(1)) is not None


def _is_last_active_admin(session: Session, user: User) -> bool:
    if user.role != Role.ADMIN or user.disabled:
        return False
    other = session.scalar(select(User.id).where(User.role == Role.ADMIN, User.disabled.is_(False),
                                                 User.id != user.id).limit(1))
    return other is None


def change_role(session: Session, user: User, role: str, now: datetime, actor: str, *,
                acting_user_id: int | None = None) -> bool:
    """Give `user` another role. Raises `FieldError` (not a role) or `AccountError` (one's own role, as
    for disabling; the last active admin cannot be demoted). Returns whether the role changed."""
    new_role = check_role(role)
    if new_role == user.role:
        return False
    if acting_user_id is not None and user.id == acting_user_id:
        raise AccountError("You cannot change your own role; ask another admin.")
    if _is_last_active_admin(session, user):
        raise AccountError(f"{user.email} is the last active admin; make someone else an admin first")
    previous = user.role
    user.role = new_role
    revoke_user_tokens(session, user.id, now, RevokeReason.ROLE_CHANGED, actor)  # minted under the old role
    audit(session, actor, "user_role_changed", now, user=user.email, role=str(new_role), previous=previous)
    return True


def disable_user(session: Session, user: User, now: datetime, actor: str, *, acting_user_id: int | None = None) -> bool:
    """`user` can no longer sign in and their API tokens stop working. Raises `AccountError` for the
    acting user's own account and for the last active admin. Returns whether anything changed."""
    if acting_user_id is not None and user.id == acting_user_id:
        raise AccountError("You cannot disable your own account.")
    if _is_last_active_admin(session, user):
        raise AccountError("This is the last active admin.")
    if user.disabled:
        return False
    user.disabled = True
    end_all_sessions(session, user.id, now)
    revoke_user_tokens(session, user.id, now, RevokeReason.DISABLED, actor)  # re-enabling revives none
    audit(session, actor, "user_disabled", now, user=user.email)
    return True


def enable_user(session: Session, user: User, now: datetime, actor: str) -> bool:
    """`user` may sign in again. Returns whether anything changed."""
    if not user.disabled:
        return False
    user.disabled = False
    audit(session, actor, "user_enabled", now, user=user.email)
    return True


def reset_password(session: Session, user: User, now: datetime, actor: str, password: str | None = None) -> str:
    """Set a new password (`password`, or a generated one) and return it; the caller shows it once.
    Raises `FieldError` when the given password breaks `accounts.passwords`' rule."""
    chosen = password or generate_password()
    check_password(chosen)
    user.password_hash = hash_password(chosen)
    end_all_sessions(session, user.id, now)  # whoever held the old password is signed out everywhere
    revoke_user_tokens(session, user.id, now, RevokeReason.PASSWORD_RESET, actor)  # ... and loses its tokens
    audit(session, actor, "user_password_reset", now, user=user.email)
    return chosen


def change_own_password(session: Session, user: User, current: str, new: str, confirm: str, now: datetime,
                        actor: str) -> None:
    """The signed-in person changes their own password. Raises `FieldError` naming `current`, `new` or
    `confirm`. Every session of theirs ends; the caller issues a fresh one for the device in use."""
    if not verify_password(user.password_hash, current):
        raise FieldError("current", "This is not your current password.")
    check_password(new, field="new")
    if new != confirm:
        raise FieldError("confirm", "The two new passwords are not the same.")
    user.password_hash = hash_password(new)
    end_all_sessions(session, user.id, now)
    revoke_user_tokens(session, user.id, now, RevokeReason.PASSWORD_CHANGED, actor)
    audit(session, actor, "password_changed", now)
