"""The staff list of every message (sent, in the outbox, skipped, failed...): filters by channel,
status, campaign step, send date and the person (the contacts search), newest first, paged by id
like the contacts list (never OFFSET).

Indexes: the id order is the primary key; a campaign step uses `ix_message_campaign_step_status`, a send
date `ix_message_sent_at`, a person `ix_message_contact_id` (through the contacts search ranges).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from patient_drip.models import Contact, Message, MessageStatus
from patient_drip.web.admin.contact_queries import search_condition

PAGE_SIZE = 50
STATUSES = tuple(status.value for status in MessageStatus)


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What staff asked for; empty fields do not filter."""

    channel: str = ""
    status: str = ""
    campaign: str = ""
    step: str = ""
    sent_from: datetime | None = None  # inclusive
    sent_until: datetime | None = None  # exclusive
    outbox: bool = False  # only what the outbox recorded (outbox mode: nothing left the machine)
    query: str = ""  # the person: name, email or phone prefix


@dataclass(frozen=True, slots=True)
class MessageRow:
    message: Message
    contact: Contact


@dataclass(frozen=True, slots=True)
class MessagePage:
    rows: list[MessageRow]
    older: int | None
    newer: int | None


def _conditions(wanted: MessageFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.channel in ("email", "sms"):
        conditions.append(Message.channel == wanted.channel)
    if wanted.status in STATUSES:
        conditions.append(Message.status == wanted.status)
    if wanted.campaign:
        conditions.append(Message.campaign_id == wanted.campaign)
    if wanted.step:
        conditions.append(Message.step_id == wanted.step)
    if wanted.sent_from is not None:
        conditions.append(Message.sent_at >= wanted.sent_from)
    if wanted.sent_until is not None:
        conditions.append(Message.sent_at < wanted.sent_until)
    if wanted.outbox:
        conditions.append(Message.provider == "outbox")
    person = search_condition(wanted.query)
    if person is not None:
        conditions.append(Message.contact_id.in_(select(Contact.id).where(person)))
    return conditions


def find_messages(session: Session, wanted: MessageFilter, *, before: int | None = None, after: int | None = None,
                  limit: int = PAGE_SIZE) -> MessagePage:
    """One page of messages (with their contacts), newest first; erased contacts' messages are not listed."""
    statement = (select(Message, Contact).join(Contact, Contact.id == Message.contact_id)
                 .where(Contact.erased_at.is_(None), *_conditions(wanted)))
    if after is not None:
        found = list(session.execute(statement.where(Message.id > after).order_by(Message.id.asc()).limit(limit + 1)))
        more = len(found) > limit
        rows = [MessageRow(m, c) for m, c in reversed(found[:limit])]
        return MessagePage(rows, older=rows[-1].message.id if rows else None,
                           newer=rows[0].message.id if rows and more else None)
    if before is not None:
        statement = statement.where(Message.id < before)
    found = list(session.execute(statement.order_by(Message.id.desc()).limit(limit + 1)))
    more = len(found) > limit
    rows = [MessageRow(m, c) for m, c in found[:limit]]
    return MessagePage(rows, older=rows[-1].message.id if rows and more else None,
                       newer=rows[0].message.id if rows and before is not None else None)
