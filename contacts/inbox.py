"""What the staff inbox reads: the list of threads (possible crises pinned first), texts from numbers
that are no contact, one thread in order (their texts, our texts — sequence texts too — notes and
what happened), and the clinic's crisis procedure.

Reads only; every change is in `contacts.conversations` (and `dispatch.staff_reply`).
May import `models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import exists, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.expression import Exists

from patient_drip.models import (
    Contact,
    Conversation,
    ConversationState,
    Event,
    EventKind,
    InboundMessage,
    Message,
    MessageStatus,
    StaffReply,
    User,
)

PROCEDURE_FILE = "crisis_procedure.txt"
SHOWS = ("open", "waiting", "done", "mine")
# Events shown inside a thread, with the words for them.
THREAD_EVENTS = {
    EventKind.STAFF_NOTE: "Note",
    EventKind.CONVERSATION_STATE: "Thread",
    EventKind.CONVERSATION_ASSIGNED: "Assigned",
    EventKind.QUESTION_ACKNOWLEDGED: "Automatic answer sent: we will reply within one business day",
    EventKind.CRISIS_FLAGGED: "Possible crisis: the 988 Lifeline and the clinic's number were texted automatically",
    EventKind.CRISIS_RESOLVED: "Crisis resolved",
}
_NOT_SENT = (MessageStatus.SKIPPED, MessageStatus.HELD)


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """One thread in the inbox list."""

    contact_id: int
    name: str
    phone: str | None
    timezone: str
    state: str
    assigned: str  # the assignee's name, "" for nobody
    crisis: bool  # a possible-crisis text nobody has resolved
    waiting: int  # texts left for staff
    last_inbound_at: datetime | None
    last_text: str


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a thread: a text in, a text out, a note, or something that happened."""

    at: datetime
    kind: str  # "in", "out", "note", "event"
    text: str
    order: int
    status: str = ""  # out: the send record's status; in: the classification
    by: str = ""  # out: the staff member (empty: a sequence text); note/event: who
    crisis: bool = False
    handled: bool = True
    label: str = ""  # out: "Sequence text (step)" or "Reply"; event: its words


def _crisis_of(contact_id: InstrumentedAttribute[int]) -> Exists:
    """EXISTS: the contact has a possible-crisis text nobody has resolved."""
    return exists().where(InboundMessage.contact_id == contact_id, InboundMessage.crisis.is_(True),
                          InboundMessage.handled_at.is_(None))


def list_threads(session: Session, show: str, user_id: int, limit: int = 50) -> list[ThreadRow]:
    """Threads for the tab `show`: "open" (every open thread, and every contact with a text left for
    staff, crises first, then who has waited longest), "waiting", "done" (latest first), "mine"
    (open or waiting threads given to `user_id`, crises first).

    "open" starts from two indexed sets — texts nobody handled (`ix_inbound_open`) and open threads
    (`ix_conversation_state_updated`) — so a text that reached us without a thread (one stored
    before threads existed) is never hidden."""
    crisis = _crisis_of(Contact.id).label("crisis")
    waiting = (select(func.count()).where(InboundMessage.contact_id == Contact.id, InboundMessage.handled_at.is_(None))
               .scalar_subquery().label("waiting"))
    last_in = (select(func.max(InboundMessage.received_at)).where(InboundMessage.contact_id == Contact.id)
               .scalar_subquery().label("last_in"))
    # The newest text still waiting for staff, else the newest text.
    last_text = (select(InboundMessage.body).where(InboundMessage.contact_id == Contact.id)
                 .order_by(InboundMessage.handled_at.is_(None).desc(), InboundMessage.id.desc()).limit(1)
                 .scalar_subquery().label("last_text"))
    query = (select(Contact, Conversation, User.name, User.email, crisis, waiting, last_in, last_text)
             .outerjoin(Conversation, Conversation.contact_id == Contact.id)
             .outerjoin(User, User.id == Conversation.assigned_to))
    if show in ("waiting", "done"):
        state = ConversationState.WAITING if show == "waiting" else ConversationState.DONE
        query = query.where(Conversation.state == state).order_by(Conversation.updated_at.desc(), Conversation.id)
    else:
        if show == "mine":
            query = query.where(Conversation.assigned_to == user_id, Conversation.state != ConversationState.DONE)
        else:
            wanted = select(InboundMessage.contact_id).where(InboundMessage.handled_at.is_(None),
                                                             InboundMessage.contact_id.is_not(None)).union(
                select(Conversation.contact_id).where(Conversation.state == ConversationState.OPEN))
            query = query.where(Contact.id.in_(wanted))
        query = query.order_by(crisis.desc(), last_in.asc().nulls_last(), Contact.id)
    rows = []
    for contact, thread, user_name, user_email, is_crisis, open_count, last, text in session.execute(
            query.limit(limit)):
        rows.append(ThreadRow(contact.id, contact.display_name, contact.phone, contact.timezone,
                              thread.state if thread is not None else ConversationState.OPEN,
                              user_name or user_email or "", bool(is_crisis), int(open_count or 0), last, text or ""))
    return rows


def unknown_number_texts(session: Session, limit: int = 50) -> list[InboundMessage]:
    """Open texts from numbers that are no contact (no thread: nobody to reply to), crises first."""
    return list(session.scalars(select(InboundMessage).where(
        InboundMessage.contact_id.is_(None), InboundMessage.handled_at.is_(None))
        .order_by(InboundMessage.crisis.desc(), InboundMessage.received_at, InboundMessage.id).limit(limit)))


def tab_counts(session: Session, user_id: int) -> dict[str, int]:
    """How many threads each tab holds, and how many crises are open."""
    counts = {state: int(n) for state, n in session.execute(
        select(Conversation.state, func.count()).group_by(Conversation.state))}
    mine = session.scalar(select(func.count()).select_from(Conversation).where(
        Conversation.assigned_to == user_id, Conversation.state != ConversationState.DONE)) or 0
    crises = session.scalar(select(func.count(func.distinct(InboundMessage.contact_id))).where(
        InboundMessage.crisis.is_(True), InboundMessage.handled_at.is_(None))) or 0
    wanted = select(InboundMessage.contact_id).where(InboundMessage.handled_at.is_(None),
                                                     InboundMessage.contact_id.is_not(None)).union(
        select(Conversation.contact_id).where(Conversation.state == ConversationState.OPEN)).subquery()
    open_count = session.scalar(select(func.count()).select_from(wanted)) or 0
    return {"open": int(open_count), "waiting": counts.get(ConversationState.WAITING, 0),
            "done": counts.get(ConversationState.DONE, 0), "mine": int(mine), "crisis": int(crises)}


def thread_of(session: Session, contact_id: int) -> Conversation | None:
    return session.scalar(select(Conversation).where(Conversation.contact_id == contact_id))


def thread_entries(session: Session, contact_id: int, limit: int = 200) -> list[Entry]:
    """The latest `limit` texts in and out (sequence texts too; skipped or held ones never went),
    notes and thread events of the contact, oldest first."""
    entries: list[Entry] = []
    for reply in session.scalars(select(InboundMessage).where(InboundMessage.contact_id == contact_id)
                                 .order_by(InboundMessage.id.desc()).limit(limit)):
        entries.append(Entry(reply.received_at, "in", reply.body or "", reply.id, status=reply.classification,
                             by=reply.handled_by or "", crisis=reply.crisis, handled=reply.handled_at is not None))
    sent = session.execute(select(Message, StaffReply.sent_by).outerjoin(StaffReply, StaffReply.message_id == Message.id)
                           .where(Message.contact_id == contact_id, Message.channel == "sms",
                                  Message.status.not_in([str(s) for s in _NOT_SENT]))
                           .order_by(Message.id.desc()).limit(limit))
    for message, sent_by in sent:
        label = "Reply" if sent_by else f"Sequence text ({message.step_id})"
        entries.append(Entry(message.sent_at or message.created_at, "out", message.body_text or "", message.id,
                             status=message.status, by=sent_by or "", label=label))
    for event in session.scalars(select(Event).where(Event.contact_id == contact_id,
                                                     Event.kind.in_([str(k) for k in THREAD_EVENTS]))
                                 .order_by(Event.id.desc()).limit(limit)):
        detail = dict(event.detail or {})
        words = THREAD_EVENTS[EventKind(event.kind)]
        if event.kind == EventKind.STAFF_NOTE:
            entries.append(Entry(event.occurred_at, "note", str(detail.get("note", "")), event.id,
                                 by=str(detail.get("by", "")), label=words))
            continue
        if event.kind == EventKind.CONVERSATION_STATE:
            words = f"Thread marked {detail.get('state', '')}"
        elif event.kind == EventKind.CONVERSATION_ASSIGNED:
            words = f"Thread given to {detail.get('to', 'nobody')}"
        elif event.kind == EventKind.CRISIS_RESOLVED:
            words = f"Crisis resolved: {detail.get('outcome', '')}"
        entries.append(Entry(event.occurred_at, "event", "", event.id, by=str(detail.get("by", "")), label=words))
    # At the same instant: their text, then what we answered automatically, then our texts, then the rest.
    automatic = {THREAD_EVENTS[EventKind.CRISIS_FLAGGED], THREAD_EVENTS[EventKind.QUESTION_ACKNOWLEDGED]}
    rank = {"in": 0, "out": 2, "event": 3, "note": 4}
    entries.sort(key=lambda e: (e.at, 1 if e.label in automatic else rank[e.kind], e.order))
    return entries[-limit:]


def latest_inbound_id(session: Session) -> int:
    """The newest text's id (0 when none): the inbox's "anything new?" marker."""
    return int(session.scalar(select(func.max(InboundMessage.id))) or 0)


@lru_cache(maxsize=4)
def crisis_procedure(policy_dir: Path) -> tuple[str, ...]:
    """The clinic's crisis procedure, one step per line, from `policy_dir/crisis_procedure.txt`
    (lines starting with # are comments). The clinic edits that file; the inbox shows it on every
    possible-crisis thread."""
    path = policy_dir / PROCEDURE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: the crisis procedure file is missing") from None
    steps = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not steps:
        raise ValueError(f"{path}: the crisis procedure is empty")
    return steps

