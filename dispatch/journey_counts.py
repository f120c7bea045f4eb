"""Live counts for a campaign's journey diagram: how many enrollments wait at each step now, how many
messages each step has sent, how many enrollments left by each exit, and where every enrollment
is (or ended) — from which the diagram works out how many went past a branch or a wait
(`web.admin.journey`), with no query of its own.

Three grouped queries, each answered from one index without reading the tables (checked at 100k
contacts with `bench/admin_pages.py`): `ix_enrollment_campaign_status_step` for the waiting and the
exits, `ix_message_campaign_step_status` for the sends.

Imports: models and `dispatch.funnel` (what counts as sent) only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.dispatch.funnel import SENT_STATUSES
from patient_drip.models import Enrollment, EnrollmentStatus, ExitReason, Message

# The diagram's exits, in its order, and the (status, exit reason) pairs each gathers.
EXITS: tuple[tuple[str, str], ...] = (
    ("booked", "Booked"),
    ("unsubscribed", "Unsubscribed or unreachable"),
    ("stopped", "Stopped by staff"),
    ("finished", "Finished the sequence"),
)
_EXIT_OF: dict[tuple[str, str | None], str] = {
    (EnrollmentStatus.EXITED, ExitReason.BOOKED): "booked",
    (EnrollmentStatus.EXITED, ExitReason.UNSUBSCRIBED): "unsubscribed",
    (EnrollmentStatus.EXITED, ExitReason.UNREACHABLE): "unsubscribed",
    (EnrollmentStatus.EXITED, ExitReason.STAFF): "stopped",
    (EnrollmentStatus.EXITED, ExitReason.ERASED): "stopped",
}


@dataclass(frozen=True, slots=True)
class JourneyCounts:
    """`waiting[i]`: active enrollments whose next step is step i; `paused[i]` likewise, paused;
    `sent[step id]`: that step's messages that went out; `exits[key]`: enrollments that left by it;
    `at[i]`: enrollments whose step is i whatever their status (where each is, or was when it
    ended); `completed[i]`: those that completed there (at an exit step, or after the last step)."""

    waiting: dict[int, int] = field(default_factory=dict)
    paused: dict[int, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    at: dict[int, int] = field(default_factory=dict)
    completed: dict[int, int] = field(default_factory=dict)


def journey_counts(session: Session, campaign_id: str) -> JourneyCounts:
    """The figures of `campaign_id`'s diagram, as of now."""
    waiting: dict[int, int] = {}
    paused: dict[int, int] = {}
    exits: dict[str, int] = {key: 0 for key, _label in EXITS}
    at: dict[int, int] = {}
    completed: dict[int, int] = {}
    rows = session.execute(
        select(Enrollment.status, Enrollment.exit_reason, Enrollment.step_index, func.count())
        .where(Enrollment.campaign_id == campaign_id)
        .group_by(Enrollment.status, Enrollment.exit_reason, Enrollment.step_index))
    for status, reason, index, count in rows:
        at[int(index)] = at.get(int(index), 0) + int(count)
        if status == EnrollmentStatus.ACTIVE:
            waiting[int(index)] = waiting.get(int(index), 0) + int(count)
        elif status == EnrollmentStatus.PAUSED:
            paused[int(index)] = paused.get(int(index), 0) + int(count)
        elif status == EnrollmentStatus.COMPLETED:
            exits["finished"] += int(count)
            completed[int(index)] = completed.get(int(index), 0) + int(count)
        else:
            key = _EXIT_OF.get((status, reason), "stopped")
            exits[key] += int(count)
    sent = {str(step): int(count) for step, count in session.execute(
        select(Message.step_id, func.count())
        .where(Message.campaign_id == campaign_id, Message.status.in_(SENT_STATUSES))
        .group_by(Message.step_id))}
    return JourneyCounts(waiting, paused, sent, exits, at, completed)
