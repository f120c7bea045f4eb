"""Staff sign-in as one rule: throttle, then check the password, then (when the user has one) the
second factor; every failure and every throttle decision is the same for every entry point.

Attempts are counted before anything is checked (`accounts.throttle`), in their own committed
transaction: per account (`account:<email>`, from any address) and per network
(`net:<IPv4 /24 or IPv6 /64>`, across accounts). Over either limit the answer is "throttled" with the
seconds to wait, and neither password nor code is looked at, so N parallel guesses check at most the
limit. A success takes its attempt back (it was not a failure) and clears the account's count.
The first attempt over an account's limit writes an audit row (`sign_in_throttled`).

Second-factor codes are counted per user (`mfa:<id>`) with the account limit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from patient_drip.accounts.mfa import check_second_factor
from patient_drip.accounts.throttle import clear_attempts, count_attempt, network_of, prune_attempts, refund_attempt
from patient_drip.accounts.users import hash_password, verify_password
from patient_drip.models import User, audit
from patient_drip.settings import Settings


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    account_limit: int
    network_limit: int
    window_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(settings.login_account_limit, settings.login_network_limit, settings.login_window_minutes * 60)


class Outcome(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # unknown email, wrong password or wrong code: one answer for all
    DISABLED = "disabled"  # right password, disabled account
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class SignInResult:
    outcome: Outcome
    user_id: int | None = None
    retry_after: int = 0  # seconds, when throttled
    factor: str = ""  # which second factor was used


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real argon2 hash, checked when the email is unknown so that timing does not reveal which
    addresses have accounts."""
    return hash_password(secrets.token_urlsafe(16))


def account_key(address: str) -> str:
    return f"account:{address}"


def network_key(ip: str) -> str:
    return f"net:{network_of(ip)}"


def _throttle(sessions: sessionmaker[Session], account: str, ip: str, now: datetime,
              policy: ThrottlePolicy, *, audit_as: str) -> SignInResult | None:
    """Count this attempt (committed at once); a THROTTLED result when over a limit, else None."""
    net = network_key(ip)
    with sessions() as session:
        decision = count_attempt(session, [(account, policy.account_limit), (net, policy.network_limit)],
                                 now, policy.window_seconds)
        if decision.tripped(account):
            audit(session, "sign-in", "sign_in_throttled", now, user=audit_as, network=network_of(ip),
                  limit=policy.account_limit, window_minutes=policy.window_seconds // 60)
        session.commit()
    if not decision.allowed:
        return SignInResult(Outcome.THROTTLED, retry_after=decision.retry_after)
    return None


def _succeeded(session: Session, account: str, ip: str) -> None:
    clear_attempts(session, account)
    refund_attempt(session, network_key(ip))


def check_password_step(sessions: sessionmaker[Session], address: str, password: str, ip: str, now: datetime,
                        policy: ThrottlePolicy) -> SignInResult:
    """The first step: `address` (normalised) and `password` from `ip`. OK means the password is
    right and the account enabled; the caller then asks for the second factor when the user has
    one, or signs them in (`record_sign_in`)."""
    throttled = _throttle(sessions, account_key(address), ip, now, policy, audit_as=address)
    if throttled is not None:
        return throttled
    with sessions() as session:
        user = session.scalar(select(User).where(User.email == address)) if address else None
        valid = verify_password(user.password_hash if user else _dummy_hash(), password)
        if user is None or not valid:
            return SignInResult(Outcome.WRONG)
        if user.disabled:
            return SignInResult(Outcome.DISABLED)
        _succeeded(session, account_key(address), ip)
        session.commit()
        return SignInResult(Outcome.OK, user.id)


def check_code_step(sessions: sessionmaker[Session], user_id: int, code: str, ip: str, now: datetime,
                    policy: ThrottlePolicy) -> SignInResult:
    """The second step, for a user who passed the password step: a TOTP code or a recovery code."""
    key = f"mfa:{user_id}"
    with sessions() as session:
        user = session.get(User, user_id)
        email = user.email if user else ""
    throttled = _throttle(sessions, key, ip, now, policy, audit_as=email)
    if throttled is not None:
        return throttled
    with sessions() as session:
        user = session.get(User, user_id)
        if user is None or user.disabled:
            return SignInResult(Outcome.WRONG)
        factor = check_second_factor(session, user, code, now)
        if factor is None:
            session.commit()  # nothing to keep but be explicit: a refused code changes nothing
            return SignInResult(Outcome.WRONG)
        _succeeded(session, key, ip)
        session.commit()
        return SignInResult(Outcome.OK, user.id, factor=factor)


def record_sign_in(session: Session, user: User, ip: str, now: datetime, factor: str = "") -> None:
    """Audit a completed sign-in and drop stale throttle counters (the caller starts the session and
    commits)."""
    prune_attempts(session, now)
    audit(session, user.email, "signed_in", now, ip=ip, **({"second_factor": factor} if factor else {}))
