"""Staff API tokens: how one is made, how it is stored (only its SHA-256) and how it is looked up.

The staff UI's Account page creates tokens; `web.deps.api_require` (the `/api/v1` routes and
`/metrics`) checks them. May import `models`; never `web`.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.models import ApiToken, User

API_TOKEN_PREFIX = "drip_"
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
