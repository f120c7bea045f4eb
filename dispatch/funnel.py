"""The funnel per campaign and step: sent → delivered → clicked → booked.

Each booking counts under exactly one step: the message it is attributed to when it was recorded
(`contacts.bookings.attribute`: the message whose booking link carried our tracking value, else the
last one clicked before booking, else the last delivered, else the last one sent)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.dispatch.experiment_results import CampaignResults, format_results, results_as_dict
from patient_drip.models import Booking, BookingKind, Enrollment, ExitReason, Message, MessageStatus

SENT_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.BOUNCED, MessageStatus.UNKNOWN,
                 MessageStatus.NEEDS_REVIEW)


@dataclass(frozen=True, slots=True)
class StepFunnel:
    campaign: str
    step: str
    channel: str
    sent: int
    delivered: int
    clicked: int
    booked: int  # bookings attributed to this step (each booking to one step only)
    skipped: int
    failed: int


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    campaign: str
    enrolled: int
    active: int
    completed: int
    booked: int
    unsubscribed: int
    other_exits: int
    steps: list[StepFunnel]

    @property
    def booking_rate(self) -> float:
        return self.booked / self.enrolled if self.enrolled else 0.0


def campaign_summaries(session: Session, campaigns: dict[str, Campaign]) -> list[CampaignSummary]:
    step_rows = session.execute(
        select(
            Message.campaign_id, Message.step_id, Message.channel,
            func.sum(case((Message.status.in_(SENT_STATUSES), 1), else_=0)),
            # A click proves the message arrived (carriers do not always send receipts): never more
            # clicked than delivered (the same rule as `funnel_report`).
            func.sum(case((or_(Message.delivered_at.is_not(None), Message.clicked_at.is_not(None)), 1), else_=0)),
            func.sum(case((Message.clicked_at.is_not(None), 1), else_=0)),
            func.sum(case((Message.status == MessageStatus.SKIPPED, 1), else_=0)),
            func.sum(case((Message.status == MessageStatus.FAILED, 1), else_=0)),
        )
        .group_by(Message.campaign_id, Message.step_id, Message.channel)
    ).all()
    booked = {(campaign_id, step_id): int(count) for campaign_id, step_id, count in session.execute(
        select(Booking.campaign_id, Booking.step_id, func.count())
        .where(Booking.kind == str(BookingKind.BOOKED), Booking.step_id.is_not(None))
        .group_by(Booking.campaign_id, Booking.step_id))}
    by_step = {}
    for row in step_rows:
        sent, delivered, clicked, skipped, failed = (int(v or 0) for v in row[3:])
        by_step[(row[0], row[1])] = StepFunnel(row[0], row[1], row[2], sent, delivered, clicked,
                                               booked.get((row[0], row[1]), 0), skipped, failed)
    enrollment_rows = session.execute(
        select(Enrollment.campaign_id, Enrollment.status, Enrollment.exit_reason, func.count())
        .group_by(Enrollment.campaign_id, Enrollment.status, Enrollment.exit_reason)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for campaign_id, status, reason, count in enrollment_rows:
        bucket = counts.setdefault(campaign_id, {})
        key = reason if status == "exited" else status
        bucket[key] = bucket.get(key, 0) + count
    ids = list(campaigns) + sorted(set(counts) - set(campaigns))
    summaries = []
    for campaign_id in ids:
        bucket = counts.get(campaign_id, {})
        campaign = campaigns.get(campaign_id)
        channels = {step.id: str(step.channel) for step in campaign.message_steps} if campaign else {}
        order = list(channels) + sorted({step for (cid, step) in by_step if cid == campaign_id} - set(channels))
        steps = [by_step.get((campaign_id, step_id))
                 or StepFunnel(campaign_id, step_id, channels.get(step_id, ""), 0, 0, 0, 0, 0, 0)
                 for step_id in order]
        summaries.append(CampaignSummary(
            campaign=campaign_id,
            enrolled=sum(bucket.values()),
            active=bucket.get("active", 0) + bucket.get("paused", 0),
            completed=bucket.get("completed", 0),
            booked=bucket.get(ExitReason.BOOKED, 0),
            unsubscribed=bucket.get(ExitReason.UNSUBSCRIBED, 0),
            other_exits=sum(v for k, v in bucket.items() if k not in ("active", "paused", "completed",
                                                                      ExitReason.BOOKED, ExitReason.UNSUBSCRIBED)),
            steps=steps,
        ))
    return summaries


def summaries_as_dicts(summaries: list[CampaignSummary],
                       results: Mapping[str, CampaignResults] | None = None) -> list[dict[str, object]]:
    """The JSON of `drip stats`. With `results` (`dispatch.experiment_results`), every campaign also
    has "experiments" (a list, empty without A/B steps) and "holdout" (null without one): new keys
    only, so tools reading the old ones are unaffected."""
    dicts = []
    for summary in summaries:
        shaped: dict[str, object] = {**asdict(summary), "booking_rate": round(summary.booking_rate, 4)}
        if results is not None:
            shaped.update(results_as_dict(results.get(summary.campaign) or CampaignResults(summary.campaign)))
        dicts.append(shaped)
    return dicts


def format_table(summaries: list[CampaignSummary], results: Mapping[str, CampaignResults] | None = None) -> str:
    lines = []
    for summary in summaries:
        lines.append(f"{summary.campaign}: {summary.enrolled} enrolled, {summary.active} active, {summary.completed} "
                     f"completed, {summary.booked} booked ({summary.booking_rate:.1%}), {summary.unsubscribed} "
                     f"unsubscribed, {summary.other_exits} other exits")
        lines.append(f"  {'step':<22} {'channel':<7} {'sent':>7} {'deliv.':>7} {'clicked':>7} {'booked':>7} "
                     f"{'skipped':>7} {'failed':>7}")
        for step in summary.steps:
            lines.append(f"  {step.step:<22} {step.channel:<7} {step.sent:>7} {step.delivered:>7} {step.clicked:>7} "
                         f"{step.booked:>7} {step.skipped:>7} {step.failed:>7}")
        if results is not None and summary.campaign in results:
            lines.extend(format_results(results[summary.campaign]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
