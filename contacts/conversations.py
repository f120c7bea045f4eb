"""Conversations: each contact's text thread in the staff inbox — its state, who has it, its notes.

A thread is one `Conversation` row per contact (made on the first text or the first staff action);
what was said is read from the contact's own rows (`contacts.inbox`), so nothing is copied.

States (`ConversationState`):
- OPEN — someone at the clinic needs to act. A new text from the person that is left for staff
  (anything but a keyword the webhook answered by itself) reopens a thread in any state.
- WAITING — we answered; waiting on the patient. A staff reply that went out sets it.
- DONE — nothing left to do.

Moving a thread to WAITING or DONE marks the person's open texts handled (`mark_reply_handled`, the
same rule as the per-reply button), except possible-crisis texts: those are resolved only by DONE,
with the staff's choice to resume the sequences the crisis paused or keep them paused. A crisis
thread therefore stays pinned until someone resolves it.

Every change writes a timeline event and an audit row (who, what, when). Notes are timeline events
(`staff_note`): they show on the thread and on the contact's timeline, and erasure removes them.

May import `models`, `content.campaign`, `contacts.enrollment`, `contacts.records`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.contacts.enrollment import mark_reply_handled
from patient_drip.contacts.records import add_rows, audit_row, event_row
from patient_drip.models import Contact, Conversation, ConversationState, EventKind, InboundMessage, User

MAX_NOTE = 1000
# Who may work the inbox, and so be given a thread (marketing sees no patient texts).
INBOX_ROLES = ("admin", "staff", "clinician")
PATIENT = "patient:sms"

STATE_LABELS = {
    ConversationState.OPEN: "open",
    ConversationState.WAITING: "waiting on patient",
    ConversationState.DONE: "done",
}


class ConversationError(ValueError):
    """A change the rules refuse; the message says why, in words for the page."""


def thread_for(session: Session, contact_id: int, now: datetime) -> Conversation:
    """The contact's thread, made if it has none yet: open when one of their texts waits for staff,
    else done. Two requests making it at once both get the one row: the unique contact id decides,
    the loser reads the winner's."""
    found = session.scalar(select(Conversation).where(Conversation.contact_id == contact_id))
    if found is not None:
        return found
    waiting = session.scalar(select(InboundMessage.id).where(InboundMessage.contact_id == contact_id,
                                                             InboundMessage.handled_at.is_(None)).limit(1))
    thread = Conversation(contact_id=contact_id, state=ConversationState.OPEN if waiting else ConversationState.DONE,
                          state_at=now, state_by="", created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(thread)
    except IntegrityError:
        found = session.scalar(select(Conversation).where(Conversation.contact_id == contact_id))
        if found is None:
            raise
        return found
    return thread


def _set(session: Session, thread: Conversation, state: ConversationState, actor: str, now: datetime,
         **detail: object) -> bool:
    """Give `thread` its new state with its event and audit row; False (nothing written) if it had it."""
    if thread.state == state:
        return False
    previous = thread.state
    thread.state, thread.state_at, thread.state_by, thread.updated_at = state, now, actor, now
    add_rows(session, [
        event_row(EventKind.CONVERSATION_STATE, now, thread.contact_id, state=STATE_LABELS[state],
                  previous=STATE_LABELS[ConversationState(previous)], by=actor, **detail),
        audit_row(actor, EventKind.CONVERSATION_STATE, now, thread.contact_id, state=str(state),
                  previous=previous, **detail),
    ])
    return True


def inbound_arrived(session: Session, inbound: InboundMessage, now: datetime) -> None:
    """The person texted us (the webhook has classified and, for keywords, answered it): remember
    when, and reopen their thread if the text is left for staff. No thread for an unknown number."""
    if inbound.contact_id is None:
        return
    thread = thread_for(session, inbound.contact_id, now)
    thread.last_inbound_at = inbound.received_at
    thread.updated_at = now
    if inbound.handled_at is None:
        _set(session, thread, ConversationState.OPEN, PATIENT, now, reason="a new text from the patient")


def add_note(session: Session, contact_id: int, text: str, actor: str, now: datetime) -> None:
    """Keep a note on the contact's thread ("called back, safe"): shown on the thread and the
    contact's timeline, audited. Raises `ConversationError` for an empty or over-long note."""
    note = " ".join(text.split())
    if not note:
        raise ConversationError("Write the note first.")
    if len(note) > MAX_NOTE:
        raise ConversationError(f"A note can be at most {MAX_NOTE} characters (this one has {len(note)}).")
    thread = thread_for(session, contact_id, now)
    thread.updated_at = now
    add_rows(session, [event_row(EventKind.STAFF_NOTE, now, contact_id, note=note, by=actor),
                       audit_row(actor, EventKind.STAFF_NOTE, now, contact_id, note=note)])


def _open_replies(session: Session, contact_id: int) -> list[InboundMessage]:
    return list(session.scalars(select(InboundMessage).where(
        InboundMessage.contact_id == contact_id, InboundMessage.handled_at.is_(None)).order_by(InboundMessage.id)))


def set_state(session: Session, campaigns: Mapping[str, Campaign], contact_id: int, state: str, actor: str,
              now: datetime, *, resume: bool = False, note: str = "") -> int | None:
    """Move the contact's thread to `state` (see the module docstring), with an optional note.

    Returns what resolving its crisis texts returned (`mark_reply_handled`: None when a resume was
    held back because another crisis text is still open; else how many sequences resumed), 0 when
    there was no crisis to resolve. Raises `ConversationError` for an unknown state or contact."""
    try:
        target = ConversationState(state)
    except ValueError:
        raise ConversationError(f"{state!r} is not a state of a conversation (open, waiting, done).") from None
    if session.get(Contact, contact_id) is None:
        raise ConversationError("This contact does not exist.")
    if note.strip():
        add_note(session, contact_id, note, actor, now)
    thread = thread_for(session, contact_id, now)
    crisis_outcomes: list[int | None] = []
    if target != ConversationState.OPEN:
        for reply in _open_replies(session, contact_id):
            if reply.crisis and target != ConversationState.DONE:
                continue  # a possible crisis is resolved only by "done", with the choice about sequences
            outcome = mark_reply_handled(session, campaigns, reply, resume, "", now, actor)
            if reply.crisis:
                crisis_outcomes.append(outcome)
    _set(session, thread, target, actor, now)
    # Oldest first: only the last crisis text resolved finds no other open, so its outcome is the final one.
    return crisis_outcomes[-1] if crisis_outcomes else 0


def replied(session: Session, contact_id: int, actor: str, now: datetime) -> None:
    """A staff reply went out: the person's open texts (not a possible crisis) are answered, and
    the thread waits on the patient — unless a crisis text is still open (it stays open, pinned)."""
    thread = thread_for(session, contact_id, now)
    thread.updated_at = now
    crisis_open = False
    for reply in _open_replies(session, contact_id):
        if reply.crisis:
            crisis_open = True
            continue
        reply.handled_at, reply.handled_by = now, actor
    if not crisis_open:
        _set(session, thread, ConversationState.WAITING, actor, now, reason="replied by text")


def assign(session: Session, contact_id: int, user_id: int | None, actor: str, now: datetime) -> str:
    """Give the thread to staff user `user_id` (None: to nobody); returns the assignee's label ("" for
    nobody). Raises `ConversationError` when the user does not exist, is disabled, or has a role that
    does not work the inbox."""
    if session.get(Contact, contact_id) is None:
        raise ConversationError("This contact does not exist.")
    label = ""
    if user_id is not None:
        user = session.get(User, user_id)
        if user is None or user.disabled:
            raise ConversationError("That user does not exist or is disabled.")
        if user.role not in INBOX_ROLES:
            raise ConversationError(f"{user.name or user.email} ({user.role}) does not work the inbox.")
        label = user.name or user.email
    thread = thread_for(session, contact_id, now)
    if thread.assigned_to == user_id:
        return label
    thread.assigned_to, thread.updated_at = user_id, now
    add_rows(session, [
        event_row(EventKind.CONVERSATION_ASSIGNED, now, contact_id, to=label or "nobody", by=actor),
        audit_row(actor, EventKind.CONVERSATION_ASSIGNED, now, contact_id, user_id=user_id),
    ])
    return label


def inbox_users(session: Session) -> list[User]:
    """The users a thread may be given to, by name."""
    return list(session.scalars(select(User).where(User.disabled.is_(False), User.role.in_(INBOX_ROLES))
                                .order_by(User.name, User.email)))
