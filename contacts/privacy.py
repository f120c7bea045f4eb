"""Consent history export and erasure ("forget me") for a contact.

May import `models` and the other `contacts` rule modules.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Text, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.contacts.blocks import BlockReason, block_channel, suppress
from patient_drip.contacts.enrollment import end_enrollments
from patient_drip.models import audit
from patient_drip.models import (
    AuditEntry,
    Booking,
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
    """Remove the person's personal data, inside the caller's transaction; keep anonymous counts
    and a keyed hash of each address so they are never contacted again.

    Every copy the person left goes: the contact's fields; the addresses and rendered bodies of
    the messages sent to them; their SMS replies, including ones received from their number before
    the contact existed (matched by number); the details of timeline events and audit rows about
    them, or that name their address anywhere; the IP address, user agent and note of their
    consent records. Kept, as proof of consent (TCPA/CAN-SPAM records): each consent record's
    date, channel, action, method, wording version and text, tied to the contact's id only.
    The bytes may linger in the database's free pages and (SQLite) its WAL until
    `reclaim_erased_space` runs after the commit; `forget_person` does both."""
    addresses = [value for value in (contact.email, contact.phone) if value]
    for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone)):
        if value:
            suppress(session, suppression_key, channel, value, "erased at the person's request", now)
    end_enrollments(session, contact.id, ExitReason.ERASED, now, actor)
    scrubbed_message = {"to_address": None, "subject": None, "body_text": None, "body_html": None, "last_error": None}
    session.execute(update(Message).where(Message.contact_id == contact.id).values(scrubbed_message))
    if addresses:
        session.execute(update(Message).where(Message.to_address.in_(addresses)).values(scrubbed_message))
    reply_owner = InboundMessage.contact_id == contact.id
    if contact.phone:
        # A text from their number before they were a contact (or while the number was unknown)
        # has no contact id: it is theirs all the same.
        reply_owner = or_(reply_owner, InboundMessage.from_number == contact.phone)
    session.execute(update(InboundMessage).where(reply_owner).values(from_number=None, body=None))
    session.execute(update(ConsentRecord).where(ConsentRecord.contact_id == contact.id).values(
        ip_address=None, user_agent=None, note=""))
    for table, column in ((Event, Event.contact_id), (AuditEntry, AuditEntry.contact_id)):
        mentions = [cast(table.detail, Text).contains(form, autoescape=True)
                    for value in addresses for form in _json_forms(value)]
        session.execute(update(table).where(or_(column == contact.id, *mentions)).values(detail={}))
    # What the scheduler told us about them: matched bookings, and unmatched ones with their address.
    mine = [Booking.contact_id == contact.id]
    if contact.email:
        mine.append(func.lower(Booking.email) == contact.email.lower())
    if contact.phone:
        mine.append(Booking.phone == contact.phone)
    session.execute(update(Booking).where(or_(*mine)).values(email=None, phone=None, name="", contact_id=contact.id))
    # What a request asked of a known contact (names, addresses, IP): nothing of it is kept.
    session.execute(delete(PendingChange).where(PendingChange.contact_id == contact.id))
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


def _json_forms(value: str) -> set[str]:
    """How `value` can appear inside stored JSON text: as is, and JSON-escaped (non-ASCII as \\u…)."""
    return {value, json.dumps(value)[1:-1]}


def forget_person(sessions: sessionmaker[Session], engine: Engine, suppression_key: str, contact_id: int,
                  now: datetime, actor: str) -> str:
    """Erase contact `contact_id` (`forget`, committed), then make the erased bytes unrecoverable
    from the database files (`reclaim_erased_space`). Returns what the second step did, for the
    operator. The one erasure every entry point calls."""
    with sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        if contact is None:
            raise LookupError(f"no contact {contact_id}")
        forget(session, suppression_key, contact, now, actor)
    return reclaim_erased_space(engine)


def reclaim_erased_space(engine: Engine) -> str:
    """Rewrite the database so that erased values are gone from its files, not merely unlinked.

    SQLite: `VACUUM` rebuilds the file without its free pages (where the old rows' bytes stay),
    then `PRAGMA wal_checkpoint(TRUNCATE)` copies the WAL into the file and truncates the WAL to
    zero bytes (the old rows were in its frames too). Raises `RuntimeError` when another
    connection keeps the checkpoint from completing (busy timeout passed), so nobody is told the
    bytes are gone when they are not. PostgreSQL: a plain `VACUUM` of the tables `forget`
    touches (no exclusive lock) makes the dead row versions' space reusable; only `VACUUM FULL`
    (which locks the tables) rewrites the files, and PostgreSQL's WAL segments and any base backup
    keep the old rows until they are recycled (README, "Keys, erasure and the database files")."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            # Outside any transaction: VACUUM cannot run inside one (our connections issue BEGIN
            # themselves, so the driver-level connection is used as is).
            raw = connection.connection.driver_connection
            raw.execute("VACUUM")
            busy, _log_frames, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError("the database is in use by another process: stop it, then run "
                               "`sqlite3 <database> 'PRAGMA wal_checkpoint(TRUNCATE)'` to finish the erasure")
        return "database vacuumed and its WAL truncated"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("contact", "message", "inbound_message", "event", "audit_log", "consent_record"):
            connection.exec_driver_sql(f"VACUUM {table}")
    return "tables vacuumed; run VACUUM FULL in a quiet hour to rewrite their files"
