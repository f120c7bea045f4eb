"""The rows a contact rule writes besides the contact itself: timeline events, audit entries and
consent records, as plain tuples.

A rule builds its rows here once; the single-contact services add them through the session
(`add_rows`) and the bulk importer inserts thousands at a time, so both write exactly the same rows.
The field order of each tuple is the column order the importer's bulk INSERT uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from patient_drip.models import AuditEntry, ConsentRecord, Event, EventKind


class EventRow(NamedTuple):
    """One `Event` (the contact's timeline)."""

    kind: str
    contact_id: int | None
    enrollment_id: int | None
    detail: dict[str, Any]
    occurred_at: datetime


class AuditRow(NamedTuple):
    """One `AuditEntry`: who changed what a contact receives."""

    actor: str
    action: str
    contact_id: int | None
    detail: dict[str, Any]
    created_at: datetime


class ConsentRow(NamedTuple):
    """One `ConsentRecord`: a grant or withdrawal with its proof."""

    contact_id: int | None
    channel: str
    action: str
    method: str
    wording_version: str | None
    wording_text: str | None
    ip_address: str | None
    user_agent: str | None
    actor: str
    note: str
    occurred_at: datetime


Row = EventRow | AuditRow | ConsentRow


def event_row(kind: EventKind, now: datetime, contact_id: int | None, enrollment_id: int | None = None,
              **detail: Any) -> EventRow:
    """A timeline event of `kind` at `now`; `detail` is stored as its JSON detail."""
    return EventRow(kind, contact_id, enrollment_id, detail, now)


def audit_row(actor: str, action: str, now: datetime, contact_id: int | None, **detail: Any) -> AuditRow:
    """An audit entry: `actor` did `action` at `now`."""
    return AuditRow(actor, action, contact_id, detail, now)


def add_rows(session: Session, rows: Iterable[Row]) -> None:
    """Add `rows` to the session in order (the unit of work inserts each table's rows in that order)."""
    for row in rows:
        if isinstance(row, EventRow):
            session.add(Event(kind=row.kind, contact_id=row.contact_id, enrollment_id=row.enrollment_id,
                              detail=row.detail, occurred_at=row.occurred_at))
        elif isinstance(row, AuditRow):
            session.add(AuditEntry(actor=row.actor, action=row.action, contact_id=row.contact_id,
                                   detail=row.detail, created_at=row.created_at))
        else:
            session.add(ConsentRecord(**row._asdict()))
