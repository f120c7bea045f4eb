"""Staff tasks: work the system hands to the front desk, as one rule every entry point calls.

The system opens a task when something needs a person (`open_task`): a scheduler says someone missed
their consultation (`no_show`: call them), or told us of a booking by someone we could not match
(`unmatched_booking`: find them on the bookings page). Staff take a task on (`take_task`, so two
people do not call the same patient) and finish it (`finish_task`); a finished task keeps who
finished it and when. Each change is audited.

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
from patient_drip.models import Booking, Contact, StaffTask, TaskKind, User

TASK_LABELS: dict[str, str] = {
    TaskKind.NO_SHOW: "Missed the consultation: call them",
    TaskKind.UNMATCHED_BOOKING: "Booked, but not matched to a contact: find them",
}


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
              booking_id: int | None = None, actor: str = "system") -> StaffTask:
    """A new open task (flushed, so it has an id). The caller commits."""
    task = StaffTask(kind=str(kind), contact_id=contact_id, booking_id=booking_id, created_at=now)
    session.add(task)
    session.flush()
    add_rows(session, [audit_row(actor, "task_opened", now, contact_id, task=task.id, kind=str(kind))])
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


def finish_task(session: Session, task_id: int, actor: str, now: datetime) -> StaffTask:
    """Mark the task done by `actor`, now; a task already done is refused (`TaskError`), so two people
    finishing it at once leave one record of who did."""
    task = _open_task(session, task_id)
    task.done_at, task.done_by = now, actor
    add_rows(session, [audit_row(actor, "task_done", now, task.contact_id, task=task.id, kind=task.kind)])
    return task
