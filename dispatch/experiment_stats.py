"""The arithmetic behind A/B variants and the holdout: a two-proportion z-test, the difference of two
booking rates with its 95% confidence interval, and a verdict in words. Pure functions over counts:
no database, no imports of ours (`dispatch.experiment_results` feeds it the counts).

The verdict rule, in one place (`verdict`):
- "not enough data yet" while either arm has fewer than `MIN_SENT_PER_ARM` (30) sent, or both arms
  together have fewer than `MIN_BOOKINGS_TOTAL` (5) bookings: below that the normal approximation
  the z-test and the Wald interval rest on is poor, and a "winner" would mostly be noise;
- else "<arm> books more, 95% confidence" when the two-sided p-value is below 0.05 (the arm with the
  higher booking rate is named);
- else "no clear difference yet (p = 0.23)".
With more than two variants, each variant is compared with the first one, the control (`compare_to_control`),
and the 0.05 is shared among the comparisons (Bonferroni): otherwise, with four variants, one of the
three comparisons would come out "significant" by chance about one time in seven.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_SENT_PER_ARM = 30
MIN_BOOKINGS_TOTAL = 5
ALPHA = 0.05
Z_95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal (norm.ppf(0.975))
NOT_ENOUGH_DATA = "not enough data yet"


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm of a comparison: a variant (or the holdout, or everyone messaged) and its counts."""

    name: str
    sent: int
    booked: int

    def __post_init__(self) -> None:
        if self.sent < 0:
            raise ValueError(f"sent must not be negative (arm {self.name!r}: {self.sent})")
        if not 0 <= self.booked <= self.sent:
            raise ValueError(f"booked must be between 0 and sent (arm {self.name!r}: {self.booked} of {self.sent})")

    @property
    def rate(self) -> float:
        """Booked per sent; 0.0 for an arm nobody is in yet."""
        return self.booked / self.sent if self.sent else 0.0


@dataclass(frozen=True, slots=True)
class ZTest:
    z: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Difference:
    """`treatment` rate minus `control` rate (a proportion: 0.05 is five percentage points), its 95%
    interval, and the relative lift (difference / control rate; None when the control rate is 0)."""

    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    text: str
    p_value: float | None  # None when there is not enough data to test
    significant: bool
    winner: str | None  # the arm that books more, when significant


def _require_sent(control: Arm, treatment: Arm) -> None:
    for arm in (control, treatment):
        if arm.sent == 0:
            raise ValueError(f"sent must be above 0 to compare (arm {arm.name!r} has none)")


def z_test(control: Arm, treatment: Arm) -> ZTest:
    """Two-proportion z-test with the pooled standard error (the rates are assumed equal under the
    null hypothesis, so one common rate estimates the spread). Two-sided p-value.

    When both arms booked nobody or everybody there is no spread at all: z is 0 and p is 1 (the data
    shows no difference). Raises ValueError when an arm has nothing sent."""
    _require_sent(control, treatment)
    pooled = (control.booked + treatment.booked) / (control.sent + treatment.sent)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.sent + 1 / treatment.sent))
    if se == 0:
        return ZTest(0.0, 1.0)
    z = (treatment.rate - control.rate) / se
    # P(|Z| >= |z|) = erfc(|z| / sqrt 2): exact for the normal, no scipy needed.
    return ZTest(z, math.erfc(abs(z) / math.sqrt(2)))


def difference(control: Arm, treatment: Arm) -> Difference:
    """`treatment` minus `control` with an unpooled Wald 95% interval: each arm's own variance.

    Unpooled, because an interval describes the difference we observed, and pooling assumes there is
    none (right for the test above, wrong here). Wald (estimate ± 1.96·se) covers poorly with tiny
    samples or rates near 0 or 1; the verdict's minimum data rule keeps those off the page. An arm
    with a rate of 0 or 1 adds no variance, so two such arms give a zero-width interval."""
    _require_sent(control, treatment)
    diff = treatment.rate - control.rate
    se = math.sqrt(control.rate * (1 - control.rate) / control.sent
                   + treatment.rate * (1 - treatment.rate) / treatment.sent)
    relative = diff / control.rate if control.rate else None
    return Difference(diff, diff - Z_95 * se, diff + Z_95 * se, relative)


def enough_data(control: Arm, treatment: Arm) -> bool:
    """The module docstring's minimum: 30 sent in each arm and 5 bookings between them."""
    return (min(control.sent, treatment.sent) >= MIN_SENT_PER_ARM
            and control.booked + treatment.booked >= MIN_BOOKINGS_TOTAL)


def format_p(p_value: float) -> str:
    """Two decimals, three near the 0.05 line so 0.052 does not read as "0.05"."""
    return f"{p_value:.3f}" if p_value < 0.1 else f"{p_value:.2f}"


def verdict(control: Arm, treatment: Arm, *, alpha: float = ALPHA, confidence: str = "95%") -> Verdict:
    """The plain-language verdict of one comparison (the rule is in the module docstring)."""
    if not enough_data(control, treatment):
        return Verdict(NOT_ENOUGH_DATA, None, False, None)
    p_value = z_test(control, treatment).p_value
    if p_value < alpha:
        winner = treatment.name if treatment.rate > control.rate else control.name
        return Verdict(f"{winner} books more, {confidence} confidence", p_value, True, winner)
    return Verdict(f"no clear difference yet (p = {format_p(p_value)})", p_value, False, None)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One variant against the control."""

    control: Arm
    treatment: Arm
    verdict: Verdict


def compare_to_control(arms: list[Arm]) -> list[Comparison]:
    """Each arm after the first against the first (the control), the 0.05 shared among the comparisons.
    Fewer than two arms: nothing to compare."""
    if len(arms) < 2:
        return []
    control, others = arms[0], arms[1:]
    alpha = ALPHA / len(others)
    return [Comparison(control, other, verdict(control, other, alpha=alpha)) for other in others]


def overall_verdict(comparisons: list[Comparison]) -> str:
    """One line for a whole test: the verdict itself with two arms; with more, each comparison named
    ("B vs A: …; C vs A: …")."""
    if not comparisons:
        return "no variants to compare"
    if len(comparisons) == 1:
        return comparisons[0].verdict.text
    return "; ".join(f"{c.treatment.name} vs {c.control.name}: {c.verdict.text}" for c in comparisons)
