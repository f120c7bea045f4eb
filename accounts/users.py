"""Staff accounts: argon2-hashed passwords and roles."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.fields import FieldError, normalize_email
from patient_drip.models import audit
from patient_drip.models import User

MIN_PASSWORD = 10
_hasher = PasswordHasher()


class Role(StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    MARKETING = "marketing"
    CLINICIAN = "clinician"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def create_user(session: Session, email: str, password: str, role: str, now: datetime, actor: str,
                name: str = "") -> User:
    address = normalize_email(email, field="email")
    if role not in {r.value for r in Role}:
        raise FieldError("role", f"{role!r} is not a role; choose from {', '.join(r.value for r in Role)}")
    if len(password) < MIN_PASSWORD:
        raise FieldError("password", f"must be at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.email == address)) is not None:
        raise FieldError("email", f"a user with {address} already exists")
    user = User(email=address, name=name, password_hash=hash_password(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    audit(session, actor, "user_created", now, user=address, role=role)
    return user


def has_admin(session: Session) -> bool:
    return session.scalar(select(User.id).where(User.role == Role.ADMIN, User.disabled.is_(False)).limit(1)) is not None
