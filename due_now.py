"""The signal that a commit made dispatch work due now (issue 15, "speed to lead").

A rule that makes an enrollment due at once (`contacts.enrollment.enroll`, a resume, a re-opened
sequence, the bulk importer, staff's "send again") calls `mark_due(session, due, now)`. Then, when that transaction commits:

- in this process, every callback registered with `on_commit` for the session factory runs (the
  scheduler's in-process wake of its dispatcher: `dispatch.wake`);
- on PostgreSQL, every process that LISTENs on `CHANNEL` hears a `NOTIFY`: it is issued inside the
  transaction, so PostgreSQL delivers it only if the transaction commits, never for a rollback.

The payload is empty: a notification says "look at the queue", never who is in it (no patient data
travels outside the tables). Several marks in one transaction give one NOTIFY and one wake.

Imports nothing of ours: every layer that writes enrollments may import it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

log = logging.getLogger("drip.due_now")

CHANNEL = "drip_due"  # NOTIFY/LISTEN channel; per database, so clinics sharing a server do not mix
_FLAG = "drip_due_now"  # session.info: this session's open transaction made work due now
_NOTIFIED = "drip_due_notified"  # session.info: the (innermost) transaction that already sent NOTIFY


def mark_due(session: Session, due: datetime | None, now: datetime) -> None:
    """Say that the work this transaction writes is due at `due` (nothing when it is None or later
    than `now`: the interval tick finds it when its time comes)."""
    if due is None or due > now:
        return
    session.info[_FLAG] = True
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    # The innermost transaction: a NOTIFY inside a savepoint that is rolled back is discarded with it,
    # so a later mark in the outer transaction must send its own (PostgreSQL folds identical ones).
    current = session.get_nested_transaction() or session.get_transaction()
    if session.info.get(_NOTIFIED) is not current:
        connection.exec_driver_sql(f"NOTIFY {CHANNEL}")
        session.info[_NOTIFIED] = current


def on_commit(sessions: sessionmaker[Session], callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` after every commit of a session from `sessions` whose transaction called
    `mark_due` (after the commit: a dispatcher woken earlier would not see the rows yet). The
    callback must be quick and must not raise (it runs in the committing thread). Returns the
    function that removes the registration."""

    def after_commit(session: Session) -> None:
        root = session.get_transaction()
        if root is not None and root.is_active:
            return  # a savepoint was released: the work is visible only once the outer commit is done
        session.info.pop(_NOTIFIED, None)
        if session.info.pop(_FLAG, False):
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - a failed wake must never fail the caller's commit
                log.error("due-now callback failed with %s; the dispatch tick still runs", type(exc).__name__)

    def after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
        if previous.parent is None:  # the whole transaction rolled back: nothing of it is due
            session.info.pop(_FLAG, None)
            session.info.pop(_NOTIFIED, None)

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_soft_rollback", after_soft_rollback)

    def remove() -> None:
        event.remove(sessions, "after_commit", after_commit)
        event.remove(sessions, "after_soft_rollback", after_soft_rollback)

    return remove


def listen_statement() -> str:
    """What a listener runs on its own connection."""
    return f"LISTEN {CHANNEL}"


__all__: list[str] = ["CHANNEL", "listen_statement", "mark_due", "on_commit"]
