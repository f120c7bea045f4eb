"""Consent history export and erasure ("forget me") for a contact.

May import `models` and the other `contacts` rule modules.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.contacts.blocks import BlockReason, block_channel, suppress
from patient_drip.contacts.enrollment import end_enrollments
from patient_drip.models import audit
from patient_drip.models import (
    AuditEntry,
    PendingChange,
    Channel,
    ConsentRecord,
    Contact,
    Event,
    ExitReason,
    InboundMessage,
    Message,
)

CONSENT_FIELDS = ("occurred_at", "channel", "action", "method", "wording_version", "wording_text", "ip_address",
                  "user_agent", "actor", "note")


def consent_history(session: Session, contact: Contact) -> dict[str, Any]:
    """Everything needed to prove (or disprove) consent for this contact, oldest first."""
    records = session.scalars(
        select(ConsentRecord).where(ConsentRecord.contact_id == contact.id).order_by(ConsentRecord.occurred_at,
                                                                                     ConsentRecord.id)
    )
    return {
        "contact_id": contact.id,
        "email": contact.email,
        "phone": contact.phone,
        "current": {
            "email": {"consent": contact.email_consent, "blocked": contact.email_blocked},
            "sms": {"consent": contact.sms_consent, "blocked": contact.sms_blocked},
        },
        "records": [
            {field: (getattr(record, field).isoformat() if isinstance(getattr(record, field), datetime)
                     else getattr(record, field)) for field in CONSENT_FIELDS}
            for record in records
        ],
    }


def consent_history_json(history: dict[str, Any]) -> str:
    return json.dumps(history, indent=2, ensure_ascii=False)


def consent_history_csv(history: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(["contact_id", *CONSENT_FIELDS])
    for record in history["records"]:
        writer.writerow([history["contact_id"], *(record[field] for field in CONSENT_FIELDS)])
    return buffer.getvalue()


def forget(session: Session, suppression_key: str, contact: Contact, now: datetime, actor: str) -> None:
    """Remove the person's personal data; keep anonymous counts and a keyed hash of each address
    so they are never contacted again."""
    for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone)):
        if value:
            suppress(session, suppression_key, channel, value, "erased at the person's request", now)
    end_enrollments(session, contact.id, ExitReason.ERASED, now, actor)
    session.execute(update(Message).where(Message.contact_id == contact.id).values(
        to_address=None, subject=None, body_text=None, body_html=None, last_error=None))
    session.execute(update(InboundMessage).where(InboundMessage.contact_id == contact.id).values(
        from_number=None, body=None))
    session.execute(update(ConsentRecord).where(ConsentRecord.contact_id == contact.id).values(
        ip_address=None, user_agent=None, note=""))
    session.execute(update(Event).where(Event.contact_id == contact.id).values(detail={}))
    # What a request asked of a known contact (names, addresses, IP): nothing of it is kept.
    session.execute(delete(PendingChange).where(PendingChange.contact_id == contact.id))
    session.execute(update(AuditEntry).where(AuditEntry.contact_id == contact.id).values(detail={}))
    contact.first_name = ""
    contact.last_name = ""
    contact.email = None
    contact.phone = None
    contact.source = ""
    contact.email_consent = False
    contact.sms_consent = False
    for channel in (Channel.EMAIL, Channel.SMS):
        block_channel(session, contact, channel, BlockReason.ERASED, "", now, actor)
    contact.erased_at = now
    contact.updated_at = now
    audit(session, actor, "erased", now, contact_id=contact.id)
