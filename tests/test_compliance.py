"""Consent, quiet hours, frequency cap, booking, patient replies, erasure — the clinic's duties."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text
from twilio.request_validator import RequestValidator

from support.builders import add_contact, contact, make_settings, messages_for, run_until_done
from support.webhooks import booking_headers
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.content.rendering import sms_info
from patient_drip.models import (AuditEntry, ConsentRecord, Contact, Enrollment, ExitReason,
                    InboundMessage, MessageStatus, SmsConfirmation)
from patient_drip.contacts.privacy import consent_history, forget
from patient_drip.runtime import build_runtime
from patient_drip.web.app import create_app

TOKEN = "twilio-test-token"
BOOKING_SECRET = "booking-secret"
PHONE = "+13125550142"


@pytest.fixture
def rt(database_url):
    runtime = build_runtime(make_settings(database_url, twilio_auth_token=TOKEN, booking_webhook_secret=BOOKING_SECRET))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt, clock):
    with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as test_client:
        yield test_client


def sms_in(client, body: str, sid: str = "SM1", sender: str = PHONE):
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TOKEN).compute_signature("https://clinic.test/webhooks/twilio/sms", params)
    return client.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})


# -- consent -----------------------------------------------------------------------------------------


def test_no_sms_without_recorded_sms_consent(rt, clock):
    contact_id = add_contact(rt, clock.now, consent=("email",))
    run_until_done(rt, clock)
    sms = [m for m in messages_for(rt, contact_id) if m.channel == "sms"]
    assert sms and all(m.status == MessageStatus.SKIPPED and m.last_error == "no SMS consent" for m in sms)


def test_email_without_consent_only_where_the_campaign_allows(rt, clock):
    contact_id = add_contact(rt, clock.now, consent=("sms",))
    run_until_done(rt, clock)
    assert all(m.status == MessageStatus.SKIPPED for m in messages_for(rt, contact_id) if m.channel == "email")


def test_consent_records_keep_the_wording_version_shown(client, rt):
    client.post("/api/consultations", json={"first_name": "A", "phone": PHONE, "consent_sms": True})
    with rt.sessions() as session:
        assert session.scalar(select(ConsentRecord)) is None  # texts wait for the number's YES
        assert session.scalar(select(SmsConfirmation.form_wording_version)) == "sms-v2"  # the box ticked
    sms_in(client, "YES")
    with rt.sessions() as session:
        record = session.scalar(select(ConsentRecord))
        sent = session.scalar(select(SmsConfirmation.text))
        # The ledger holds the exact text the person answered YES to, which names STOP.
        assert record.wording_version == "sms-confirm-v2" and record.wording_text == sent and "STOP" in sent


def test_consent_export_lists_the_whole_history(rt, clock, client):
    contact_id = add_contact(rt, clock.now)
    sms_in(client, "STOP")
    with rt.sessions() as session:
        history = consent_history(session, session.get(Contact, contact_id))
    assert [(r["channel"], r["action"]) for r in history["records"]] == [
        ("email", "granted"), ("sms", "granted"), ("sms", "withdrawn")]
    assert history["records"][-1]["method"] == "sms_keyword"


# -- frequency cap -----------------------------------------------------------------------------------


def test_frequency_cap_moves_the_rest_to_the_next_day(rt, clock):
    contact_id = add_contact(rt, clock.now)
    clock.advance(timedelta(days=4, hours=2))  # a late worker: steps for days 0, 2 and 4 are all due
    run_until_done(rt, clock)
    by_day: dict = {}
    for message in messages_for(rt, contact_id):
        day = message.sent_at.astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago")).date()
        by_day[day] = by_day.get(day, 0) + 1
    assert max(by_day.values()) <= 2
    assert sum(by_day.values()) == 8


# -- booking -----------------------------------------------------------------------------------------




def test_booking_webhook_with_a_good_signature_ends_the_sequence(rt, clock, client):
    contact_id = add_contact(rt, clock.now)
    Dispatcher(rt, "w").run_once(clock.now)
    body = json.dumps({"email": "ALEX@example.com"}).encode()
    response = client.post("/webhooks/booking", content=body, headers=booking_headers(BOOKING_SECRET, body, clock.now))
    assert response.status_code == 200 and response.json()["enrollments_ended"] == 1
    run_until_done(rt, clock)
    assert len(messages_for(rt, contact_id)) == 2
    with rt.sessions() as session:
        assert session.scalar(select(Enrollment.exit_reason)) == ExitReason.BOOKED


@pytest.mark.parametrize("headers", [{}, {"X-Drip-Signature": "sha256=00"}, "wrong-secret"])
def test_booking_webhook_refuses_bad_or_missing_signatures(rt, clock, client, headers):
    add_contact(rt, clock.now)
    body = json.dumps({"email": "alex@example.com"}).encode()
    if headers == "wrong-secret":
        headers = booking_headers("not-the-secret", body, clock.now)
    else:  # a fresh timestamp, so the signature is what is refused
        headers = {"X-Drip-Timestamp": str(int(clock.now.timestamp())), **headers}
    response = client.post("/webhooks/booking", content=body, headers=headers)
    assert response.status_code == 403
    with rt.sessions() as session:
        assert session.scalar(select(Enrollment.status)) == "active"


def test_booked_from_the_cli(rt, clock, monkeypatch):
    from patient_drip.cli import main

    add_contact(rt, clock.now)
    monkeypatch.setenv("DRIP_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", rt.settings.secret_key.get_secret_value())  # the server's keys
    result = CliRunner().invoke(main, ["booked", "--phone", "(312) 555-0142"])
    assert result.exit_code == 0 and "1 sequence ended" in result.output


# -- replies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "stop", "Stop.", "STOPALL", "UNSUBSCRIBE", "cancel", "END", "quit", "REVOKE",
                                  "optout"])
def test_stop_keywords_opt_out_of_sms(rt, clock, client, word):
    contact_id = add_contact(rt, clock.now)
    response = sms_in(client, word)
    assert response.status_code == 200 and "<Message>" not in response.text  # Twilio confirms STOP itself
    person = contact(rt, contact_id)
    assert person.sms_consent is False and person.sms_blocked.startswith("opted_out")
    assert person.email_consent is True


def test_start_opts_back_in_only_with_earlier_consent(rt, clock, client):
    with_consent = add_contact(rt, clock.now)
    sms_in(client, "STOP", sid="SM1")
    sms_in(client, "START", sid="SM2")
    assert contact(rt, with_consent).sms_consent is True
    stranger = add_contact(rt, clock.now, email="b@example.com", phone="+13125550177", consent=("email",), campaign=None)
    sms_in(client, "YES", sid="SM3", sender="+13125550177")
    assert contact(rt, stranger).sms_consent is False


@pytest.mark.parametrize("word", ["HELP", "info"])
def test_help_replies_with_clinic_phone_and_opt_out(rt, clock, client, word):
    add_contact(rt, clock.now)
    reply = sms_in(client, word).text
    assert "Riverside Wellness" in reply and "+1 217 555 0100" in reply and "STOP" in reply


def test_crisis_reply_gets_988_immediately_and_is_flagged(rt, clock, client):
    contact_id = add_contact(rt, clock.now)
    reply = sms_in(client, "honestly i dont want to be alive anymore").text
    assert "988" in reply and "+1 217 555 0100" in reply
    with rt.sessions() as session:
        inbound = session.scalar(select(InboundMessage))
        assert inbound.crisis is True and inbound.handled_at is None and inbound.contact_id == contact_id
    assert contact(rt, contact_id).sms_consent is True  # a crisis is not an opt-out


def test_free_text_opt_out_is_confirmed_once(rt, clock, client):
    contact_id = add_contact(rt, clock.now)
    first = sms_in(client, "please stop texting me", sid="SM1").text
    second = sms_in(client, "remove me", sid="SM2").text
    assert "no more texts" in first and "<Message>" not in second
    assert contact(rt, contact_id).sms_consent is False


def test_a_question_is_kept_for_staff_and_acknowledged_once_a_day(rt, clock, client):
    add_contact(rt, clock.now)
    first = sms_in(client, "What does the consultation cost?", sid="SMq1").text
    answer = first.split("<Message>")[1].split("</Message>")[0].replace("&amp;", "&")
    assert answer.startswith("Riverside Wellness: Thanks for your message.")
    assert "within one business day" in answer and "Mon-Fri 9am-5pm" in answer and "+1 217 555 0100" in answer
    assert "STOP" in answer and sms_info(answer).segments <= 2
    assert not any(word in answer.lower() for word in ("ketamine", "depress", "bipolar"))
    assert "<Message>" not in sms_in(client, "And is it covered by insurance?", sid="SMq2").text  # once a day
    clock.advance(timedelta(hours=24, minutes=1))
    assert "<Message>" in sms_in(client, "Any news?", sid="SMq3").text
    with rt.sessions() as session:
        replies = session.scalars(select(InboundMessage).order_by(InboundMessage.id)).all()
        assert [r.classification for r in replies] == ["other"] * 3
        assert all(r.handled_at is None for r in replies)  # all still open in the staff inbox


def test_a_question_from_a_number_that_gets_no_texts_is_not_answered(rt, clock, client):
    add_contact(rt, clock.now)
    sms_in(client, "STOP", sid="SMs")
    assert "<Message>" not in sms_in(client, "What does the consultation cost?", sid="SMq").text
    assert "<Message>" not in sms_in(client, "who is this?", sid="SMu", sender="+13125550111").text  # no contact


def test_retried_webhook_is_stored_once(rt, clock, client):
    add_contact(rt, clock.now)
    sms_in(client, "hello", sid="SMsame")
    sms_in(client, "hello", sid="SMsame")
    with rt.sessions() as session:
        assert session.scalar(select(func.count(InboundMessage.id))) == 1


@pytest.mark.parametrize("how", ["missing", "forged", "wrong-url"])
def test_unsigned_or_forged_twilio_webhooks_are_refused(rt, clock, client, how):
    contact_id = add_contact(rt, clock.now)
    params = {"From": PHONE, "Body": "STOP", "MessageSid": "SMx"}
    headers = {}
    if how == "forged":
        headers["X-Twilio-Signature"] = RequestValidator("other-token").compute_signature(
            "https://clinic.test/webhooks/twilio/sms", params)
    elif how == "wrong-url":
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            "https://evil.test/webhooks/twilio/sms", params)
    response = client.post("/webhooks/twilio/sms", data=params, headers=headers)
    assert response.status_code == 403
    assert contact(rt, contact_id).sms_consent is True


# -- audit & erasure ---------------------------------------------------------------------------------


def test_audit_log_records_who_changed_what(rt, clock, client):
    add_contact(rt, clock.now)
    sms_in(client, "STOP")
    with rt.sessions() as session:
        actions = [(a.actor, a.action) for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert ("test", "enrolled") in actions and ("patient:sms", "consent_withdrawn") in actions


def test_erasure_leaves_no_email_phone_or_name_anywhere(rt, clock, client):
    contact_id = add_contact(rt, clock.now, first_name="Zebediah")
    client.post("/api/consultations", json={"first_name": "Zebediah", "email": "alex@example.com", "phone": PHONE,
                                            "consent_sms": True}, headers={"user-agent": "UniqueAgent/1.0"})
    run_until_done(rt, clock)
    sms_in(client, "thanks Zebediah here")
    with rt.sessions() as session, session.begin():
        forget(session, rt.suppression_key, session.get(Contact, contact_id), clock.now, "test")
    needles = ["alex@example.com", "3125550142", "Zebediah", "UniqueAgent"]
    inspector = inspect(rt.engine)
    with rt.engine.connect() as connection:
        for table in inspector.get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                dump = " ".join(str(value) for value in row)
                for needle in needles:
                    assert needle not in dump, f"{needle} left in {table}"
    # never contacted again: re-submitting the form does not make them reachable
    client.post("/api/consultations", json={"first_name": "Z", "email": "alex@example.com", "consent_email": True})
    with rt.sessions() as session:
        again = session.scalar(select(Contact).where(Contact.email == "alex@example.com"))
        assert again.email_blocked.startswith("suppressed")
    # anonymous counts survive
    from patient_drip.dispatch.funnel import campaign_summaries

    with rt.sessions() as session:
        summary = campaign_summaries(session, rt.campaigns)[0]
    assert sum(step.sent for step in summary.steps) == 8
