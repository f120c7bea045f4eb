"""Staff API tokens: how one is made, how it is stored (only its SHA-256) and how it is looked up.

The staff UI's Account page creates and revokes tokens through `create_api_token` /
`revoke_api_token`; `web.deps.api_require` (the `/api/v1` routes and `/metrics`) checks them. May import
`models` and `contacts.fields`; never `web`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.fields import FieldError
from patient_drip.models import ApiToken, User, audit

API_TOKEN_PREFIX = "drip_"
MAX_TOKENS_PER_USER = 20
MAX_TOKEN_LENGTH = 200
# Use is recorded at most this often: no database write on every API call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def new_api_token() -> str:
    """A fresh random token (`drip_` + 43 URL-safe characters), shown to its owner once."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256, hex (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def user_for_token(session: Session, token: str, now: datetime) -> User | None:
    """The enabled user who owns this unrevoked token, or None for any other token (empty,
    oversized, unknown, revoked, or its user disabled). Marks the token used (at most once per
    `LAST_USED_RESOLUTION`); the caller commits."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return user


def create_api_token(session: Session, user_id: int, name: str, now: datetime, actor: str) -> str:
    """Make a token for `user_id` labelled `name` and return it (the caller shows it once; only its
    digest is stored). Raises `FieldError` on `name` when the user already has the most tokens."""
    label = " ".join(name.split()) or "API token"
    active = session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)))
    if len(list(active)) >= MAX_TOKENS_PER_USER:
        raise FieldError("name", f"You already have {MAX_TOKENS_PER_USER} tokens; revoke one.")
    token = new_api_token()
    session.add(ApiToken(user_id=user_id, name=label, token_hash=token_digest(token), created_at=now))
    audit(session, actor, "api_token_created", now, name=label)
    return token


def revoke_api_token(session: Session, token: ApiToken, now: datetime, actor: str) -> bool:
    """The token stops working at once. Returns whether it was still active."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = now
    audit(session, actor, "api_token_revoked", now, name=token.name)
    return True
