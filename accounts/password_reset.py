"""Self-service password reset by emailed link: the rule, one place.

- A link is a token signed with the installation's secret (itsdangerous, its own salt) holding the
  user id, when it was made, and a fingerprint of the password hash it may replace. It works for
  `DRIP_PASSWORD_RESET_MINUTES` (checked against `now`, so the virtual clock of tests applies) and
  once: using it changes the password hash, so its fingerprint no longer matches (an older link dies
  too). A tampered or truncated token fails the signature.
- Asking for a link answers the same whether or not the address has an account (the web sends the
  email after answering, so timing says nothing either). Requests are throttled per address and per
  network by the caller (`accounts.throttle`).
- Completing a reset checks the password rule (`accounts.passwords`), ends every session of the user
  and is audited. It does not remove the second factor: after a reset the person still signs in with
  their code.

May import `models`, `accounts.*`, `providers.types` (to build the email); never `web`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.accounts.passwords import check_password
from patient_drip.accounts.api_tokens import RevokeReason, revoke_user_tokens
from patient_drip.accounts.sessions import end_all_sessions
from patient_drip.accounts.users import hash_password
from patient_drip.contacts.fields import FieldError
from patient_drip.models import User, audit
from patient_drip.providers.types import Channel, OutgoingMessage

RESET_SALT = "drip-password-reset"
MAX_TOKEN_LENGTH = 400


class ResetLinkError(Exception):
    """The link cannot be used; the message says why (expired, used, altered) and what to do."""


def _serializer(secret_key: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=RESET_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode("utf-8")).hexdigest()[:24]


def make_reset_token(secret_key: str, user: User, now: datetime) -> str:
    """A signed, expiring, single-use token for `user` (goes into the emailed link)."""
    return str(_serializer(secret_key).dumps({"u": user.id, "t": int(now.timestamp()), "f": _fingerprint(user)}))


def request_reset(session: Session, email: str, now: datetime) -> User | None:
    """The enabled user with this address, for whom a link is to be sent, or None (no account, or a
    disabled one: nothing is sent, and the caller answers exactly the same). Audits a request for a
    real account; the caller commits."""
    wanted = email.strip().lower()
    user = session.scalar(select(User).where(func.lower(User.email) == wanted)) if wanted else None
    if user is None or user.disabled:
        return None
    audit(session, "sign-in", "password_reset_requested", now, user=user.email)
    return user


def user_for_reset_token(session: Session, secret_key: str, token: str, now: datetime, minutes: int) -> User:
    """The user a valid link is for. Raises `ResetLinkError` when the token is altered, expired,
    already used (the password changed since it was made) or its user is disabled."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ResetLinkError("This reset link is not valid. Ask for a new one.")
    try:
        data = _serializer(secret_key).loads(token)
    except (BadSignature, ValueError, TypeError, UnicodeDecodeError):
        raise ResetLinkError("This reset link is not valid (it was changed or cut short). Ask for a new one.") from None
    if not (isinstance(data, dict) and isinstance(data.get("u"), int) and isinstance(data.get("t"), int)
            and isinstance(data.get("f"), str)):
        raise ResetLinkError("This reset link is not valid. Ask for a new one.")
    age = now.timestamp() - data["t"]
    if not 0 <= age < minutes * 60:
        raise ResetLinkError(f"This reset link has expired (links work for {minutes} minutes). Ask for a new one.")
    user = session.get(User, data["u"])
    if user is None or user.disabled:
        raise ResetLinkError("This reset link is not valid. Ask for a new one.")
    if data["f"] != _fingerprint(user):
        raise ResetLinkError("This reset link was already used (or the password changed since). Ask for a new one.")
    return user


def complete_reset(session: Session, secret_key: str, token: str, new: str, confirm: str, now: datetime,
                   minutes: int) -> User:
    """Set the password from a reset link. Raises `ResetLinkError` (see `user_for_reset_token`) or
    `FieldError` on `new` (the password rule) or `confirm` (not the same). Ends every session of the
    user and audits; the caller commits."""
    user = user_for_reset_token(session, secret_key, token, now, minutes)
    check_password(new, field="new")
    if new != confirm:
        raise FieldError("confirm", "The two new passwords are not the same.")
    user.password_hash = hash_password(new)
    end_all_sessions(session, user.id, now)
    # Whoever had the password may have made tokens with it: a recovery takes them all away.
    revoke_user_tokens(session, user.id, now, RevokeReason.PASSWORD_RESET_BY_EMAIL, user.email)
    audit(session, user.email, "password_reset_by_email", now)
    return user


@dataclass(frozen=True, slots=True)
class ResetEmail:
    to: str
    link: str


def reset_message(email: ResetEmail, clinic_name: str, minutes: int) -> OutgoingMessage:
    """The email that carries the link (plain text: nothing to render, nothing to track)."""
    text = (f"Someone asked to reset the password of your {clinic_name} staff account.\n\n"
            f"To choose a new password, open this link within {minutes} minutes (it works once):\n"
            f"{email.link}\n\n"
            "If it was not you, ignore this email: your password stays as it is.\n")
    return OutgoingMessage(message_id=0, channel=Channel.EMAIL, to=email.to, text=text,
                           subject=f"Reset your {clinic_name} staff password", categories=("staff-password-reset",))
