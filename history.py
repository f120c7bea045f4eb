"""The two append-only records: the contact timeline (`Event`) and the audit log (`AuditEntry`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models import AuditEntry, Event


def add_event(
    session: Session,
    kind: str,
    now: datetime,
    *,
    contact_id: int | None,
    enrollment_id: int | None = None,
    message_id: int | None = None,
    **detail: Any,
) -> None:
    session.add(
        Event(
            kind=kind,
            contact_id=contact_id,
            enrollment_id=enrollment_id,
            message_id=message_id,
            detail=detail,
            occurred_at=now,
        )
    )


def audit(session: Session, actor: str, action: str, now: datetime, *, contact_id: int | None = None, **detail: Any) -> None:
    """Record an action that changes what a contact receives: who, what, when."""
    session.add(AuditEntry(actor=actor, action=action, contact_id=contact_id, detail=detail, created_at=now))
