"""The second factor of staff sign-in: TOTP (RFC 6238, via pyotp) and one-time recovery codes.

- Enrolment: a fresh secret is shown (QR code and text); it is stored only once the person proves
  their app has it by entering a valid code (`enable_totp`), which also makes 10 recovery codes.
  The codes are shown once; only their argon2 hashes are stored and each works once.
- A code is accepted for the current 30-second step and one step either side (clock drift), and
  never twice: the last accepted step is stored, so a code seen over a shoulder is useless.
- Who must have it: admins and clinicians always (`ALWAYS_REQUIRED`); any other role when
  `drip users require-mfa --role ROLE` says so (stored in the `kv` table, so every process agrees at
  once). Everyone may enrol. A user who must have it and has not is led to enrol right after the
  password step and can do nothing else (`needs_enrolment`, checked by the web on every request).
- A lost device: `reset_mfa` (`drip users reset-mfa EMAIL`) removes the secret and the codes, ends
  the user's sessions and is audited.

The TOTP secret is stored as the base32 text the app was given (it must be readable to check codes).
May import `models`, `db`, `accounts.users`; never `web`.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from patient_drip import db
from patient_drip.accounts.sessions import end_all_sessions
from patient_drip.accounts.users import AccountError, Role, check_role, hash_password, verify_password
from patient_drip.contacts.fields import FieldError
from patient_drip.models import RecoveryCode, User, audit

TOTP_STEP_SECONDS = 30
TOTP_DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
ALWAYS_REQUIRED = frozenset({Role.ADMIN.value, Role.CLINICIAN.value})
_REQUIRED_KEY = "mfa_required_roles"
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud or typed from paper


def new_totp_secret() -> str:
    """A fresh random TOTP secret (160 bits, base32), to show on the enrolment page."""
    return pyotp.random_base32(32)


def enrolment_uri(secret: str, email: str, issuer: str) -> str:
    """The `otpauth://` URI an authenticator app reads (from the QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def roles_requiring_mfa(session: Session) -> frozenset[str]:
    """Every role whose users must have a second factor."""
    stored = db.get_kv(session, _REQUIRED_KEY) or ""
    return ALWAYS_REQUIRED | {role for role in stored.split(",") if role}


def set_mfa_required(session: Session, role: str, required: bool, now: datetime, actor: str) -> bool:
    """Require (or stop requiring) a second factor for `role`. Raises `FieldError` for an unknown role
    and `AccountError` when asked to stop requiring it for admins or clinicians. Returns whether the
    rule changed. Users of that role without one are led to enrol at their next request."""
    name = check_role(role).value
    if not required and name in ALWAYS_REQUIRED:
        raise AccountError(f"a second factor is always required for {name}s")
    current = roles_requiring_mfa(session)
    if (name in current) == required:
        return False
    optional = {r for r in current - ALWAYS_REQUIRED if r != name} | ({name} if required else set())
    db.set_kv(session, _REQUIRED_KEY, ",".join(sorted(optional)), now)
    audit(session, actor, "mfa_requirement_changed", now, role=name, required=required)
    return True


def has_mfa(user: User) -> bool:
    return user.totp_secret is not None


def needs_enrolment(session: Session, user: User) -> bool:
    """The user must enrol a second factor before doing anything else."""
    return not has_mfa(user) and user.role in roles_requiring_mfa(session)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    digits = "".join(code.split())
    if len(digits) != 6 or not digits.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_STEP_SECONDS
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), digits):
            return step
    return None


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))  # ~59 bits
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _normalise_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def enable_totp(session: Session, user: User, secret: str, code: str, now: datetime, actor: str) -> list[str]:
    """Store `secret` as `user`'s second factor once `code` proves their app has it; return the new
    recovery codes (shown once; their hashes replace any earlier codes). Raises `FieldError` on
    `code` when it does not match, on `secret` when it is not one we could have made."""
    if has_mfa(user):
        raise FieldError("code", "A second factor is already set up for this account.")
    try:
        valid_secret = len(secret) == 32 and bool(pyotp.TOTP(secret).at(0))
    except (ValueError, TypeError):
        valid_secret = False
    if not valid_secret:
        raise FieldError("secret", "The enrolment form was altered or is out of date; reload the page.")
    step = _matching_step(secret, code, now)
    if step is None:
        raise FieldError("code", "That code does not match. Enter the 6-digit code your app shows now.")
    user.totp_secret, user.totp_last_step, user.mfa_enabled_at = secret, step, now
    codes = replace_recovery_codes(session, user, now)
    audit(session, actor, "mfa_enabled", now, user=user.email)
    return codes


def replace_recovery_codes(session: Session, user: User, now: datetime) -> list[str]:
    """Fresh recovery codes for `user` (earlier ones stop working); returns them in clear, once."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(RecoveryCode(user_id=user.id, code_hash=hash_password(_normalise_recovery(code)), created_at=now)
                    for code in codes)
    session.flush()
    return codes


def unused_recovery_codes(session: Session, user_id: int) -> int:
    return len(list(session.scalars(select(RecoveryCode.id).where(RecoveryCode.user_id == user_id,
                                                                   RecoveryCode.used_at.is_(None)))))


def check_second_factor(session: Session, user: User, code: str, now: datetime) -> str | None:
    """Accept `code` for `user` when it is a TOTP code not used before, or an unused recovery code
    (which is then spent). Returns "totp" or "recovery code", or None when refused. The caller
    commits (and throttles the attempts)."""
    if user.totp_secret is None:
        return None
    step = _matching_step(user.totp_secret, code, now)
    if step is not None:
        if user.totp_last_step is not None and step <= user.totp_last_step:
            return None  # replayed (or older than one already used)
        user.totp_last_step = step
        return "totp"
    wanted = _normalise_recovery(code)
    if len(wanted) != 12:
        return None
    for row in session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                                          RecoveryCode.used_at.is_(None))):
        if verify_password(row.code_hash, wanted):
            row.used_at = now
            audit(session, user.email, "mfa_recovery_code_used", now,
                  remaining=unused_recovery_codes(session, user.id) - 1)
            return "recovery code"
    return None


def reset_mfa(session: Session, user: User, now: datetime, actor: str) -> bool:
    """For a lost device: `user` has no second factor any more (they enrol again at the next sign-in
    when their role requires one); their recovery codes and sessions end. Returns whether they had one."""
    had = has_mfa(user)
    user.totp_secret, user.totp_last_step, user.mfa_enabled_at = None, None, None
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    end_all_sessions(session, user.id, now)
    audit(session, actor, "mfa_reset", now, user=user.email, had_mfa=had)
    return had
