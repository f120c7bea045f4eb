"""People walk the default ketamine-consult journey on a virtual clock, on SQLite and PostgreSQL,
through the real dispatcher, the real booking-link route and the real Twilio webhook: every branch
(interest, clicked but not booked, a question by text, a cancelled booking, the holdout, Spanish,
email only), each message with its time and A/B variant. Two workers at once, and a worker that dies
mid-journey, never send a step twice or skip one."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from patient_drip.contacts.bookings import BookingNotice, record_booking
from patient_drip.contacts.enrollment import enroll, set_paused
from patient_drip.content.journey import assign_variant, in_holdout
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import (BookingKind, Contact, Enrollment, EnrollmentStatus, MessageStatus, StaffTask,
                                 TaskKind)
from patient_drip.runtime import Runtime
from support.builders import ROOT, VirtualClock, add_contact, messages_for, next_due
from support.staff import make_client, runtime_for

TOKEN = "twilio-test-token"
WEBHOOK = "https://clinic.test/webhooks/twilio/sms"
PHONE = "+13125550142"
DAY = timedelta(days=1)
MAIN = ["welcome-email", "welcome-sms", "stress-brain-email", "checkin-sms", "how-it-works-email", "results-email",
        "reminder-sms", "consult-email"]
MAIN_DAYS = [0, 0, 2, 4, 5, 8, 10, 13]


@pytest.fixture
def jrt(database_url: str) -> Iterator[Runtime]:
    runtime = runtime_for(database_url, twilio_auth_token=TOKEN)
    yield runtime
    runtime.close()


@pytest.fixture
def web(jrt: Runtime, clock: VirtualClock) -> Iterator[TestClient]:
    with make_client(jrt, clock) as client:
        yield client


def person(rt: Runtime, now: datetime, *, interest: str = "", language: str = "en", phone: str | None = PHONE,
           email: str = "alex@example.com", consent: tuple[str, ...] = ("email", "sms")) -> int:
    """A contact with what the form asked (interest, language), enrolled now; returns the contact id."""
    contact_id = add_contact(rt, now, email=email, phone=phone, consent=consent, campaign=None)
    with rt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        assert contact is not None
        contact.interest, contact.language = interest, language
        enroll(session, contact, rt.campaign("ketamine-consult"), now, "test", source="web_form")
    return contact_id


def walk(rt: Runtime, clock: VirtualClock, events: dict[timedelta, Callable[[], None]] | None = None, *,
         workers: int = 1, limit: int = 400) -> None:
    """Dispatch from due time to due time until nothing is scheduled, doing each of `events` (what
    the person or staff do) at its offset from the start; `workers` dispatchers run each pass at once."""
    start = clock.now
    pending = sorted((events or {}).items())
    dispatchers = [Dispatcher(rt, f"w{number}") for number in range(workers)]
    for _ in range(limit):
        due = next_due(rt)
        if pending and (due is None or due > start + pending[0][0]):
            offset, action = pending.pop(0)
            clock.set(max(clock.now, start + offset))
            action()
            continue
        if due is None:
            return
        clock.set(max(clock.now, due))
        if workers == 1:
            dispatchers[0].run_once(clock.now)
            continue
        threads = [threading.Thread(target=d.run_once, args=(clock.now,)) for d in dispatchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    raise AssertionError("the journey did not finish")


def sent(rt: Runtime, contact_id: int, start: datetime) -> list[tuple[str, float, str | None]]:
    """(step, days after `start`, variant) of every message sent to the contact, in order."""
    return [(m.step_id, (m.sent_at - start) / DAY, m.variant) for m in messages_for(rt, contact_id)
            if m.status in (MessageStatus.SENT, MessageStatus.DELIVERED)]


def enrollment_of(rt: Runtime, contact_id: int) -> Enrollment:
    with rt.sessions() as session:
        found = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
        assert found is not None
        return found


def day2_variant(rt: Runtime, contact_id: int) -> str:
    step = rt.campaign("ketamine-consult").steps[rt.campaign("ketamine-consult").step_index("stress-brain-email")]
    variant = assign_variant(enrollment_of(rt, contact_id).id, step)
    assert variant is not None
    return variant.id


def click_booking_link(web: TestClient, rt: Runtime, contact_id: int) -> Callable[[], None]:
    """The person taps the booking link of their latest message (the real `/b/{token}` route)."""
    def act() -> None:
        body = [m.body_text for m in messages_for(rt, contact_id) if m.body_text][-1] or ""
        link = re.search(r"https://clinic\.test(/b/[\w.-]+)", body)
        assert link is not None, body
        response = web.get(link.group(1).rstrip("."), follow_redirects=False)
        assert response.status_code in (302, 303, 307), response.text
    return act


def text_in(web: TestClient, body: str, sid: str) -> Callable[[], None]:
    """The person texts us (the real Twilio webhook, signed)."""
    def act() -> None:
        params = {"From": PHONE, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
        signature = RequestValidator(TOKEN).compute_signature(WEBHOOK, params)
        response = web.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 200
    return act


def booking(rt: Runtime, clock: VirtualClock, contact_id: int, kind: BookingKind, external: str) -> Callable[[], None]:
    def act() -> None:
        with rt.sessions() as session, session.begin():
            record_booking(session, rt.tokens, rt.campaigns, BookingNotice(provider="calendly", kind=kind,
                                                                           external_id=external,
                                                                           contact_id=contact_id),
                           clock.now, "test")
    return act


# -- every branch of the default journey ---------------------------------------------------------------


@pytest.mark.parametrize("interest, welcome", [("", "welcome-email"), ("unsure", "welcome-email"),
                                               ("depression", "welcome-depression-email"),
                                               ("bipolar", "welcome-bipolar-email")])
def test_the_interest_chosen_on_the_form_picks_the_welcome_email(jrt, clock, interest, welcome):
    start = clock.now
    contact_id = person(jrt, start, interest=interest)
    walk(jrt, clock)
    expected = [(welcome if step == "welcome-email" else step, float(day),
                 day2_variant(jrt, contact_id) if step == "stress-brain-email" else None)
                for step, day in zip(MAIN, MAIN_DAYS)]
    assert sent(jrt, contact_id, start) == expected
    done = enrollment_of(jrt, contact_id)
    assert done.status == EnrollmentStatus.COMPLETED and done.holdout is False
    first = messages_for(jrt, contact_id)[0]
    if welcome == "welcome-depression-email":
        assert "major depressive disorder" in (first.body_text or "") and "bipolar disorder?" not in (first.body_text or "")
    if welcome == "welcome-bipolar-email":
        text = first.body_text or ""
        assert text.index("What is bipolar disorder?") < text.index("What is major depressive disorder")


def test_clicked_but_not_booked_gets_a_kind_text_instead_of_that_days_email(jrt, clock, web):
    start = clock.now
    contact_id = person(jrt, start, interest="depression")
    walk(jrt, clock, {DAY: click_booking_link(web, jrt, contact_id)})
    variant = day2_variant(jrt, contact_id)
    assert sent(jrt, contact_id, start) == [
        ("welcome-depression-email", 0.0, None), ("welcome-sms", 0.0, None),
        ("help-sms-2", 2.0, None),  # instead of the day-2 email ...
        ("stress-brain-email", 3.0, variant),  # ... which comes a day later
        ("checkin-sms", 4.0, None), ("how-it-works-email", 5.0, None), ("results-email", 8.0, None),
        ("reminder-sms", 10.0, None), ("consult-email", 13.0, None),
    ]
    help_text = next(m for m in messages_for(jrt, contact_id) if m.step_id == "help-sms-2").body_text or ""
    assert "anything we can help with" in help_text and "STOP" in help_text


def test_a_click_later_in_the_journey_is_answered_once(jrt, clock, web):
    start = clock.now
    contact_id = person(jrt, start)
    walk(jrt, clock, {timedelta(days=6): click_booking_link(web, jrt, contact_id),
                      timedelta(days=11): click_booking_link(web, jrt, contact_id)})
    steps = [step for step, _day, _variant in sent(jrt, contact_id, start)]
    assert steps.count("help-sms-2") + steps.count("help-sms-5") + steps.count("help-sms-8") == 1
    assert ("help-sms-8", 8.0, None) in sent(jrt, contact_id, start)
    assert ("results-email", 9.0, None) in sent(jrt, contact_id, start)


def test_email_only_people_are_not_asked_by_text_and_keep_their_education(jrt, clock, web):
    start = clock.now
    contact_id = person(jrt, start, consent=("email",))
    walk(jrt, clock, {DAY: click_booking_link(web, jrt, contact_id)})
    assert [(s, d) for s, d, _v in sent(jrt, contact_id, start)] == [
        (step, float(day)) for step, day in zip(MAIN, MAIN_DAYS) if not step.endswith("sms")]


def test_a_question_by_text_pauses_the_journey_until_staff_resume_it(jrt, clock, web):
    start = clock.now
    contact_id = person(jrt, start)

    def staff_resume() -> None:
        with jrt.sessions() as session, session.begin():
            enrollment = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
            assert enrollment is not None and enrollment.status == EnrollmentStatus.PAUSED
            task = session.scalar(select(StaffTask).where(StaffTask.kind == str(TaskKind.REPLY_PAUSED)))
            assert task is not None and task.done_at is None and task.contact_id == contact_id
            assert set_paused(session, jrt.campaigns, enrollment, False, clock.now, "staff:front@clinic.test")

    walk(jrt, clock, {timedelta(days=3): text_in(web, "Is this covered by insurance?", "SMq1"),
                      timedelta(days=6, hours=1): staff_resume})
    days = {step: day for step, day, _v in sent(jrt, contact_id, start)}
    assert "checkin-sms" in days and days["checkin-sms"] >= 6  # nothing went while paused (day 4, 5)
    assert days["how-it-works-email"] >= 6 and days["results-email"] == 8.0
    with jrt.sessions() as session:
        task = session.scalar(select(StaffTask).where(StaffTask.kind == str(TaskKind.REPLY_PAUSED)))
        assert task is not None and task.done_at is not None  # resuming closed it


def test_a_cancelled_booking_gets_the_rebook_path(jrt, clock):
    start = clock.now
    contact_id = person(jrt, start)
    walk(jrt, clock, {timedelta(days=3): booking(jrt, clock, contact_id, BookingKind.BOOKED, "ev1"),
                      timedelta(days=6): booking(jrt, clock, contact_id, BookingKind.CANCELLED, "ev1")})
    variant = day2_variant(jrt, contact_id)
    assert sent(jrt, contact_id, start) == [
        ("welcome-email", 0.0, None), ("welcome-sms", 0.0, None), ("stress-brain-email", 2.0, variant),
        ("rebook-sms", 6.0, None), ("rebook-email", 8.0, None),
    ]
    done = enrollment_of(jrt, contact_id)
    assert done.status == EnrollmentStatus.COMPLETED


def test_clicking_the_rebook_text_spares_the_rebook_email(jrt, clock, web):
    start = clock.now
    contact_id = person(jrt, start)
    walk(jrt, clock, {timedelta(days=3): booking(jrt, clock, contact_id, BookingKind.BOOKED, "ev2"),
                      timedelta(days=6): booking(jrt, clock, contact_id, BookingKind.CANCELLED, "ev2"),
                      timedelta(days=7): click_booking_link(web, jrt, contact_id)})
    steps = [step for step, _day, _variant in sent(jrt, contact_id, start)]
    assert steps[-1] == "rebook-sms" and "rebook-email" not in steps


def test_spanish_speakers_get_the_spanish_journey(jrt, clock):
    start = clock.now
    contact_id = person(jrt, start, interest="bipolar", language="es")
    walk(jrt, clock)
    messages = [m for m in messages_for(jrt, contact_id) if m.status == MessageStatus.SENT]
    assert [m.step_id for m in messages][:2] == ["welcome-bipolar-email", "welcome-sms"]
    assert all(m.language == "es" and m.template_name.startswith("es/") for m in messages)
    assert "trastorno bipolar" in (messages[0].body_text or "")
    assert "ALTO" in (messages[1].body_text or "") and "Hasta" in (messages[1].body_text or "")


def test_the_holdout_gets_only_the_welcome_messages(database_url, clock, tmp_path):
    folder = tmp_path / "campaigns"
    folder.mkdir()
    text = (ROOT / "campaigns" / "ketamine-consult.yaml").read_text(encoding="utf-8")
    assert "  percent: 0\n" in text
    (folder / "ketamine-consult.yaml").write_text(text.replace("  percent: 0\n", "  percent: 50\n"), encoding="utf-8")
    jrt = runtime_for(database_url, twilio_auth_token=TOKEN, campaigns_dir=folder)
    try:
        _holdout_walk(jrt, clock)
    finally:
        jrt.close()


def _holdout_walk(jrt: Runtime, clock: VirtualClock) -> None:
    assert jrt.campaign("ketamine-consult").holdout.percent == 50
    start = clock.now
    people = [person(jrt, start, phone=f"+1312555{n:04d}", email=f"p{n}@example.com") for n in range(12)]
    walk(jrt, clock)
    held = 0
    for contact_id in people:
        enrollment = enrollment_of(jrt, contact_id)
        steps = [step for step, _day, _variant in sent(jrt, contact_id, start)]
        assert enrollment.holdout == in_holdout(enrollment.id, jrt.campaign("ketamine-consult"))
        if enrollment.holdout:
            held += 1
            assert steps == ["welcome-email", "welcome-sms"]
        else:
            assert steps == MAIN
    assert 0 < held < len(people)


def test_the_ab_test_splits_people_by_weight_and_records_the_variant(jrt, clock):
    start = clock.now
    people = [person(jrt, start, phone=f"+1312556{n:04d}", email=f"q{n}@example.com") for n in range(20)]
    walk(jrt, clock, limit=2000)
    variants = []
    for contact_id in people:
        day2 = next(m for m in messages_for(jrt, contact_id) if m.step_id == "stress-brain-email")
        assert day2.variant == day2_variant(jrt, contact_id)
        assert day2.template_name == {"a": "email/02-stress-brain.html", "b": "email/02-stress-brain-b.html"}[day2.variant]
        assert day2.subject == {"a": "How stress changes the brain", "b": "A three-minute read for today"}[day2.variant]
        variants.append(day2.variant)
    assert set(variants) == {"a", "b"}


def test_re_entry_after_the_wait_sends_the_journey_again_as_a_new_entry(jrt, clock):
    start = clock.now
    contact_id = person(jrt, start)
    walk(jrt, clock)
    clock.set(start + timedelta(days=13 + 30, hours=1))
    with jrt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        again = enroll(session, contact, jrt.campaign("ketamine-consult"), clock.now, "test", source="web_form")
        assert again.entry == 2
    walk(jrt, clock)
    messages = messages_for(jrt, contact_id)
    assert [m.entry for m in messages].count(1) == 8 and [m.entry for m in messages].count(2) == 8
    assert [m.step_id for m in messages if m.entry == 2] == MAIN


# -- two workers, and a worker that dies --------------------------------------------------------------


def test_two_workers_at_once_never_send_a_step_twice_or_skip_one(jrt, clock, web):
    start = clock.now
    a = person(jrt, start, interest="depression", phone="+13125557001", email="a@example.com")
    b = person(jrt, start, interest="bipolar", phone="+13125557002", email="b@example.com")
    walk(jrt, clock, {DAY: click_booking_link(web, jrt, a)}, workers=2)
    steps_a = [step for step, _day, _variant in sent(jrt, a, start)]
    steps_b = [step for step, _day, _variant in sent(jrt, b, start)]
    assert steps_a == ["welcome-depression-email", "welcome-sms", "help-sms-2", *MAIN[2:]]
    assert steps_b == ["welcome-bipolar-email", *MAIN[1:]]
    assert all(m.status != MessageStatus.SKIPPED for m in messages_for(jrt, a) + messages_for(jrt, b))


def test_a_worker_that_dies_mid_journey_leaves_nothing_sent_twice_or_skipped(jrt, clock, monkeypatch):
    start = clock.now
    contact_id = person(jrt, start, interest="bipolar")
    real = Dispatcher._write_send_records
    deaths = {"left": 2}

    def dies_once_in_a_while(self, session, sendable, now):  # type: ignore[no-untyped-def]
        if sendable and deaths["left"] and any(item.step.id in ("stress-brain-email", "reminder-sms")
                                               for item in sendable):
            deaths["left"] -= 1
            raise SystemExit("worker killed")  # its claim stays until the lease runs out
        return real(self, session, sendable, now)

    monkeypatch.setattr(Dispatcher, "_write_send_records", dies_once_in_a_while)
    for _ in range(400):
        due = next_due(jrt)
        if due is None:
            break
        clock.set(max(clock.now, due))
        try:
            Dispatcher(jrt, f"w-{clock.now.timestamp()}").run_once(clock.now)
        except SystemExit:
            pass
    assert deaths["left"] == 0
    assert [step for step, _day, _variant in sent(jrt, contact_id, start)] == ["welcome-bipolar-email", *MAIN[1:]]
    assert enrollment_of(jrt, contact_id).status == EnrollmentStatus.COMPLETED
