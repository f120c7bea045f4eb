"""SMS double opt-in and the confirmation link, against a live server and the provider sandbox: a new
number gets one "Reply YES" text and nothing else until its YES (through the signed Twilio webhook)
records consent with the text it answered; at most one such text per number, ever; a STOP from an
unknown number is remembered; a change to a known contact applies only through the signed,
expiring, single-use link emailed to the address on file."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from patient_drip.contacts.changes import parse_contact_input
from patient_drip.contacts.double_opt_in import STRANGER_STOP, confirmation_text
from patient_drip.contacts.fields import ZoneSource
from patient_drip.contacts.intake import IntakeRequest, process_leftovers, process_received, record_request
from patient_drip.contacts.enrollment import unsubscribe
from patient_drip.contacts.privacy import forget
from patient_drip.content.rendering import sms_info
from patient_drip.models import (AuditEntry, Channel, ConsentMethod, ConsentRecord, Contact, Enrollment,
                                 PendingChange, SmsConfirmation, Suppression)
from patient_drip.runtime import Runtime
from support.builders import ROOT, add_contact, contact, run_until_done
from support.intake import confirmation_link, emails_to, live_clinic, outbound_texts, post_request, processed
from support.live import wait_until

EMAIL, PHONE = "sam@example.com", "+13125550177"


@pytest.fixture
def clinic(database_url, sandbox, clock) -> Iterator[tuple[Runtime, str]]:
    with live_clinic(database_url, sandbox, clock, form_limit=100) as live:
        yield live


def _confirmation(rt: Runtime) -> str:
    return confirmation_text(ROOT / "policy", rt.settings.sms_brand).text


def _sequence_texts(sandbox, rt: Runtime, number: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The texts to `number` that are neither the confirmation nor the answer to YES."""
    return [t for t in outbound_texts(sandbox, number) if "Reply YES" not in t and "Thanks, you will get" not in t]


def _contact_id(rt: Runtime, **where: str) -> int:
    with rt.sessions() as session:
        column = Contact.email if "email" in where else Contact.phone
        return int(session.scalar(select(Contact.id).where(column == next(iter(where.values())))))


def test_a_new_number_gets_one_discreet_confirmation_text_and_nothing_else_without_yes(clinic, sandbox, clock):
    rt, base = clinic
    assert post_request(base, first_name="Sam", email=EMAIL, phone=PHONE, consent_email="yes",
                        consent_sms="yes").status_code == 202
    processed(rt)
    run_until_done(rt, clock)  # the whole two weeks
    wait_until(lambda: len(emails_to(sandbox, EMAIL)) == 5)
    texts = outbound_texts(sandbox, PHONE)
    assert texts == [_confirmation(rt)]  # the first and only text
    text = texts[0]
    assert text.startswith("Riverside Wellness: Reply YES to get texts from Riverside Wellness")
    assert "STOP" in text and "HELP" in text and "Msg & data rates may apply" in text
    assert not any(word in text.lower() for word in ("ketamine", "depress", "bipolar"))
    assert sms_info(text).segments <= 2
    assert contact(rt, _contact_id(rt, email=EMAIL)).sms_consent is False
    assert len(emails_to(sandbox, EMAIL)) == 5  # the email part of the sequence went on meanwhile


def test_yes_through_the_signed_webhook_records_the_text_answered_and_starts_the_texts(clinic, sandbox, clock):
    rt, base = clinic
    post_request(base, first_name="Sam", email=EMAIL, phone=PHONE, consent_email="yes", consent_sms="yes")
    processed(rt)
    wait_until(lambda: outbound_texts(sandbox, PHONE) == [_confirmation(rt)])
    reply = sandbox.send_inbound_sms(PHONE, "Yes")
    assert reply.status_code == 200 and "Thanks, you will get texts" in reply.text and "STOP" in reply.text
    person = contact(rt, _contact_id(rt, email=EMAIL))
    assert person.sms_consent is True
    with rt.sessions() as session:
        grant = session.scalar(select(ConsentRecord).where(ConsentRecord.channel == "sms"))
        confirmation = session.scalar(select(SmsConfirmation))
        assert (grant.action, grant.method, grant.wording_version) == ("granted", "sms_confirmation", "sms-confirm-v2")
        assert grant.wording_text == _confirmation(rt)  # exactly what the person answered YES to
        assert f"inbound #{confirmation.confirmed_inbound_id}" in grant.note  # the YES is the proof
        assert confirmation.confirmed_at is not None and confirmation.form_wording_version == "sms-v2"
        assert "sms_confirmed" in session.scalars(select(AuditEntry.action)).all()
    run_until_done(rt, clock)
    assert len(_sequence_texts(sandbox, rt, PHONE)) == 3  # welcome, check-in, reminder
    assert outbound_texts(sandbox, PHONE).count(_confirmation(rt)) == 1


def test_an_sms_only_request_starts_its_sequence_on_yes(clinic, sandbox, clock):
    rt, base = clinic
    post_request(base, first_name="Sam", phone=PHONE, consent_sms="yes")
    processed(rt)
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Enrollment.id))) == 0  # nothing to send it yet
    run_until_done(rt, clock)
    assert outbound_texts(sandbox, PHONE) == [_confirmation(rt)]
    sandbox.send_inbound_sms(PHONE, "YES")
    with rt.sessions() as session:
        assert session.scalar(select(Enrollment.source)) == "sms_confirmation"
    run_until_done(rt, clock)
    assert len(_sequence_texts(sandbox, rt, PHONE)) == 3


def test_a_number_gets_at_most_one_confirmation_text_ever(clinic, sandbox, clock):
    rt, base = clinic
    post_request(base, first_name="Sam", email=EMAIL, phone=PHONE, consent_sms="yes")
    processed(rt)
    wait_until(lambda: len(outbound_texts(sandbox, PHONE)) == 1)
    # Again, as the same person, as another address, and after the record was erased.
    post_request(base, first_name="Sam", phone=PHONE, consent_sms="yes")
    post_request(base, first_name="Kim", email="kim@example.com", phone=PHONE, consent_sms="yes")
    processed(rt)
    with rt.sessions() as session, session.begin():
        forget(session, rt.suppression_key, session.get(Contact, _contact_id(rt, email=EMAIL)), clock.now, "test")
        session.execute(Suppression.__table__.delete())  # even if the erasure's suppression were lifted
    post_request(base, first_name="Sam", email="sam.new@example.com", phone=PHONE, consent_sms="yes")
    processed(rt)
    run_until_done(rt, clock)
    assert outbound_texts(sandbox, PHONE) == [_confirmation(rt)]
    with rt.sessions() as session:
        assert session.scalar(select(func.count(SmsConfirmation.id))) == 1


def test_simultaneous_requests_for_one_new_number_send_one_text_and_no_error(clinic, sandbox, clock):
    rt, base = clinic
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: post_request(base, first_name="Sam", email=f"sam{i}@example.com",
                                                       phone=PHONE, consent_sms="yes"), range(6)))
    assert [a.status_code for a in answers] == [202] * 6
    processed(rt)
    run_until_done(rt, clock)
    assert outbound_texts(sandbox, PHONE) == [_confirmation(rt)]
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id)).where(Contact.phone == PHONE)) == 1


def test_a_stop_from_an_unknown_number_is_remembered_when_it_signs_up_later(clinic, sandbox, clock):
    rt, base = clinic
    assert sandbox.send_inbound_sms(PHONE, "STOP").status_code == 200
    with rt.sessions() as session:
        assert session.scalar(select(Suppression.reason).where(Suppression.channel == "sms")) == STRANGER_STOP
    post_request(base, first_name="Sam", email=EMAIL, phone=PHONE, consent_email="yes", consent_sms="yes")
    processed(rt)
    run_until_done(rt, clock)
    assert outbound_texts(sandbox, PHONE) == []  # not even the confirmation text
    person = contact(rt, _contact_id(rt, email=EMAIL))
    assert person.sms_consent is False and person.sms_block_reason == "suppressed"
    # Only the number itself can undo its STOP: its START is the new confirmation.
    sandbox.send_inbound_sms(PHONE, "START")
    person = contact(rt, _contact_id(rt, email=EMAIL))
    assert person.sms_consent is True and person.sms_block_reason is None
    with rt.sessions() as session:
        grant = session.scalar(select(ConsentRecord).where(ConsentRecord.channel == "sms"))
        assert (grant.method, grant.wording_version) == ("sms_confirmation", "sms-v2")  # the box they ticked
        assert session.scalar(select(func.count(Suppression.id))) == 0


# -- the confirmation link --------------------------------------------------------------------------


@pytest.fixture
def asked(clinic, sandbox, clock) -> tuple[Runtime, int, str]:  # type: ignore[no-untyped-def]
    """A patient who unsubscribed from emails and has no phone; then a request in their name asks
    for a new name, a phone, emails again and texts. Returns (runtime, contact id, the emailed link)."""
    rt, base = clinic
    patient = add_contact(rt, clock.now, email=EMAIL, phone=None, consent=("email",), first_name="Sam")
    with rt.sessions() as session, session.begin():
        unsubscribe(session, rt.campaigns, session.get(Contact, patient), [Channel.EMAIL],
                    ConsentMethod.UNSUBSCRIBE_PAGE, clock.now, "patient:preferences")
    post_request(base, first_name="Samantha", email=EMAIL, phone=PHONE, consent_email="yes", consent_sms="yes")
    processed(rt)
    wait_until(lambda: any("/confirm/" in (e.get("text") or "") for e in emails_to(sandbox, EMAIL)))
    return rt, patient, confirmation_link(sandbox, EMAIL)


def _state(rt: Runtime, contact_id: int) -> tuple[object, ...]:
    person = contact(rt, contact_id)
    with rt.sessions() as session:
        ledger = session.scalar(select(func.count(ConsentRecord.id)))
    return person.first_name, person.phone, person.email_consent, person.email_block_reason, person.sms_consent, ledger


def test_the_emailed_link_shows_the_request_and_only_its_button_applies_it(asked, sandbox):
    rt, patient, link = asked
    before = _state(rt, patient)
    page = httpx.get(link)
    assert page.status_code == 200 and "Samantha" in page.text and "ending in 0177" in page.text
    assert _state(rt, patient) == before  # a mail scanner opening the link changes nothing
    done = httpx.post(link, headers={"user-agent": "Patient browser"})
    assert done.status_code == 200 and "confirmed" in done.text
    person = contact(rt, patient)
    assert (person.first_name, person.phone, person.email_consent, person.email_block_reason) == (
        "Samantha", PHONE, True, None)
    assert person.sms_consent is False  # an email link never starts texts: the number confirms them
    with rt.sessions() as session:
        grant = session.scalars(select(ConsentRecord).order_by(ConsentRecord.id)).all()[-1]
        assert (grant.channel, grant.method, grant.wording_version) == ("email", "email_confirmation", "email-v1")
        assert grant.ip_address == "127.0.0.1" and grant.user_agent == "Patient browser"
        assert "asked on the web form" in grant.note and "confirmed by the emailed link" in grant.note
        assert "change_confirmed" in session.scalars(select(AuditEntry.action)).all()
    wait_until(lambda: outbound_texts(sandbox, PHONE) == [_confirmation(rt)])  # the new number's one text


def test_a_used_link_cannot_apply_again(asked):
    rt, patient, link = asked
    assert httpx.post(link).status_code == 200
    after = _state(rt, patient)
    again = httpx.post(link)
    assert again.status_code == 409 and "already confirmed" in again.text
    assert httpx.get(link).status_code == 200 and _state(rt, patient) == after


def test_an_expired_link_changes_nothing(asked, clock):
    rt, patient, link = asked
    before = _state(rt, patient)
    clock.advance(timedelta(hours=rt.settings.confirmation_hours, seconds=1))
    assert httpx.get(link).status_code == 410
    refused = httpx.post(link)
    assert refused.status_code == 410 and "expired" in refused.text
    assert _state(rt, patient) == before


@pytest.mark.parametrize("tamper", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
                                    lambda t: ("Mw" if t.startswith("Mg") else "Mg") + t[2:], lambda t: t.split(".")[0]],
                         ids=["signature", "payload", "unsigned"])
def test_a_tampered_link_is_not_found_and_changes_nothing(asked, tamper):
    rt, patient, link = asked
    before = _state(rt, patient)
    base, token = link.rsplit("/", 1)
    for method in (httpx.get, httpx.post):
        assert method(f"{base}/{tamper(token)}").status_code == 404
    assert _state(rt, patient) == before


def test_a_request_left_unprocessed_by_a_stopped_process_is_picked_up_by_the_sweep(rt, clock):
    """The answer went out, then the process stopped before acting on the request: the scheduler's
    sweep acts on it once (and a second sweep, or a late original, does nothing more)."""
    request = IntakeRequest(parse_contact_input({"email": EMAIL, "first_name": "Sam"}, rt.settings.clinic_timezone,
                                                zone_source=ZoneSource.BROWSER, source="web_form"),
                            consent_email=True, consent_sms=False, campaign_id="ketamine-consult")
    with rt.sessions() as session, session.begin():
        pending_id = record_request(session, rt.settings.policy_dir, 48, request, clock.now).id
    assert process_leftovers(rt, clock.now) == 0  # too fresh: its own process may still be at it
    clock.advance(timedelta(minutes=2))
    assert process_leftovers(rt, clock.now) == 1
    process_received(rt, pending_id, clock.now)  # the original, late: claims nothing
    assert process_leftovers(rt, clock.now) == 0
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 1
        assert session.scalar(select(func.count(Enrollment.id))) == 1


# -- a known contact with no email on file confirms by replying to a text ----------------------------


def test_a_known_number_without_email_confirms_a_request_by_replying_yes(clinic, sandbox, clock):
    rt, base = clinic
    patient = add_contact(rt, clock.now, first_name="Robin", email=None, phone=PHONE, consent=("sms",), campaign=None)
    assert post_request(base, first_name="Mallory", phone=PHONE, timezone="Europe/Paris", email="mallory@evil.example",
                        consent_email="yes").status_code == 202
    processed(rt)
    assert (contact(rt, patient).first_name, contact(rt, patient).timezone) == ("Robin", "America/Chicago")
    # the request is committed before its text is handed to the provider: wait for the text itself
    wait_until(lambda: any("Reply YES within 48 hours" in t for t in outbound_texts(sandbox, PHONE)))
    asks = [t for t in outbound_texts(sandbox, PHONE) if "Reply YES within 48 hours to confirm" in t]
    assert "name or time zone" in asks[0]  # what a YES may change, by field name only
    assert len(asks) == 1 and "Mallory" not in asks[0]  # the number on file is asked; nothing typed is repeated
    # A second request the same day asks nothing more: requests are no way to text a patient.
    post_request(base, first_name="Mallory", phone=PHONE)
    processed(rt)
    assert len([t for t in outbound_texts(sandbox, PHONE) if "to confirm" in t]) == 1
    # START is the carriers' opt-in keyword, not an answer to this question: it confirms nothing.
    sandbox.send_inbound_sms(PHONE, "START")
    assert contact(rt, patient).first_name == "Robin"
    reply = sandbox.send_inbound_sms(PHONE, "YES")
    assert reply.status_code == 200 and "your request is confirmed" in reply.text
    assert contact(rt, patient).first_name == "Mallory"  # the person on the number said yes
    # ... to their name and zone: a YES proves the number, not the email typed into the form.
    assert contact(rt, patient).email is None and contact(rt, patient).email_consent is False
    with rt.sessions() as session:
        confirmed = session.scalar(select(PendingChange).where(PendingChange.confirmed_at.is_not(None)))
        assert confirmed.confirm_by == "text" and confirmed.contact_id == patient
        assert "change_confirmed" in session.scalars(select(AuditEntry.action)).all()


def test_a_known_number_that_gets_no_texts_is_not_texted_to_confirm(clinic, sandbox, clock):
    rt, base = clinic
    patient = add_contact(rt, clock.now, first_name="Robin", email=None, phone=PHONE, consent=(), campaign=None)
    post_request(base, first_name="Mallory", phone=PHONE)
    processed(rt)
    assert outbound_texts(sandbox, PHONE) == []
    assert contact(rt, patient).first_name == "Robin"
    with rt.sessions() as session:
        assert session.scalar(select(PendingChange.confirm_by).where(PendingChange.contact_id == patient)) == "staff"
