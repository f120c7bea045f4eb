"""Timing versions of a campaign (`content.campaign_versions`) on a virtual clock, SQLite and PostgreSQL:
a new version applies to new enrollments only, a step turned off is skipped, bad timing is refused
with every problem at once, and each save is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from patient_drip.content.campaign_versions import (
    TimingInvalid, check_timing, campaign_for, delay_field, format_delay,
                                                    history, save_version, timing_of)
from patient_drip.content.simulate import simulate_campaign
from patient_drip.models import AuditEntry, Enrollment, MessageStatus
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact, messages_for, run_until_done

CAMPAIGN = "ketamine-consult"


def _form(rt: Runtime, **changed: str) -> tuple[dict[str, str], set[str]]:
    """The campaign page's form as it opens (every step's delay, every step on), with `changed` delays."""
    campaign = rt.campaign(CAMPAIGN)
    delays = {step.id: format_delay(step.delay) for step in campaign.steps}
    delays.update({key.replace("_", "-"): value for key, value in changed.items()})
    return delays, {step.id for step in campaign.steps if step.enabled}


def _save(rt: Runtime, clock: VirtualClock, delays: dict[str, str], enabled: set[str], note: str = "test") -> int:
    with rt.sessions() as session, session.begin():
        return save_version(session, rt.campaign(CAMPAIGN), delays, enabled, note, "marketing@clinic.test",
                            clock.now).version


def _sent_at(rt: Runtime, contact_id: int, step_id: str) -> timedelta:
    with rt.sessions() as session:
        enrolled_at = session.scalar(select(Enrollment.enrolled_at).where(Enrollment.contact_id == contact_id))
    message = next(m for m in messages_for(rt, contact_id) if m.step_id == step_id)
    assert message.sent_at is not None and enrolled_at is not None
    return message.sent_at - enrolled_at


def test_a_new_version_applies_to_new_enrollments_and_in_flight_ones_keep_theirs(rt, clock):
    before = add_contact(rt, clock.now, email="before@example.com", phone="+13125550142")
    delays, enabled = _form(rt, stress_brain_email="3d")
    assert _save(rt, clock, delays, enabled, "day 3 reads better") == 2
    after = add_contact(rt, clock.now, email="after@example.com", phone="+13125550143")
    run_until_done(rt, clock)
    assert _sent_at(rt, before, "stress-brain-email") == timedelta(days=2)  # kept version 1
    assert _sent_at(rt, after, "stress-brain-email") == timedelta(days=3)
    with rt.sessions() as session:
        versions = dict(session.execute(select(Enrollment.contact_id, Enrollment.campaign_version)).all())
    assert versions == {before: None, after: 2}


def test_an_in_flight_enrollment_keeps_its_delays_after_a_later_version(rt, clock):
    delays, enabled = _form(rt, checkin_sms="5d")
    _save(rt, clock, delays, enabled)
    on_two = add_contact(rt, clock.now)
    delays, enabled = _form(rt, checkin_sms="7d", how_it_works_email="7d")
    rt.refresh()
    assert _save(rt, clock, delays, enabled) == 3
    run_until_done(rt, clock)
    assert _sent_at(rt, on_two, "checkin-sms") == timedelta(days=5)  # version 2's, not version 3's 7d
    assert _sent_at(rt, on_two, "how-it-works-email") == timedelta(days=5)


def test_a_step_turned_off_is_skipped_for_new_enrollments_only(rt, clock):
    before = add_contact(rt, clock.now, email="before@example.com", phone="+13125550142")
    delays, enabled = _form(rt)
    _save(rt, clock, delays, enabled - {"checkin-sms"}, "too many texts")
    after = add_contact(rt, clock.now, email="after@example.com", phone="+13125550143")
    run_until_done(rt, clock)
    old = {m.step_id: m for m in messages_for(rt, before)}
    new = {m.step_id: m for m in messages_for(rt, after)}
    assert old["checkin-sms"].status == MessageStatus.SENT
    assert new["checkin-sms"].status == MessageStatus.SKIPPED
    assert new["checkin-sms"].last_error == "step turned off in version 2"
    assert new["checkin-sms"].sent_at is None
    assert new["how-it-works-email"].status == MessageStatus.SENT  # the sequence goes on after the skip
    assert _sent_at(rt, after, "how-it-works-email") == timedelta(days=5)


def test_bad_timing_is_refused_with_every_problem_at_once(rt, clock):
    delays, _enabled = _form(rt, welcome_email="soon", welcome_sms="-2h", results_email="1d")
    with pytest.raises(TimingInvalid) as caught:
        _save(rt, clock, delays, set(), "  ")
    problems = caught.value.problems
    # The default campaign is a journey: its order is its arrows, so a 1d results email is no order
    # problem there (`test_a_linear_campaign_keeps_its_delays_in_order` checks a linear one).
    assert set(problems) == {delay_field("welcome-email"), delay_field("welcome-sms"), "enabled", "note"}
    assert "30m" in problems[delay_field("welcome-email")]  # says which forms are accepted
    assert "negative" in problems[delay_field("welcome-sms")]
    with rt.sessions() as session:
        assert history(session, CAMPAIGN) == []


def test_saving_nothing_changed_or_from_a_stale_page_is_refused(rt, clock):
    delays, enabled = _form(rt)
    with pytest.raises(TimingInvalid, match="nothing changed"):
        _save(rt, clock, delays, enabled)
    changed, enabled = _form(rt, consult_email="14d")
    _save(rt, clock, changed, enabled)
    with rt.sessions() as session, session.begin(), pytest.raises(TimingInvalid, match="version 2 was saved"):
        save_version(session, rt.campaign(CAMPAIGN), _form(rt, consult_email="15d")[0], enabled, "late",
                     "other@clinic.test", clock.now, based_on=1)


def test_each_version_is_audited_and_kept_in_the_history(rt, clock):
    delays, enabled = _form(rt, reminder_sms="11d")
    _save(rt, clock, delays, enabled - {"welcome-sms"}, "give them a day more")
    with rt.sessions() as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "campaign_timing_changed"))
        records = history(session, CAMPAIGN)
    assert entry is not None and entry.actor == "marketing@clinic.test"
    assert entry.detail["version"] == 2 and entry.detail["note"] == "give them a day more"
    assert entry.detail["changes"] == ["welcome-sms: turned off", "reminder-sms: 10d → 11d"]
    assert [(r.number, r.author, r.note, list(r.changes)) for r in records] == [
        (2, "marketing@clinic.test", "give them a day more", ["welcome-sms: turned off", "reminder-sms: 10d → 11d"])]


def test_the_runtime_and_simulate_follow_the_version_in_force(rt, clock):
    delays, enabled = _form(rt, stress_brain_email="3d")
    _save(rt, clock, delays, enabled - {"reminder-sms"})
    rt.refresh()
    campaign = rt.campaign(CAMPAIGN)
    assert campaign.version == 2 and timing_of(campaign)["stress-brain-email"].delay == timedelta(days=3)
    assert campaign_for(rt.campaigns, CAMPAIGN, None) is not None
    assert campaign_for(rt.campaigns, CAMPAIGN, None).version == 1  # type: ignore[union-attr]
    assert campaign_for(rt.campaigns, CAMPAIGN, 9) is None  # not saved: held, never guessed
    offsets = {m.step: m.offset_seconds for m in simulate_campaign(rt.settings, campaign, renderer=rt.renderer)}
    assert offsets["stress-brain-email"] == 3 * 86400
    assert "reminder-sms" not in offsets


def test_a_process_that_has_not_refreshed_reads_a_new_version_when_it_has_a_session(rt, clock):
    delays, enabled = _form(rt, consult_email="14d")
    _save(rt, clock, delays, enabled)  # this runtime has not refreshed: its book knows version 1 only
    assert campaign_for(rt.campaigns, CAMPAIGN, 2) is None  # the dispatcher's path: held until its refresh
    with rt.sessions() as session:
        found = campaign_for(rt.campaigns, CAMPAIGN, 2, session)
    assert found is not None and found.version == 2
    assert timing_of(found)["consult-email"].delay == timedelta(days=14)


def test_a_linear_campaign_keeps_its_delays_in_order():
    from patient_drip.content.campaign import parse_campaign
    from support.builders import ROOT

    linear = parse_campaign("""
id: plain
steps:
  - {id: one, delay: 0m, channel: email, template: email/01-welcome.html}
  - {id: two, delay: 2d, channel: email, template: email/02-stress-brain.html}
  - {id: three, delay: 4d, channel: sms, template: sms/02-checkin.txt}
""", "campaigns/plain.yaml", ROOT / "templates")
    with pytest.raises(TimingInvalid) as caught:
        check_timing(linear, {"one": "0m", "two": "5d", "three": "4d"}, {"one", "two", "three"}, "later", None)
    assert set(caught.value.problems) == {delay_field("three")}
