"""Journey rules beyond the default journey, on both databases through the real dispatcher: an A/B
test of timing, a journey that a crisis reply ends instead of pausing, a journey that waits for a
booking instead of ending on it, and a re-entry refused before its time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from patient_drip.contacts.bookings import BookingNotice, record_booking
from patient_drip.contacts.enrollment import AlreadyEnrolled, enroll, pause_for_crisis
from patient_drip.content.journey import assign_variant
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import BookingKind, Contact, Enrollment, EnrollmentStatus, ExitReason, MessageStatus
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact, messages_for, run_until_done
from support.staff import runtime_for

DAY = timedelta(days=1)
JOURNEY = """
id: lab
name: Lab
exit_on: [unsubscribed, crisis]
reentry: {allowed: true, after: 30d}
steps:
  - {id: hello, delay: 0m, channel: email, template: email/01-welcome.html}
  - id: timed
    delay: 2d
    channel: email
    template: email/02-stress-brain.html
    variants:
      - {id: early, weight: 50}
      - {id: late, weight: 50, delay: 3d}
  - id: wait-booking
    wait: {for: booked, timeout: 5d}
    on_event: thanks
  - {id: nudge, channel: email, template: email/03-how-it-works.html}
  - {id: end, exit: no-booking}
  - {id: thanks, channel: email, template: email/05-consultation.html}
"""


@pytest.fixture
def lab(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "lab.yaml").write_text(JOURNEY, encoding="utf-8")
    runtime = runtime_for(database_url, campaigns_dir=folder)
    yield runtime
    runtime.close()


def people(rt: Runtime, now, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [add_contact(rt, now, email=f"p{n}@example.com", phone=None, consent=("email",), campaign="lab")
            for n in range(count)]


def enrollment_of(rt: Runtime, contact_id: int) -> Enrollment:
    with rt.sessions() as session:
        found = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
        assert found is not None
        return found


def test_an_ab_test_of_timing_sends_each_variant_at_its_own_delay(lab, clock: VirtualClock):
    start = clock.now
    contact_ids = people(lab, start, 10)
    run_until_done(lab, clock, limit=400)
    step = lab.campaign("lab").steps[1]
    seen = set()
    for contact_id in contact_ids:
        timed = next(m for m in messages_for(lab, contact_id) if m.step_id == "timed")
        variant = assign_variant(enrollment_of(lab, contact_id).id, step)
        assert variant is not None and timed.variant == variant.id
        assert timed.sent_at - start == {"early": 2 * DAY, "late": 3 * DAY}[variant.id]
        seen.add(variant.id)
        # No booking: the wait times out 5 days after the timed email, the nudge goes, the journey ends.
        nudge = next(m for m in messages_for(lab, contact_id) if m.step_id == "nudge")
        assert nudge.sent_at - timed.sent_at == 5 * DAY
        assert enrollment_of(lab, contact_id).status == EnrollmentStatus.COMPLETED
    assert seen == {"early", "late"}


def test_a_journey_that_waits_for_a_booking_goes_on_when_it_comes(lab, clock: VirtualClock):
    start = clock.now
    contact_id = people(lab, start, 1)[0]
    Dispatcher(lab, "w").run_once(clock.now)  # the welcome
    clock.set(start + 4 * DAY)
    Dispatcher(lab, "w").run_once(clock.now)  # the timed email (day 2 or 3) goes; then it waits for a booking
    with lab.sessions() as session, session.begin():
        record_booking(session, lab.tokens, lab.campaigns, BookingNotice(provider="calendly", kind=BookingKind.BOOKED,
                                                                        external_id="b1", contact_id=contact_id),
                       clock.now, "test")
    assert enrollment_of(lab, contact_id).status == EnrollmentStatus.ACTIVE  # `booked` is not in exit_on
    assert enrollment_of(lab, contact_id).next_due_at == clock.now  # woken at once, not at the timeout
    run_until_done(lab, clock, limit=50)
    steps = [m.step_id for m in messages_for(lab, contact_id) if m.status == MessageStatus.SENT]
    assert steps == ["hello", "timed", "thanks"]
    thanks = messages_for(lab, contact_id)[-1]
    assert thanks.sent_at == start + 4 * DAY


def test_a_crisis_reply_ends_a_journey_that_says_so(lab, clock: VirtualClock):
    contact_id = people(lab, clock.now, 1)[0]
    Dispatcher(lab, "w").run_once(clock.now)
    with lab.sessions() as session, session.begin():
        assert pause_for_crisis(session, lab.campaigns, contact_id, inbound_id=1, now=clock.now, actor="system:crisis") == 1
    done = enrollment_of(lab, contact_id)
    assert done.status == EnrollmentStatus.EXITED and done.exit_reason == ExitReason.CRISIS
    # ... and it does not start again by itself, even after the re-entry wait.
    clock.set(clock.now + 40 * DAY)
    with lab.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        with pytest.raises(AlreadyEnrolled, match="ended as crisis"):
            enroll(session, contact, lab.campaign("lab"), clock.now, "test")


def test_re_entry_is_refused_before_its_time_and_says_when(lab, clock: VirtualClock):
    contact_id = people(lab, clock.now, 1)[0]
    run_until_done(lab, clock, limit=400)
    ended = enrollment_of(lab, contact_id).ended_at
    clock.set(ended + 10 * DAY)
    with lab.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        with pytest.raises(AlreadyEnrolled, match="they may enter again from"):
            enroll(session, contact, lab.campaign("lab"), clock.now, "test")
    clock.set(ended + 31 * DAY)
    with lab.sessions() as session, session.begin():
        again = enroll(session, session.get(Contact, contact_id), lab.campaign("lab"), clock.now, "test")
        assert again.entry == 2 and again.status == EnrollmentStatus.ACTIVE


def test_an_import_computes_the_first_step_per_person_when_its_timing_is_an_ab_test(tmp_path):
    from patient_drip.contacts.enrollment import NO_PERIOD, first_step, first_step_period
    from patient_drip.content.campaign import parse_campaign
    from support.builders import ROOT, START

    text = JOURNEY.replace("  - {id: hello, delay: 0m, channel: email, template: email/01-welcome.html}\n", """\
  - id: hello
    channel: email
    template: email/01-welcome.html
    variants:
      - {id: now, weight: 50}
      - {id: later, weight: 50, delay: 1h}
""")
    campaign = parse_campaign(text, "campaigns/lab.yaml", ROOT / "templates")
    assert first_step_period(campaign, phone=None) == NO_PERIOD
    dues = {first_step(campaign, "America/Chicago", START, enrollment_id, phone=None).due - START
            for enrollment_id in range(1, 30)}
    assert dues == {timedelta(0), timedelta(hours=1)}


LISTEN = """
id: listen
name: Listen
frequency_cap_per_day: 5
pause_on_reply: true
steps:
  - {id: hello, channel: email, template: email/01-welcome.html}
  - id: wait-open
    wait: {for: opened, timeout: 3d}
    on_event: opened-thanks
  - {id: not-opened, channel: email, template: email/03-how-it-works.html, next: ask}
  - {id: opened-thanks, channel: email, template: email/02-stress-brain.html}
  - {id: ask, channel: sms, template: sms/01-welcome.txt}
  - id: wait-reply
    wait: {for: replied, timeout: 2d}
    on_event: done
  - {id: reminder, channel: sms, template: sms/03-reminder.txt}
  - {id: done, exit: completed}
"""
TWILIO_TOKEN = "journey-twilio-token"


def test_an_open_and_a_reply_through_the_real_webhooks_end_the_waits_for_them(database_url, tmp_path, clock):
    """The SendGrid event webhook (signed) and the Twilio webhook (signed) wake the journey waiting
    for exactly that; a reply that answers a wait for a reply does not pause the journey."""
    import json

    from twilio.request_validator import RequestValidator

    from patient_drip.models import StaffTask
    from patient_drip.providers.sandbox import SendGridSigner
    from support.staff import make_client
    from support.webhooks import sendgrid_headers

    signer = SendGridSigner()
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "listen.yaml").write_text(LISTEN, encoding="utf-8")
    rt = runtime_for(database_url, campaigns_dir=folder, twilio_auth_token=TWILIO_TOKEN,
                     sendgrid_webhook_public_key=signer.public_key)
    try:
        start = clock.now
        contact_id = add_contact(rt, start, campaign="listen")
        dispatcher = Dispatcher(rt, "w")
        dispatcher.run_once(clock.now)  # hello; then it waits up to 3 days for an open
        hello = messages_for(rt, contact_id)[0]
        assert enrollment_of(rt, contact_id).next_due_at == start + 3 * DAY
        with make_client(rt, clock) as web:
            clock.set(start + timedelta(hours=1))
            body = json.dumps([{"event": "open", "email": "alex@example.com", "drip_message_id": str(hello.id),
                                "timestamp": int(clock.now.timestamp()), "sg_event_id": "open-1"}]).encode()
            answer = web.post("/webhooks/sendgrid/events", content=body, headers=sendgrid_headers(signer, body))
            assert answer.status_code == 200, answer.text
            assert enrollment_of(rt, contact_id).next_due_at == clock.now  # woken by the open
            dispatcher.run_once(clock.now)  # opened-thanks and the text go
            steps = [m.step_id for m in messages_for(rt, contact_id) if m.status == MessageStatus.SENT]
            assert steps == ["hello", "opened-thanks", "ask"]
            clock.set(start + timedelta(hours=2))
            params = {"From": "+13125550142", "To": "+15005550006", "Body": "Does it hurt?", "MessageSid": "SMj1",
                      "AccountSid": "ACx"}
            signature = RequestValidator(TWILIO_TOKEN).compute_signature("https://clinic.test/webhooks/twilio/sms",
                                                                         params)
            assert web.post("/webhooks/twilio/sms", data=params,
                            headers={"X-Twilio-Signature": signature}).status_code == 200
        woken = enrollment_of(rt, contact_id)
        assert woken.status == EnrollmentStatus.ACTIVE and woken.next_due_at == clock.now  # answered, not paused
        dispatcher.run_once(clock.now)
        done = enrollment_of(rt, contact_id)
        assert done.status == EnrollmentStatus.COMPLETED
        assert "reminder" not in [m.step_id for m in messages_for(rt, contact_id)]
        with rt.sessions() as session:
            assert session.scalar(select(StaffTask.id)) is None  # no "paused by a reply" task
    finally:
        rt.close()
