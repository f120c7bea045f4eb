"""A campaign's A/B steps and holdout counted from the tables (issue 13), on SQLite and PostgreSQL:
what counts as sent, clicked and booked, the verdict on those counts, and the JSON and text shapes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from patient_drip.dispatch.experiment_results import experiment_results, format_results, results_as_dict
from patient_drip.models import Booking, BookingKind, MessageStatus
from support.builders import START
from support.experiments import add_people, add_person


def _variant_test(session) -> None:  # type: ignore[no-untyped-def]
    """welcome-email: A 40 sent, 10 clicked, 4 booked; B 40 sent, 20 clicked, 12 booked; plus rows
    that must not count."""
    ab = {"step": "welcome-email"}
    add_people(session, START, 4, variant="A", clicked=True, booked="after", **ab)
    add_people(session, START, 6, variant="A", clicked=True, **ab)
    add_people(session, START, 28, variant="A", **ab)
    add_person(session, START, variant="A", booked="before", **ab)  # sent, but booked before it: not booked
    add_person(session, START, variant="A", booked="after", booking_kind=BookingKind.CANCELLED, **ab)  # not booked
    add_person(session, START, variant="A", status=MessageStatus.FAILED, booked="after", **ab)  # not sent
    add_person(session, START, variant="A", status=MessageStatus.SKIPPED, **ab)  # not sent
    twice = add_person(session, START, variant="B", clicked=True, booked="after", **ab)
    session.add(Booking(contact_id=twice, provider="staff", kind=BookingKind.BOOKED, external_id="again",
                        received_at=START + timedelta(days=3)))  # two bookings: still one booked message
    add_people(session, START, 11, variant="B", clicked=True, booked="after", **ab)
    add_people(session, START, 8, variant="B", clicked=True, **ab)
    add_people(session, START, 20, variant="B", **ab)
    add_person(session, START, step="welcome-email", variant=None, booked="after")  # a step without variants
    # A later A/B step with little data so far; and another campaign's test.
    add_people(session, START, 3, step="stress-email", variant="B")
    add_people(session, START, 2, step="stress-email", variant="A", booked="after")
    add_people(session, START, 2, campaign="other", step="welcome-email", variant="A")


def test_each_variant_counts_sent_clicked_and_booked_after_the_send(rt):
    with rt.sessions() as session, session.begin():
        _variant_test(session)
    with rt.sessions() as session:
        results = experiment_results(session, step_order={"journey": ["welcome-email", "stress-email"]})
    assert set(results) == {"journey", "other"}
    welcome, stress = results["journey"].experiments
    assert welcome.step == "welcome-email" and stress.step == "stress-email"
    assert [(v.variant, v.sent, v.clicked, v.booked) for v in welcome.variants] == [
        ("A", 40, 10, 4), ("B", 40, 20, 12)]
    # 4/40 against 12/40: pooled p = 16/80 = 0.2; se = sqrt(0.2 * 0.8 * (1/40 + 1/40)) = sqrt(0.008) = 0.089443
    # z = (0.30 - 0.10) / 0.089443 = 2.2361; p = 2 * (1 - Φ(2.2361)) = 0.0253
    assert welcome.p_value == pytest.approx(0.0253, abs=1e-4)
    assert welcome.verdict == "B books more, 95% confidence"
    assert [(v.variant, v.sent, v.booked) for v in stress.variants] == [("A", 2, 2), ("B", 3, 0)]
    assert stress.verdict == "not enough data yet" and stress.p_value is None
    assert results["journey"].holdout is None  # nobody in the holdout


def test_the_holdout_counts_bookings_after_enrolling_whatever_the_enrollment_became(rt):
    with rt.sessions() as session, session.begin():
        # Holdout 30: 3 booked (one after its enrollment completed: still booked), one booked before enrolling.
        add_people(session, START, 2, holdout=True, booked="after")
        add_person(session, START, holdout=True, booked="after", enrollment_status="completed")
        add_person(session, START, holdout=True, booked="before")
        add_people(session, START, 26, holdout=True)
        add_people(session, START, 15, booked="after")  # messaged 50: 15 booked
        add_people(session, START, 35)
        add_people(session, START, 5, campaign="other", booked="after")  # no holdout: no result
    with rt.sessions() as session:
        results = experiment_results(session)
    assert set(results) == {"journey"}
    holdout = results["journey"].holdout
    assert holdout is not None and results["journey"].experiments == []
    assert (holdout.holdout.enrolled, holdout.holdout.booked) == (30, 3)
    assert (holdout.messaged.enrolled, holdout.messaged.booked) == (50, 15)
    # 0.30 - 0.10 = 0.20; unpooled se = sqrt(0.1 * 0.9 / 30 + 0.3 * 0.7 / 50) = sqrt(0.0072) = 0.084853
    # 0.20 ± 1.96 * 0.084853 = 0.20 ± 0.166309 → [0.0337, 0.3663]; relative lift 0.20 / 0.10 = 2
    assert holdout.lift == pytest.approx(0.2)
    assert holdout.lift_ci_95 == (pytest.approx(0.0337, abs=1e-4), pytest.approx(0.3663, abs=1e-4))
    assert holdout.relative_lift == pytest.approx(2.0)
    # pooled p = 18/80 = 0.225; se = sqrt(0.225 * 0.775 * (1/30 + 1/50)) = sqrt(0.0093) = 0.096437
    # z = 0.20 / 0.096437 = 2.0739; p = 0.0381
    assert holdout.p_value == pytest.approx(0.0381, abs=1e-4)
    assert holdout.verdict == "messaged group books more, 95% confidence"
    shaped = results_as_dict(results["journey"])
    assert shaped["holdout"] == {
        "holdout": {"enrolled": 30, "booked": 3, "booking_rate": 0.1},
        "messaged": {"enrolled": 50, "booked": 15, "booking_rate": 0.3},
        "lift": 0.2, "lift_ci_95": [0.0337, 0.3663], "relative_lift": 2.0, "p_value": 0.0381,
        "verdict": "messaged group books more, 95% confidence"}
    assert "    lift +20.0 points (95% CI +3.4 to +36.6)" in format_results(results["journey"])


def test_a_holdout_with_nobody_messaged_yet_has_no_lift(rt):
    with rt.sessions() as session, session.begin():
        add_people(session, START, 2, holdout=True)
    with rt.sessions() as session:
        holdout = experiment_results(session, campaign_ids=["journey"])["journey"].holdout
    assert holdout is not None and holdout.lift is None and holdout.lift_ci_95 is None
    assert holdout.verdict == "not enough data yet"


def test_only_the_campaigns_asked_for(rt):
    with rt.sessions() as session, session.begin():
        _variant_test(session)
    with rt.sessions() as session:
        assert set(experiment_results(session, campaign_ids=["other"])) == {"other"}
        assert experiment_results(session, campaign_ids=["ketamine-consult"]) == {}
