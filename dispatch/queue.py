"""The dispatch queue's storage: every SQL statement the dispatcher runs, as named calls.

The pipeline (`pipeline.py`), the step state machine (`step.py`) and the outcome policy
(`outcome.py`) hold no SQL; they call these. Each statement says which index it relies on: the
queue must stay cheap at a million enrollments, so none of them may scan a table.

Also here: the waits that put an enrollment back in the queue (`next_due_at`), read at call time
as `queue.LEASE` etc. so that a test worker can shorten them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, text, update
from sqlalchemy.orm import Session, defer

from patient_drip import db
from patient_drip.models import (
    SENT_LIKE,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    Message,
    MessageStatus,
)
from patient_drip.runtime import Runtime

LEASE = timedelta(minutes=5)  # a claim older than this belongs to a dead worker
PAUSE_RECHECK = timedelta(minutes=1)  # a paused channel's enrollments look again this often
RENDER_RETRY = timedelta(minutes=10)  # a template that failed to render is tried again after this
RECONCILE_WAIT = timedelta(minutes=2)  # how often an enrollment waiting on an unknown send looks again

MESSAGE_COLUMNS = ("id", "enrollment_id", "contact_id", "campaign_id", "step_id", "channel", "status", "to_address",
                   "subject", "body_text", "body_html", "template_name", "template_version", "provider", "attempts",
                   "created_at", "attempted_at", "updated_at", "worker_id", "entry", "variant", "language")
EVENT_COLUMNS = ("kind", "contact_id", "enrollment_id", "message_id", "occurred_at", "detail")
# A message still in one of these when its provider call returns becomes `sent`; any other status
# means the provider's receipt beat us to it (it only moves forward).
_BEFORE_SENT = (MessageStatus.SENDING, MessageStatus.UNKNOWN)


# -- statements the dispatcher runs for every send, built once ---------------------------------------
#
# They run for every hand-over and every recorded batch: building the expression each time, and
# passing a Core statement through the ORM session's execute, cost more CPU than the database does
# with it. Built once here (an expanding IN for the id lists), run on the session's connection,
# inside its transaction; SQLAlchemy caches their compiled form.

_MESSAGE = Message.__table__
_ENROLLMENT = Enrollment.__table__

# Primary key; only rows still before `sent` (`_BEFORE_SENT`).
_NOTE_SENT = (
    _MESSAGE.update()
    .where(_MESSAGE.c.id.in_(bindparam("b_ids", expanding=True)),
           _MESSAGE.c.status.in_([str(s) for s in _BEFORE_SENT]))
    .values(status=str(MessageStatus.SENT), sent_at=bindparam("b_now", type_=_MESSAGE.c.sent_at.type),
            updated_at=bindparam("b_now", type_=_MESSAGE.c.updated_at.type))
)
# Primary key; only this worker's attempt, still `sending`, not handed yet.
_MARK_HANDED = (
    _MESSAGE.update()
    .where(_MESSAGE.c.id.in_(bindparam("b_ids", expanding=True)), _MESSAGE.c.status == str(MessageStatus.SENDING),
           _MESSAGE.c.handed_at.is_(None), _MESSAGE.c.worker_id == bindparam("b_worker"))
    .values(handed_at=bindparam("b_now", type_=_MESSAGE.c.handed_at.type))
    .returning(_MESSAGE.c.id)
)
# Primary key, executemany; never moves a message back from a later status a receipt set.
_MARK_SENT = (
    _MESSAGE.update()
    .where(_MESSAGE.c.id == bindparam("b_id"))
    .values(
        status=case((or_(*(_MESSAGE.c.status == str(s) for s in _BEFORE_SENT)), str(MessageStatus.SENT)),
                    else_=_MESSAGE.c.status),
        provider_message_id=bindparam("b_provider_id"),
        sent_at=bindparam("b_now", type_=_MESSAGE.c.sent_at.type),
        updated_at=bindparam("b_now", type_=_MESSAGE.c.updated_at.type),
        last_error=None,
    )
)
# Primary key, executemany.
_ADVANCE = (
    _ENROLLMENT.update().where(_ENROLLMENT.c.id == bindparam("b_id")).values(
        step_index=bindparam("b_index"), next_due_at=bindparam("b_due", type_=_ENROLLMENT.c.next_due_at.type),
        step_entered_at=bindparam("b_now", type_=_ENROLLMENT.c.step_entered_at.type), claimed_by=None)
)


# PostgreSQL: both at once, one round trip fewer per hand-over. A data-modifying WITH runs on one
# snapshot, so neither part sees the other's change; the rows are disjoint (answers that came back,
# sends not handed yet), so the result is that of `_NOTE_SENT` then `_MARK_HANDED`.
_NOTE_AND_HAND_PG = text(
    "WITH noted AS (UPDATE message SET status = :b_sent, sent_at = :b_now, updated_at = :b_now"
    " WHERE id = ANY(:b_noted) AND status IN (:b_sending, :b_unknown))"
    " UPDATE message SET handed_at = :b_handed_at WHERE id = ANY(:b_hand) AND status = :b_sending"
    " AND handed_at IS NULL AND worker_id = :b_worker RETURNING id"
).bindparams(bindparam("b_now", type_=_MESSAGE.c.sent_at.type),
             bindparam("b_handed_at", type_=_MESSAGE.c.handed_at.type))


def _core(session: Session, statement: Any, parameters: Any) -> Any:
    """Run a Core statement in `session`'s transaction, on its connection (no ORM bookkeeping)."""
    return session.connection().execute(statement, parameters)


# -- claiming -------------------------------------------------------------------------------------


def claim_due(rt: Runtime, now: datetime, limit: int, worker_id: str, *,
              lease_from: datetime | None = None) -> list[int]:
    """Claim up to `limit` due enrollments for this worker; returns their ids.

    One statement: the claim moves `next_due_at` to the lease end, so a worker that dies holding a
    claim simply lets it fall due again. PostgreSQL skips rows other workers are claiming
    (FOR UPDATE SKIP LOCKED); SQLite takes the write lock first (BEGIN IMMEDIATE). The inner
    query is an index range scan on `ix_enrollment_next_due_at` that stops after `limit` rows,
    so its cost does not grow with the number of enrollments.

    `lease_from` (default `now`) is when the lease starts: a long pass decides with the `now` it
    started with, but its leases must run from the real time of the claim (`Dispatcher._clock`)."""
    due = (
        select(Enrollment.id)
        .where(Enrollment.next_due_at <= now)
        .order_by(Enrollment.next_due_at)
        .limit(limit)
    )
    if rt.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    statement = (
        update(Enrollment)
        .where(Enrollment.id.in_(due.scalar_subquery()))
        .values(next_due_at=(lease_from or now) + LEASE, claimed_by=worker_id)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    with db.write_transaction(rt.sessions) as session:
        return list(session.scalars(statement))


# -- reading a claimed batch ------------------------------------------------------------------------


def load_enrollments(session: Session, ids: Sequence[int]) -> list[tuple[Enrollment, Contact | None]]:
    """The claimed enrollments with their contacts, in id order (primary keys of both tables)."""
    rows = session.execute(
        select(Enrollment, Contact)
        .outerjoin(Contact, Contact.id == Enrollment.contact_id)
        .where(Enrollment.id.in_(ids))
        .order_by(Enrollment.id)
    ).all()
    return [(enrollment, contact) for enrollment, contact in rows]


def step_messages(session: Session, enrollment_ids: Sequence[int], step_ids: Iterable[str]) -> list[Message]:
    """The send records of these enrollments for these steps (`uq_message_enrollment_entry_step_channel`,
    whose leading column is the enrollment; every entry's: the caller keeps the current one's). Bodies are deferred: only a retry needs them."""
    return list(session.scalars(
        select(Message)
        .options(defer(Message.body_html), defer(Message.body_text), defer(Message.subject))
        .where(Message.enrollment_id.in_(enrollment_ids), Message.step_id.in_(list(step_ids)))
    ))


def find_message(session: Session, enrollment_id: int, step_id: str, channel: str, entry: int = 1) -> Message | None:
    """One step's send record in one entry (`uq_message_enrollment_entry_step_channel`, all four columns)."""
    return session.scalar(
        select(Message).where(
            Message.enrollment_id == enrollment_id, Message.entry == entry, Message.step_id == step_id,
            Message.channel == channel,
        )
    )


def recent_sends(session: Session, contact_ids: Iterable[int], now: datetime) -> list[tuple[int, str, datetime]]:
    """(contact id, channel, sent_at) of everything sent to these contacts within two days of `now`
    (also covers the rolling 24 hours of the state texting laws).

    A local calendar day starts at most 14 h before / ends 14 h after the UTC day, so two days each
    way cover any contact's "today". Uses `ix_message_contact_id`: a contact has a handful of
    messages, so filtering status and time on them is cheap."""
    return [(contact_id, channel, sent_at) for contact_id, channel, sent_at in session.execute(
        select(Message.contact_id, Message.channel, Message.sent_at).where(
            Message.contact_id.in_(sorted(set(contact_ids))),
            Message.status.in_(SENT_LIKE),
            Message.sent_at >= now - timedelta(days=2),
            Message.sent_at < now + timedelta(days=2),
        )
    )]


def load_send(session: Session, message_id: int, enrollment_id: int) -> tuple[Message, Enrollment, Contact]:
    """A send record with its enrollment and contact, to record a failure (three primary-key reads)."""
    message = session.get(Message, message_id)
    enrollment = session.get(Enrollment, enrollment_id)
    assert message is not None and enrollment is not None
    contact = session.get(Contact, message.contact_id)
    assert contact is not None
    return message, enrollment, contact


def load_contact(session: Session, contact_id: int) -> Contact:
    """One contact by primary key (usually already in the session: no statement at all)."""
    contact = session.get(Contact, contact_id)
    assert contact is not None
    return contact


# -- writing send records ----------------------------------------------------------------------------


def new_message_ids(session: Session, count: int) -> list[int]:
    """`count` fresh send-record ids (the message sequence on PostgreSQL; see `db.allocate_ids`)."""
    return db.allocate_ids(session.connection(), Message.__table__, count)


def insert_messages(session: Session, rows: Sequence[Sequence[object]]) -> None:
    """One bulk INSERT (COPY on PostgreSQL) of complete send records, `MESSAGE_COLUMNS` in order."""
    db.bulk_insert(session.connection(), Message.__table__, MESSAGE_COLUMNS, rows)


def mark_sent(session: Session, sent: Sequence[tuple[int, str | None]], now: datetime) -> None:
    """Record (message id, provider id) pairs as sent, by primary key, in one executemany.

    A status callback can beat us here (the provider is fast, the batch is not): never move a
    message back from `delivered` to `sent`, but do store the provider's id."""
    if not sent:
        return
    _core(session, _MARK_SENT, [{"b_id": message_id, "b_provider_id": provider_id, "b_now": now}
                                for message_id, provider_id in sent])


def note_sent(session: Session, ids: Sequence[int], now: datetime) -> None:
    """The provider accepted these sends: `sent` at once, in one statement (primary key), so that a
    crash before `mark_sent` and the enrollments' moves leaves them settled, not in doubt (the
    lease brings the enrollment back and `step.decide` moves it past a step already sent).
    `mark_sent` later adds the provider's ids; a receipt that got here first is never undone."""
    if not ids:
        return
    _core(session, _NOTE_SENT, {"b_ids": list(ids), "b_now": now})


def mark_handed(session: Session, ids: Sequence[int], worker_id: str, now: datetime) -> set[int]:
    """Record that this worker is about to hand these send records to the provider; returns the ids
    it may send (primary key, one UPDATE … RETURNING for the whole hand-over).

    Committed before the provider call, this is what tells a crash apart: a `sending` row without
    `handed_at` never left the machine. Only rows still `sending`, not yet handed and still this
    worker's attempt are marked: when another worker has meanwhile taken the send over (our lease
    ran out before we got to it, `lock_message`), the row is not ours to send and is left out."""
    if not ids:
        return set()
    return set(_core(session, _MARK_HANDED, {"b_ids": list(ids), "b_worker": worker_id, "b_now": now}).scalars())


def note_and_hand(session: Session, noted: Sequence[int], hand: Sequence[int], worker_id: str, now: datetime,
                  handed_at: datetime) -> set[int]:
    """`note_sent(noted, now)` and `mark_handed(hand, handed_at)` in the caller's transaction; on
    PostgreSQL as one statement (`_NOTE_AND_HAND_PG`). Returns the ids of `hand` this worker may send."""
    if noted and hand and session.get_bind().dialect.name == "postgresql":
        return set(_core(session, _NOTE_AND_HAND_PG, {
            "b_noted": list(noted), "b_hand": list(hand), "b_worker": worker_id, "b_now": now,
            "b_handed_at": handed_at, "b_sent": str(MessageStatus.SENT), "b_sending": str(MessageStatus.SENDING),
            "b_unknown": str(MessageStatus.UNKNOWN)}).scalars())
    note_sent(session, noted, now)
    return mark_handed(session, hand, worker_id, handed_at)


def lock_message(session: Session, message: Message) -> None:
    """Re-read one send record under a row lock (primary key; SQLite: the write lock is held already),
    so that deciding a stalled send races neither its own worker's hand-over nor another recovery."""
    session.refresh(message, with_for_update=True)


def lock_enrollment(session: Session, enrollment_id: int) -> Enrollment | None:
    """One enrollment under a row lock (primary key), for a staff decision about one of its sends."""
    return session.scalar(select(Enrollment).where(Enrollment.id == enrollment_id).with_for_update())


def messages_in_review(session: Session, limit: int) -> list[tuple[Message, Contact]]:
    """Send records waiting for a staff decision, oldest attempt first, with their contacts
    (`ix_message_status_attempted`: equality on status, ordered by attempted_at)."""
    return [(message, contact) for message, contact in session.execute(
        select(Message, Contact).join(Contact, Contact.id == Message.contact_id)
        .where(Message.status == MessageStatus.NEEDS_REVIEW)
        .order_by(Message.attempted_at, Message.id).limit(limit)
    ).all()]


def count_in_review(session: Session) -> int:
    """How many send records wait for a staff decision (`ix_message_status_attempted`, index only)."""
    return int(session.scalar(select(func.count()).select_from(Message).where(
        Message.status == MessageStatus.NEEDS_REVIEW)) or 0)


def message_events(session: Session, message_id: int, limit: int = 20) -> list[Event]:
    """What happened to one send record, newest first (`ix_event_message_id`)."""
    return list(session.scalars(
        select(Event).where(Event.message_id == message_id).order_by(Event.occurred_at.desc(), Event.id.desc())
        .limit(limit)
    ))


def release_claims(session: Session, ids: Sequence[int], worker_id: str, now: datetime) -> None:
    """Give back claimed enrollments this worker will not prepare after all (it is stopping): due
    again at `now`, not after the lease (primary key; only those still claimed by this worker)."""
    if not ids:
        return
    table = Enrollment.__table__
    session.execute(table.update().where(table.c.id.in_(list(ids)), table.c.claimed_by == worker_id)
                    .values(claimed_by=None, next_due_at=now))


# -- moving enrollments after a send -----------------------------------------------------------------


def lock_enrollment_statuses(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Lock these enrollments (primary key, in id order so two workers never deadlock) and return
    their statuses: a booking or an unsubscribe arriving now either happened before — we see it and
    stop — or waits for us and wins afterwards."""
    return dict(session.execute(
        select(Enrollment.id, Enrollment.status).where(Enrollment.id.in_(sorted(set(ids)))).order_by(Enrollment.id)
        .with_for_update()
    ).all())


def advance_enrollments(session: Session, moves: Sequence[tuple[int, int, datetime]], now: datetime) -> None:
    """(enrollment id, new step index, due at): on to the next step (reached `now`), released (primary key)."""
    if not moves:
        return
    _core(session, _ADVANCE, [{"b_id": id_, "b_index": index, "b_due": due, "b_now": now} for id_, index, due in moves])


def complete_enrollments(session: Session, done: Sequence[tuple[int, int]], now: datetime) -> None:
    """(enrollment id, final step index): the sequence is finished (primary key)."""
    if not done:
        return
    table = Enrollment.__table__
    session.execute(
        table.update().where(table.c.id == bindparam("b_id")).values(
            step_index=bindparam("b_index"), status=str(EnrollmentStatus.COMPLETED), next_due_at=None,
            claimed_by=None, ended_at=bindparam("b_now", type_=table.c.ended_at.type)),
        [{"b_id": id_, "b_index": index, "b_now": now} for id_, index in done],
    )


def release_enrollments(session: Session, ids: Sequence[int], *, clear_due: bool) -> None:
    """Give up the claim on these enrollments (primary key); `clear_due` also takes them out of the
    queue (booked or stopped meanwhile)."""
    if not ids:
        return
    table = Enrollment.__table__
    values: dict[str, Any] = {"claimed_by": None}
    if clear_due:
        values["next_due_at"] = None
    session.execute(table.update().where(table.c.id.in_(ids)).values(**values))


def insert_events(session: Session, events: Sequence[Sequence[object]]) -> None:
    """One bulk INSERT of timeline entries, `EVENT_COLUMNS` in order."""
    db.bulk_insert(session.connection(), Event.__table__, EVENT_COLUMNS, events)
