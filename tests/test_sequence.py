"""A contact walks the whole ketamine-consult sequence on a virtual clock (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.contacts.enrollment import AlreadyEnrolled, enroll, unsubscribe
from support.builders import add_contact, messages_for, run_until_done
from patient_drip.models import Channel, ConsentMethod, Contact, Enrollment, EnrollmentStatus, ExitReason, MessageStatus

EXPECTED = [  # step, channel, day offset
    ("welcome-email", "email", 0),
    ("welcome-sms", "sms", 0),
    ("stress-brain-email", "email", 2),
    ("checkin-sms", "sms", 4),
    ("how-it-works-email", "email", 5),
    ("results-email", "email", 8),
    ("reminder-sms", "sms", 10),
    ("consult-email", "email", 13),
]


def test_whole_sequence_is_sent_once_in_order_at_the_right_times(rt, clock):
    enrolled_at = clock.now
    contact_id = add_contact(rt, clock.now)
    summary = run_until_done(rt, clock)
    messages = messages_for(rt, contact_id)
    assert [(m.step_id, m.channel) for m in messages] == [(s, c) for s, c, _ in EXPECTED]
    assert all(m.status == MessageStatus.SENT for m in messages)
    for message, (_step, _channel, day) in zip(messages, EXPECTED):
        assert message.sent_at == enrolled_at + timedelta(days=day), message.step_id
        local = message.sent_at.astimezone(ZoneInfo("America/Chicago"))
        assert 9 <= local.hour < 20
        assert "https://clinic.test/b/" in (message.body_text or "")
    emails = [m for m in messages if m.channel == "email"]
    assert all("988" in m.body_text and "12 River Road" in m.body_text for m in emails)
    assert all("https://clinic.test/u/" in m.body_html for m in emails)
    assert "STOP" in messages[1].body_text and "HELP" in messages[1].body_text
    assert "60-80%" in messages[5].body_text
    assert summary.outcomes["sent"] == 8
    with rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == EnrollmentStatus.COMPLETED and enrollment.next_due_at is None


def test_dispatch_again_at_the_same_moment_sends_nothing_more(rt, clock):
    contact_id = add_contact(rt, clock.now)
    first = Dispatcher(rt, "w1").run_once(clock.now)
    second = Dispatcher(rt, "w2").run_once(clock.now)
    assert first.outcomes["sent"] == 2
    assert second.claimed == 0
    assert len(messages_for(rt, contact_id)) == 2


def test_unsubscribe_in_the_middle_stops_the_rest(rt, clock):
    contact_id = add_contact(rt, clock.now)
    dispatcher = Dispatcher(rt, "w")
    dispatcher.run_once(clock.now)
    clock.advance(timedelta(days=2))
    dispatcher.run_once(clock.now)
    assert len(messages_for(rt, contact_id)) == 3
    with rt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        unsubscribe(session, rt.campaigns, contact, [Channel.EMAIL, Channel.SMS], ConsentMethod.STAFF, clock.now, "test")
    run_until_done(rt, clock)
    assert len(messages_for(rt, contact_id)) == 3
    with rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == ExitReason.UNSUBSCRIBED


def test_sms_only_unsubscribe_keeps_emails_and_records_skips(rt, clock):
    contact_id = add_contact(rt, clock.now)
    with rt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        unsubscribe(session, rt.campaigns, contact, [Channel.SMS], ConsentMethod.STAFF, clock.now, "test")
    run_until_done(rt, clock)
    messages = messages_for(rt, contact_id)
    sent = [m for m in messages if m.status == MessageStatus.SENT]
    assert {m.channel for m in sent} == {"email"} and len(sent) == 5
    skipped = [m for m in messages if m.status == MessageStatus.SKIPPED]
    assert {m.channel for m in skipped} == {"sms"} and len(skipped) == 3


def test_second_enrollment_in_the_same_campaign_is_refused(rt, clock):
    contact_id = add_contact(rt, clock.now)
    with rt.sessions() as session:
        contact = session.get(Contact, contact_id)
        with pytest.raises(AlreadyEnrolled, match="already enrolled"):
            enroll(session, contact, rt.campaign("ketamine-consult"), clock.now, "test")


def test_email_only_contact_gets_emails_and_sms_steps_are_skipped(rt, clock):
    enrolled_at = clock.now
    contact_id = add_contact(rt, clock.now, phone=None, consent=("email",))
    run_until_done(rt, clock)
    messages = messages_for(rt, contact_id)
    sent = [m for m in messages if m.status == MessageStatus.SENT]
    assert [m.channel for m in sent] == ["email"] * 5
    # a skipped SMS step must not pull the next email forward
    assert [(m.sent_at - enrolled_at).days for m in sent] == [0, 2, 5, 8, 13]
    assert all(m.last_error == "no phone number" for m in messages if m.status == MessageStatus.SKIPPED)


def test_enrollment_outside_the_window_waits_for_the_morning(rt, clock):
    clock.set(clock.now.replace(hour=4))  # 22:00 the evening before in Chicago
    contact_id = add_contact(rt, clock.now)
    assert Dispatcher(rt, "w").run_once(clock.now).outcomes["sent"] == 0
    run_until_done(rt, clock)
    first = messages_for(rt, contact_id)[0]
    local = first.sent_at.astimezone(ZoneInfo("America/Chicago"))
    assert local.hour == 9 and local.minute < 20  # spread over the first 20 minutes
