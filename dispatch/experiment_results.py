"""A campaign's experiments from the database (issue 13): per A/B step, each variant's sent, clicked
and booked with the verdict; and the holdout against everyone else. The arithmetic and the verdict
rule are `dispatch.experiment_stats`; this module only counts, in two grouped queries for all
campaigns at once (plain SQL that SQLite and PostgreSQL both run).

What counts, and why:
- A variant's **sent** is its messages in a sent-like status (`statuses.SENT_LIKE`: sent, delivered,
  and the in-doubt ones); **clicked** is those with `clicked_at`. Each message is one unit: a person
  who re-entered the journey and got the step twice counts twice (rare, and both arms alike).
- A variant's **booked**: the contact has a booking of kind `booked` received at or after the message
  was sent. Not the booking's attributed message: attribution credits one message per booking,
  usually the last one before booking, so a test on the welcome email would almost never see the
  bookings it helped to bring. Not the enrollment's `exit_reason` either: it misses whoever booked
  after the sequence completed. The variants were assigned at random, so everything after the send
  is the same for both arms and "booked any time after receiving it" compares like with like.
- The **holdout**: enrollments with `holdout` true against the rest, each booked when the contact has
  a booking of kind `booked` received at or after `enrolled_at`. The exit reason would be unfair here:
  a holdout enrollment completes after its welcome message, so a holdout person who books on day 10
  never exits "booked", while a messaged one (still enrolled) does.
A cancelled booking still counts as booked (the message did its job; whether they came is another
question). A contact in two campaigns counts for both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import case, exists, func, select
from sqlalchemy.orm import Session

from patient_drip.dispatch.experiment_stats import (Arm, Comparison, compare_to_control, difference,
                                                    overall_verdict, verdict)
from patient_drip.models import SENT_LIKE, Booking, BookingKind, Enrollment, Message

HOLDOUT = "holdout"
MESSAGED = "messaged group"


@dataclass(frozen=True, slots=True)
class VariantCounts:
    variant: str
    sent: int
    clicked: int
    booked: int

    @property
    def booking_rate(self) -> float:
        return self.booked / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class StepExperiment:
    """One A/B step. Its variants in name order; the first is the control every other one is compared
    with (the journey names them A, B, …)."""

    step: str
    variants: list[VariantCounts]
    comparisons: list[Comparison]

    @property
    def p_value(self) -> float | None:
        """The comparison's p-value; with several variants, the smallest (the one closest to a
        verdict); None while there is not enough data."""
        values = [c.verdict.p_value for c in self.comparisons if c.verdict.p_value is not None]
        return min(values) if values else None

    @property
    def verdict(self) -> str:
        return overall_verdict(self.comparisons)


@dataclass(frozen=True, slots=True)
class GroupCounts:
    enrolled: int
    booked: int

    @property
    def booking_rate(self) -> float:
        return self.booked / self.enrolled if self.enrolled else 0.0


@dataclass(frozen=True, slots=True)
class HoldoutResult:
    """The holdout against the messaged group. `lift` is the messaged group's booking rate minus the
    holdout's (0.05 = five percentage points) with its 95% interval; `relative_lift` is that over the
    holdout's rate. All three are None while either group is empty."""

    holdout: GroupCounts
    messaged: GroupCounts
    lift: float | None
    lift_ci_95: tuple[float, float] | None
    relative_lift: float | None
    p_value: float | None
    verdict: str


@dataclass(frozen=True, slots=True)
class CampaignResults:
    campaign: str
    experiments: list[StepExperiment] = field(default_factory=list)
    holdout: HoldoutResult | None = None  # None: nobody in this campaign is in a holdout

    @property
    def has_results(self) -> bool:
        return bool(self.experiments) or self.holdout is not None


def holdout_result(holdout: GroupCounts, messaged: GroupCounts) -> HoldoutResult:
    """The lift and verdict of a holdout from its two groups' counts."""
    control, treatment = Arm(HOLDOUT, holdout.enrolled, holdout.booked), Arm(MESSAGED, messaged.enrolled, messaged.booked)
    result = verdict(control, treatment)
    if not (holdout.enrolled and messaged.enrolled):
        return HoldoutResult(holdout, messaged, None, None, None, None, result.text)
    diff = difference(control, treatment)
    return HoldoutResult(holdout, messaged, diff.difference, (diff.ci_low, diff.ci_high), diff.relative_lift,
                         result.p_value, result.text)


def experiment_results(session: Session, *, campaign_ids: Collection[str] | None = None,
                       step_order: Mapping[str, Sequence[str]] | None = None) -> dict[str, CampaignResults]:
    """Every campaign with variants or a holdout (or only those in `campaign_ids`), by campaign id.
    `step_order` (campaign id → step ids in order) orders the experiments; steps it does not name
    come after, by id."""
    variant_sent_at = func.coalesce(Message.sent_at, Message.created_at)
    # Correlated EXISTS on booking.contact_id (indexed): once per message row, not a join that
    # would count a contact with two bookings twice.
    booked_after_send = exists().where(Booking.contact_id == Message.contact_id,
                                       Booking.kind == str(BookingKind.BOOKED), Booking.received_at >= variant_sent_at)
    variants = (
        select(Message.campaign_id, Message.step_id, Message.variant, func.count(),
               func.sum(case((Message.clicked_at.is_not(None), 1), else_=0)),
               func.sum(case((booked_after_send, 1), else_=0)))
        .where(Message.variant.is_not(None), Message.status.in_([str(s) for s in SENT_LIKE]))
        .group_by(Message.campaign_id, Message.step_id, Message.variant)
    )
    booked_after_enrolling = exists().where(Booking.contact_id == Enrollment.contact_id,
                                            Booking.kind == str(BookingKind.BOOKED),
                                            Booking.received_at >= Enrollment.enrolled_at)
    groups = (
        select(Enrollment.campaign_id, Enrollment.holdout, func.count(),
               func.sum(case((booked_after_enrolling, 1), else_=0)))
        .group_by(Enrollment.campaign_id, Enrollment.holdout)
    )
    if campaign_ids is not None:
        variants = variants.where(Message.campaign_id.in_(list(campaign_ids)))
        groups = groups.where(Enrollment.campaign_id.in_(list(campaign_ids)))

    by_step: dict[str, dict[str, list[VariantCounts]]] = {}
    for campaign_id, step_id, variant, sent, clicked, booked in session.execute(variants):
        by_step.setdefault(campaign_id, {}).setdefault(step_id, []).append(
            VariantCounts(variant, int(sent), int(clicked or 0), int(booked or 0)))
    by_group: dict[str, dict[bool, GroupCounts]] = {}
    for campaign_id, in_holdout, enrolled, booked in session.execute(groups):
        by_group.setdefault(campaign_id, {})[bool(in_holdout)] = GroupCounts(int(enrolled), int(booked or 0))

    results = {}
    for campaign_id in sorted(set(by_step) | {cid for cid, g in by_group.items() if True in g}):
        order = list((step_order or {}).get(campaign_id, ()))
        steps = by_step.get(campaign_id, {})
        experiments = []
        for step_id in sorted(steps, key=lambda s: (order.index(s) if s in order else len(order), s)):
            counts = sorted(steps[step_id], key=lambda v: v.variant)
            arms = [Arm(v.variant, v.sent, v.booked) for v in counts]
            experiments.append(StepExperiment(step_id, counts, compare_to_control(arms)))
        group = by_group.get(campaign_id, {})
        holdout = (holdout_result(group[True], group.get(False, GroupCounts(0, 0))) if True in group else None)
        results[campaign_id] = CampaignResults(campaign_id, experiments, holdout)
    return results


def results_as_dict(results: CampaignResults) -> dict[str, object]:
    """The JSON shape `drip stats --format json` adds to each campaign: "experiments" and "holdout"."""
    holdout = results.holdout
    return {
        "experiments": [{
            "step": experiment.step,
            "variants": [{"variant": v.variant, "sent": v.sent, "clicked": v.clicked, "booked": v.booked,
                          "booking_rate": round(v.booking_rate, 4)} for v in experiment.variants],
            "p_value": None if experiment.p_value is None else round(experiment.p_value, 4),
            "verdict": experiment.verdict,
        } for experiment in results.experiments],
        "holdout": None if holdout is None else {
            "holdout": _group_dict(holdout.holdout),
            "messaged": _group_dict(holdout.messaged),
            "lift": None if holdout.lift is None else round(holdout.lift, 4),
            "lift_ci_95": None if holdout.lift_ci_95 is None else [round(x, 4) for x in holdout.lift_ci_95],
            "relative_lift": None if holdout.relative_lift is None else round(holdout.relative_lift, 4),
            "p_value": None if holdout.p_value is None else round(holdout.p_value, 4),
            "verdict": holdout.verdict,
        },
    }


def _group_dict(group: GroupCounts) -> dict[str, object]:
    return {"enrolled": group.enrolled, "booked": group.booked, "booking_rate": round(group.booking_rate, 4)}


def format_results(results: CampaignResults) -> list[str]:
    """The text format's short section for one campaign (no lines when it has no experiments)."""
    lines = []
    for experiment in results.experiments:
        lines.append(f"  A/B {experiment.step}: {experiment.verdict}")
        for v in experiment.variants:
            lines.append(f"    {v.variant:<12} {v.sent:>7} sent {v.clicked:>7} clicked {v.booked:>7} booked "
                         f"({v.booking_rate:.1%})")
    if results.holdout is not None:
        h = results.holdout
        lines.append(f"  holdout: {h.verdict}")
        for name, group in (("holdout", h.holdout), ("messaged", h.messaged)):
            lines.append(f"    {name:<12} {group.enrolled:>7} enrolled {group.booked:>7} booked ({group.booking_rate:.1%})")
        if h.lift is not None and h.lift_ci_95 is not None:
            lines.append(f"    lift {h.lift * 100:+.1f} points (95% CI {h.lift_ci_95[0] * 100:+.1f} to "
                         f"{h.lift_ci_95[1] * 100:+.1f})")
    return lines
