"""Staff sign-in sessions, as far as the rules need them: a per-user generation number that every
session cookie carries, so that one write ends all of a user's sessions in every process.

The cookie itself (signing, reading, CSRF) is the web's job (`web/admin/auth.py`); this module only
says which generation is current and moves it on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from patient_drip import db


def _generation_key(user_id: int) -> str:
    return f"admin_session_gen:{user_id}"


def session_generation(session: Session, user_id: int) -> int:
    """The generation a valid session cookie of this user must carry."""
    value = db.get_kv(session, _generation_key(user_id))
    return int(value) if value and value.isdigit() else 0


def end_all_sessions(session: Session, user_id: int, now: datetime) -> None:
    """Every existing session cookie of this user stops working (all processes)."""
    db.set_kv(session, _generation_key(user_id), str(session_generation(session, user_id) + 1), now)
    session.flush()
