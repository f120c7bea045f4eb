"""Staff tasks: work the system hands to the front desk, as one rule every entry point calls.

The system opens a task when something needs a person (`open_task`):

- `new_request` / `phone_call` — a new person asked for a consultation on the form (and asked to be
  called): contact them. Closed by the system when they book;
- `no_show` — a scheduler says someone missed their consultation: call them;
- `unmatched_booking` — a scheduler told us of a booking by someone we could not match: find them;
- `review` — a send nobody can tell the fate of after a crash: decide on the review page. Closed by
  the system when staff settle it there (`close_tasks`);
- `failed_send` — a message failed for good (a bad number or address): check the contact;
- `reply_paused` — a question by text paused the person's journey (`pause_on_reply`): answer it in
  the inbox, then resume or end the sequence on the contact page. Closed by the system when staff do
  either (`contacts.journey_events.close_reply_tasks`).

Staff take a task on (`take_task`, so two people do not call the same patient) and finish it
(`finish_task`); a finished task keeps who finished it and when. What staff do with a task is audited. Replies
waiting (questions, crisis flags) are not copied into tasks: the To do page shows them from the
inbox itself, where they are handled.

A task holds no patient data of its own: it points at the contact (or the booking row, which
erasure empties), so `drip forget` needs nothing here.

May import `models` and `contacts.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.contacts.records import add_rows, audit_row
from patient_drip.models import Booking, Contact, InboundMessage, StaffTask, TaskKind, User

TASK_LABELS: dict[str, str] = {
    TaskKind.NEW_REQUEST: "New consultation request: contact them",
    TaskKind.PHONE_CALL: "New request, asked for a phone call: call them",
    TaskKind.NO_SHOW: "Missed the consultation: call them",
    TaskKind.UNMATCHED_BOOKING: "Booked, but not matched to a contact: find them",
    TaskKind.REVIEW: "A message may or may not have arrived: decide",
    TaskKind.FAILED_SEND: "A message could not be delivered: check the number or address",
    TaskKind.REPLY_PAUSED: "Asked a question, sequence paused: answer, then resume or end it",
}
# A request to contact someone is over when they book.
CLOSED_BY_BOOKING = (TaskKind.NEW_REQUEST, TaskKind.PHONE_CALL)


class TaskError(ValueError):
    """A task change that cannot be made; the message is for staff."""


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task with what a list needs: the contact (if any), the booking (if any), its owner's name."""

    task: StaffTask
    contact: Contact | None
    booking: Booking | None
    owner: str  # the assigned user's name or email, "" when nobody took it

    @property
    def label(self) -> str:
        return TASK_LABELS.get(self.task.kind, self.task.kind.replace("_", " ").capitalize())


def open_task(session: Session, kind: TaskKind, now: datetime, *, contact_id: int | None = None,
              booking_id: int | None = None, message_id: int | None = None) -> StaffTask:
    """A new open task (flushed, so it has an id); for a message, the one already open for it if any
    (a send reviewed, sent again and in doubt again is one thing to do). The caller commits."""
    if message_id is not None:
        existing = session.scalar(select(StaffTask).where(StaffTask.message_id == message_id,
                                                          StaffTask.kind == str(kind), StaffTask.done_at.is_(None)))
        if existing is not None:
            return existing
    task = StaffTask(kind=str(kind), contact_id=contact_id, booking_id=booking_id, message_id=message_id,
                     created_at=now)
    session.add(task)
    session.flush()  # not audited: the system opens tasks, and the row itself says when; what staff do is
    return task


def _rows(session: Session, done: bool, limit: int) -> list[TaskRow]:
    query = (select(StaffTask, Contact, Booking, User)
             .outerjoin(Contact, Contact.id == StaffTask.contact_id)
             .outerjoin(Booking, Booking.id == StaffTask.booking_id)
             .outerjoin(User, User.id == StaffTask.assigned_to))
    if done:
        query = query.where(StaffTask.done_at.is_not(None)).order_by(StaffTask.done_at.desc(), StaffTask.id.desc())
    else:  # oldest first: the patient who has waited longest comes first
        query = query.where(StaffTask.done_at.is_(None)).order_by(StaffTask.created_at, StaffTask.id)
    return [TaskRow(task, contact, booking, (user.name or user.email) if user else "")
            for task, contact, booking, user in session.execute(query.limit(limit))]


def open_tasks(session: Session, limit: int = 200) -> list[TaskRow]:
    return _rows(session, done=False, limit=limit)


def done_tasks(session: Session, limit: int = 50) -> list[TaskRow]:
    """The most recently finished, newest first."""
    return _rows(session, done=True, limit=limit)


def count_open(session: Session) -> int:
    return int(session.scalar(select(func.count(StaffTask.id)).where(StaffTask.done_at.is_(None))) or 0)


def _open_task(session: Session, task_id: int) -> StaffTask:
    task = session.get(StaffTask, task_id, with_for_update=True)
    if task is None:
        raise TaskError("That task does not exist (any more).")
    if task.done_at is not None:
        raise TaskError(f"That task was already done by {task.done_by}.")
    return task


def take_task(session: Session, task_id: int, user_id: int, actor: str, now: datetime) -> StaffTask:
    """`user_id` takes the task on (taking it from whoever had it: the audit keeps both)."""
    task = _open_task(session, task_id)
    previous = task.assigned_to
    task.assigned_to = user_id
    add_rows(session, [audit_row(actor, "task_taken", now, task.contact_id, task=task.id, kind=task.kind,
                                 **({"from_user": previous} if previous and previous != user_id else {}))])
    return task


def close_tasks(session: Session, kinds: tuple[TaskKind, ...], now: datetime, actor: str, *,
                contact_id: int | None = None, message_id: int | None = None) -> int:
    """The system closes the open tasks of `kinds` for a contact or a message, because what they asked
    for happened elsewhere (the person booked; staff settled the send on the review page). `actor` is
    who made it happen. Returns how many."""
    if contact_id is None and message_id is None:
        return 0
    query = select(StaffTask).where(StaffTask.kind.in_([str(k) for k in kinds]), StaffTask.done_at.is_(None))
    query = query.where(StaffTask.contact_id == contact_id) if contact_id is not None else \
        query.where(StaffTask.message_id == message_id)
    tasks = list(session.scalars(query))
    for task in tasks:  # not audited again: the act that closes them (a booking, a settled send) is
        task.done_at, task.done_by = now, actor
    return len(tasks)


def finish_task(session: Session, task_id: int, actor: str, now: datetime) -> StaffTask:
    """Mark the task done by `actor`, now; a task already done is refused (`TaskError`), so two people
    finishing it at once leave one record of who did."""
    task = _open_task(session, task_id)
    task.done_at, task.done_by = now, actor
    add_rows(session, [audit_row(actor, "task_done", now, task.contact_id, task=task.id, kind=task.kind)])
    return task


def open_reply_task(session: Session, contact_id: int) -> StaffTask | None:
    """The contact's open `reply_paused` task, if any."""
    return session.scalar(select(StaffTask).where(StaffTask.contact_id == contact_id,
                                                  StaffTask.kind == str(TaskKind.REPLY_PAUSED),
                                                  StaffTask.done_at.is_(None)).limit(1))


def close_reply_tasks(session: Session, contact_id: int, actor: str, now: datetime, how: str) -> int:
    """Staff resumed or ended the contact's journey: its open reply task is done (`how` says which)."""
    closed = 0
    while (task := open_reply_task(session, contact_id)) is not None:
        task.done_at, task.done_by = now, actor
        add_rows(session, [audit_row(actor, "task_done", now, contact_id, task=task.id, kind=task.kind, how=how)])
        session.flush()
        closed += 1
    return closed


def waiting_replies(session: Session, limit: int = 50) -> list[tuple[InboundMessage, Contact | None]]:
    """Replies nobody has dealt with yet, crisis flags first, then oldest first: shown on the To do
    page from the inbox itself (they are handled there, which keeps who and when)."""
    query = (select(InboundMessage, Contact).outerjoin(Contact, Contact.id == InboundMessage.contact_id)
             .where(InboundMessage.handled_at.is_(None))
             .order_by(InboundMessage.crisis.desc(), InboundMessage.received_at, InboundMessage.id).limit(limit))
    return [(reply, contact) for reply, contact in session.execute(query)]
