"""The A/B and holdout arithmetic (issue 13) against examples worked by hand, its edges (nothing sent,
everyone booked, identical arms), the minimum-data rule, and symmetry: swapping the arms flips the
sign and changes nothing else."""

from __future__ import annotations

import math

import pytest

from patient_drip.dispatch.experiment_stats import (NOT_ENOUGH_DATA, Arm, compare_to_control, difference,
                                                    format_p, overall_verdict, verdict, z_test)


def arms(a: tuple[int, int], b: tuple[int, int]) -> tuple[Arm, Arm]:
    """(booked, sent) for A and for B."""
    return Arm("A", a[1], a[0]), Arm("B", b[1], b[0])


def test_forty_of_two_hundred_against_sixty_of_two_hundred():
    # pooled p = 100/400 = 0.25; se = sqrt(0.25 * 0.75 * (1/200 + 1/200)) = sqrt(0.001875) = 0.043301
    # z = (0.30 - 0.20) / 0.043301 = 2.3094; p = erfc(2.3094 / sqrt 2) = 2 * (1 - Φ(2.3094)) = 0.0209
    a, b = arms((40, 200), (60, 200))
    test = z_test(a, b)
    assert test.z == pytest.approx(2.3094, abs=1e-4)
    assert test.p_value == pytest.approx(0.0209, abs=1e-4)
    # Unpooled: se = sqrt(0.2 * 0.8 / 200 + 0.3 * 0.7 / 200) = sqrt(0.0008 + 0.00105) = 0.043012
    # 1.96 * 0.043012 = 0.084303 → 0.10 ± 0.0843 = [0.0157, 0.1843]; relative lift 0.10 / 0.20 = 0.5
    diff = difference(a, b)
    assert diff.difference == pytest.approx(0.10)
    assert (diff.ci_low, diff.ci_high) == (pytest.approx(0.0157, abs=1e-4), pytest.approx(0.1843, abs=1e-4))
    assert diff.relative_lift == pytest.approx(0.5)
    assert verdict(a, b).text == "B books more, 95% confidence"


def test_thirty_of_a_hundred_against_thirty_six_is_no_clear_difference():
    # pooled p = 66/200 = 0.33; se = sqrt(0.33 * 0.67 * 0.02) = sqrt(0.004422) = 0.066498
    # z = 0.06 / 0.066498 = 0.9023; p = 2 * (1 - Φ(0.9023)) = 0.3669
    a, b = arms((30, 100), (36, 100))
    assert z_test(a, b).z == pytest.approx(0.9023, abs=1e-4)
    assert z_test(a, b).p_value == pytest.approx(0.3669, abs=1e-4)
    # Unpooled se = sqrt(0.3 * 0.7 / 100 + 0.36 * 0.64 / 100) = sqrt(0.004404) = 0.066363
    # 0.06 ± 1.96 * 0.066363 = 0.06 ± 0.130068 = [-0.0701, 0.1901]: the interval holds 0
    diff = difference(a, b)
    assert (diff.ci_low, diff.ci_high) == (pytest.approx(-0.0701, abs=1e-4), pytest.approx(0.1901, abs=1e-4))
    result = verdict(a, b)
    assert result.text == "no clear difference yet (p = 0.37)" and not result.significant


def test_arms_of_different_sizes():
    # 10/50 against 30/100: pooled p = 40/150 = 0.26667; se = sqrt(0.26667 * 0.73333 * (1/50 + 1/100))
    # = sqrt(0.195556 * 0.03) = 0.076594; z = 0.10 / 0.076594 = 1.3056; p = 0.1917
    a, b = arms((10, 50), (30, 100))
    assert z_test(a, b).z == pytest.approx(1.3056, abs=1e-4)
    assert z_test(a, b).p_value == pytest.approx(0.1917, abs=1e-4)


def test_the_control_is_named_when_it_books_more():
    a, b = arms((60, 200), (40, 200))
    result = verdict(a, b)
    assert result.text == "A books more, 95% confidence" and result.winner == "A"
    assert z_test(a, b).z == pytest.approx(-2.3094, abs=1e-4)


def test_the_p_value_of_the_95_percent_quantile_is_five_percent():
    # A check on erfc itself: P(|Z| >= 1.959964) = 0.05, P(|Z| >= 0) = 1.
    assert math.erfc(1.959964 / math.sqrt(2)) == pytest.approx(0.05, abs=1e-6)
    a, b = arms((20, 100), (20, 100))
    assert z_test(a, b).p_value == 1.0


@pytest.mark.parametrize(("a", "b"), [
    ((3, 29), (20, 200)),  # 29 sent: one fewer than the 30 each arm needs
    ((2, 100), (2, 100)),  # 4 bookings between them: one fewer than 5
    ((0, 0), (10, 50)),  # nothing sent at all
])
def test_too_little_data_says_so(a, b):
    result = verdict(*arms(a, b))
    assert result.text == NOT_ENOUGH_DATA and result.p_value is None and not result.significant


def test_just_enough_data_gives_a_verdict():
    result = verdict(*arms((2, 30), (3, 30)))  # exactly 30 each and 5 bookings
    assert result.text.startswith("no clear difference yet (p = ")


def test_nothing_sent_cannot_be_tested_and_names_the_arm():
    a, b = arms((0, 0), (10, 50))
    with pytest.raises(ValueError, match="arm 'A' has none"):
        z_test(a, b)
    with pytest.raises(ValueError, match="sent must be above 0"):
        difference(b, a)


def test_counts_that_cannot_be_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="booked must be between 0 and sent"):
        Arm("A", 10, 11)
    with pytest.raises(ValueError, match="sent must not be negative"):
        Arm("A", -1, 0)


def test_everyone_booked_in_both_arms_is_no_difference():
    # pooled p = 1 → se = 0: no spread, z = 0, p = 1; the unpooled interval is [0, 0].
    a, b = arms((40, 40), (50, 50))
    assert z_test(a, b).p_value == 1.0
    diff = difference(a, b)
    assert (diff.difference, diff.ci_low, diff.ci_high) == (0.0, 0.0, 0.0)
    assert verdict(a, b).text == "no clear difference yet (p = 1.00)"


def test_identical_arms_are_no_difference():
    a, b = arms((25, 100), (25, 100))
    assert z_test(a, b).z == 0.0 and verdict(a, b).text == "no clear difference yet (p = 1.00)"
    diff = difference(a, b)
    assert diff.ci_low == pytest.approx(-diff.ci_high) and diff.relative_lift == 0.0


def test_a_control_that_booked_nobody_has_no_relative_lift():
    diff = difference(*arms((0, 100), (5, 100)))
    assert diff.relative_lift is None and diff.difference == pytest.approx(0.05)


@pytest.mark.parametrize(("a", "b"), [
    ((40, 200), (60, 200)), ((10, 50), (30, 100)), ((0, 40), (7, 90)), ((33, 33), (1, 77)), ((12, 31), (12, 31)),
])
def test_swapping_the_arms_flips_the_sign_and_nothing_else(a, b):
    first, second = arms(a, b)
    swapped = (Arm("A", second.sent, second.booked), Arm("B", first.sent, first.booked))
    assert z_test(*swapped).z == pytest.approx(-z_test(first, second).z)
    assert z_test(*swapped).p_value == pytest.approx(z_test(first, second).p_value)
    forward, backward = difference(first, second), difference(*swapped)
    assert backward.difference == pytest.approx(-forward.difference)
    assert (backward.ci_low, backward.ci_high) == (pytest.approx(-forward.ci_high), pytest.approx(-forward.ci_low))
    assert 0.0 <= z_test(first, second).p_value <= 1.0
    assert forward.ci_low <= forward.difference <= forward.ci_high


def test_more_booked_in_b_never_raises_the_p_value():
    control = Arm("A", 200, 40)
    p_values = [z_test(control, Arm("B", 200, booked)).p_value for booked in range(40, 80)]
    assert p_values == sorted(p_values, reverse=True)


def test_several_variants_are_each_compared_with_the_first_and_share_the_five_percent():
    # 40/200 against 58/200: pooled p = 98/400 = 0.245; se = sqrt(0.245 * 0.755 * 0.01) = 0.043009
    # z = 0.09 / 0.043009 = 2.0926; p = 0.0364: below 0.05 on its own, above 0.05 / 2 = 0.025 with a
    # third variant in the test (Bonferroni). C: 40/200 against 41/200: pooled p = 81/400 = 0.2025;
    # se = sqrt(0.2025 * 0.7975 * 0.01) = 0.040186; z = 0.005 / 0.040186 = 0.1244; p = 0.90.
    a, b, c = Arm("A", 200, 40), Arm("B", 200, 58), Arm("C", 200, 41)
    assert overall_verdict(compare_to_control([a, b])) == "B books more, 95% confidence"
    three = compare_to_control([a, b, c])
    assert [(x.control.name, x.treatment.name) for x in three] == [("A", "B"), ("A", "C")]
    assert three[0].verdict.p_value == pytest.approx(0.0364, abs=1e-4) and not three[0].verdict.significant
    assert overall_verdict(three) == ("B vs A: no clear difference yet (p = 0.036); "
                                      "C vs A: no clear difference yet (p = 0.90)")
    # 40/200 against 60/200 (p = 0.0209, first test) still wins with three arms: 0.0209 < 0.025.
    assert compare_to_control([a, Arm("B", 200, 60), c])[0].verdict.text == "B books more, 95% confidence"


def test_one_variant_has_nothing_to_compare():
    assert compare_to_control([Arm("A", 100, 10)]) == []
    assert overall_verdict([]) == "no variants to compare"


@pytest.mark.parametrize(("p_value", "text"), [(0.23, "0.23"), (0.052, "0.052"), (1.0, "1.00"), (0.0999, "0.100")])
def test_p_values_read_without_hiding_the_five_percent_line(p_value, text):
    assert format_p(p_value) == text
