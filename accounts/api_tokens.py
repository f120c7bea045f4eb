"""Staff API tokens: how one is made (scopes limited by the owner's role, an expiry), how it is stored
(only its SHA-256), how it is checked, and when it dies.

A token dies when it expires, when its owner revokes it on the Account page, and when its owner's
credentials or power change: password change, admin reset, disable and role change all call
`revoke_user_tokens` (from `accounts.users`), so re-enabling a user revives nothing. The staff UI's
Account page creates and revokes tokens through `create_api_token` / `revoke_api_token`;
`web.deps.api_require` (the `/api/v1` routes and `/metrics`) checks them with `check_api_token`.
May import `models`, `accounts.scopes` and `contacts.fields`; never `web`, never `accounts.users`
(which imports this module).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from patient_drip.accounts.scopes import Scope, expiry_choices, format_scopes, parse_scopes, scopes_for_role
from patient_drip.contacts.fields import FieldError
from patient_drip.models import ApiToken, User, audit

API_TOKEN_PREFIX = "drip_"
MAX_TOKENS_PER_USER = 20
MAX_TOKEN_LENGTH = 200
# Use is recorded at most this often: no database write on every API call.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class RevokeReason:
    """Why a token was revoked (stored in `api_token.revoked_reason`, shown on the Account page)."""

    BY_OWNER = "revoked"
    PASSWORD_CHANGED = "password changed"
    PASSWORD_RESET = "password reset by an admin"
    PASSWORD_RESET_BY_EMAIL = "password reset by email link"
    DISABLED = "account disabled"
    ROLE_CHANGED = "role changed"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token that checked out: its owner (enabled) and the scopes it may use now (the token's
    scopes that the owner's current role still allows)."""

    user: User
    scopes: frozenset[Scope]
    token_id: int


@dataclass(frozen=True, slots=True)
class TokenRefused:
    """A token that opens nothing, and why, in words that may be shown to whoever sent it (they hold
    the token: telling them it expired leaks nothing)."""

    reason: str


def new_api_token() -> str:
    """A fresh random token (`drip_` + 43 URL-safe characters), shown to its owner once."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256, hex (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_api_token(session: Session, token: str, now: datetime) -> TokenGrant | TokenRefused:
    """What `token` may do at `now`.

    Refused: empty, oversized or unknown tokens, revoked ones, expired ones (`expires_at <= now`), and
    tokens of a disabled or deleted user. Otherwise a `TokenGrant`; the token is marked used (at most
    once per `LAST_USED_RESOLUTION`) and the caller commits."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return TokenRefused("unknown or revoked API token")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None:
        return TokenRefused("unknown or revoked API token")
    if row.expires_at <= now:
        return TokenRefused(f"this API token expired on {row.expires_at:%Y-%m-%d %H:%M} UTC; "
                            "create a new one on the Account page")
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return TokenRefused("unknown or revoked API token")
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return TokenGrant(user, parse_scopes(row.scopes) & scopes_for_role(user.role), row.id)


def create_api_token(session: Session, user_id: int, name: str, scopes: Iterable[str], days: int, now: datetime,
                     actor: str, *, max_days: int) -> str:
    """Make a token for `user_id` labelled `name`, holding `scopes`, that expires `days` after `now`,
    and return it (the caller shows it once; only its digest is stored).

    Raises `FieldError` on `scopes` (none chosen, an unknown name, or one the owner's role may not
    hold), on `expires` (`days` not one of `expiry_choices(max_days)`) and on `name` (the user
    already has `MAX_TOKENS_PER_USER` live tokens)."""
    owner = session.get(User, user_id)
    if owner is None or owner.disabled:
        raise FieldError("name", "This account cannot hold tokens.")
    wanted = {str(s) for s in scopes}
    if not wanted:
        raise FieldError("scopes", "Choose at least one scope.")
    unknown = sorted(wanted - {s.value for s in Scope})
    if unknown:
        # Named back to the person, cut short: the form field is theirs to fill with anything.
        raise FieldError("scopes", f"{', '.join(name[:40] for name in unknown[:3])} is not a scope.")
    chosen = {Scope(s) for s in wanted}
    beyond = sorted(s.value for s in chosen - scopes_for_role(owner.role))
    if beyond:
        raise FieldError("scopes", f"Your role ({owner.role}) may not hold {', '.join(beyond)}.")
    allowed_days = expiry_choices(max_days)
    if days not in allowed_days:
        raise FieldError("expires", f"Choose one of {', '.join(str(d) for d in allowed_days)} days.")
    label = " ".join(name.split()) or "API token"
    live = session.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None),
                                                     ApiToken.expires_at > now))
    if len(list(live)) >= MAX_TOKENS_PER_USER:
        raise FieldError("name", f"You already have {MAX_TOKENS_PER_USER} tokens; revoke one.")
    token = new_api_token()
    stored_scopes = format_scopes(chosen)
    expires_at = now + timedelta(days=days)
    session.add(ApiToken(user_id=user_id, name=label, token_hash=token_digest(token), scopes=stored_scopes,
                         created_at=now, expires_at=expires_at))
    audit(session, actor, "api_token_created", now, name=label, scopes=stored_scopes,
          expires=expires_at.isoformat(timespec="seconds"))
    return token


def revoke_api_token(session: Session, token: ApiToken, now: datetime, actor: str) -> bool:
    """The owner revokes one token: it stops working at once. Returns whether it was still active."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = now
    token.revoked_reason = RevokeReason.BY_OWNER
    audit(session, actor, "api_token_revoked", now, name=token.name)
    return True


def revoke_user_tokens(session: Session, user_id: int, now: datetime, reason: str, actor: str) -> int:
    """Every unrevoked token of `user_id` stops working (one UPDATE, every process sees it at its next
    request). Called whenever the owner's credentials or power change: whoever holds an old token
    must not keep what the change took away. Returns how many were revoked; audits when any were."""
    result = session.execute(update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
                             .values(revoked_at=now, revoked_reason=reason)
                             .execution_options(synchronize_session="fetch"))
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        owner = session.get(User, user_id)
        audit(session, actor, "api_tokens_revoked", now, user=owner.email if owner else str(user_id),
              reason=reason, count=count)
    return count
