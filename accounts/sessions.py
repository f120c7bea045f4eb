"""Staff sign-in sessions, as far as the rules need them: a row per signed-in browser
(`StaffSession`), whose idle timeout and absolute lifetime are decided here, on the server; and a
per-user generation number that every session cookie carries, so that one write ends all of a
user's sessions in every process.

The cookie itself (signing, reading, CSRF) is the web's job (`web/admin/auth.py`); it carries only
the row's random id, the user id and the generation.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from patient_drip import db
from patient_drip.models import StaffSession
from patient_drip.settings import Settings

# Last use is written at most this often (not on every page view). A session may therefore end up
# to this much *earlier* than the idle timeout says, never later.
TOUCH_RESOLUTION = timedelta(minutes=1)
# Rows older than the longest lifetime a setting allows are of no use: dropped at the user's next sign-in.
KEEP_ENDED = timedelta(hours=168)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: `idle` without a request, `lifetime` since sign-in at most."""

    idle: timedelta
    lifetime: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(timedelta(minutes=settings.session_idle_minutes), timedelta(hours=settings.session_lifetime_hours))


def _generation_key(user_id: int) -> str:
    return f"admin_session_gen:{user_id}"


def session_generation(session: Session, user_id: int) -> int:
    """The generation a valid session cookie of this user must carry."""
    value = db.get_kv(session, _generation_key(user_id))
    return int(value) if value and value.isdigit() else 0


def start_session(session: Session, user_id: int, now: datetime) -> str:
    """A new session for `user_id`; returns its random id (the cookie carries it). The user's sessions
    that can no longer be alive under any setting are removed. The caller commits."""
    session.execute(delete(StaffSession).where(StaffSession.user_id == user_id,
                                               StaffSession.created_at < now - KEEP_ENDED))
    session_id = secrets.token_urlsafe(32)
    session.add(StaffSession(id=session_id, user_id=user_id, created_at=now, last_seen_at=now))
    session.flush()
    return session_id


def live_session(session: Session, session_id: str, user_id: int, now: datetime,
                 policy: SessionPolicy) -> StaffSession | None:
    """The session row when it belongs to `user_id` and has neither been idle longer than
    `policy.idle` nor lived longer than `policy.lifetime`; None otherwise (also when it was ended)."""
    row = session.get(StaffSession, session_id) if session_id else None
    if row is None or row.user_id != user_id:
        return None
    if now - row.last_seen_at >= policy.idle or now - row.created_at >= policy.lifetime:
        return None
    return row


def needs_touch(row: StaffSession, now: datetime) -> bool:
    """Whether this request should record the session's use (at most once per TOUCH_RESOLUTION)."""
    return now - row.last_seen_at >= TOUCH_RESOLUTION


def touch_session(session: Session, session_id: str, now: datetime) -> None:
    """Record that the session was used at `now` (never moves backwards). The caller commits."""
    session.execute(update(StaffSession).where(StaffSession.id == session_id, StaffSession.last_seen_at < now)
                    .values(last_seen_at=now))


def end_all_sessions(session: Session, user_id: int, now: datetime) -> None:
    """Every existing session of this user stops working (all processes): their rows go, and the
    generation moves on so that a cookie from before this change is refused too."""
    db.set_kv(session, _generation_key(user_id), str(session_generation(session, user_id) + 1), now)
    session.execute(delete(StaffSession).where(StaffSession.user_id == user_id))
    session.flush()
