"""The public endpoints: health, the request form, preferences/one-click unsubscribe, booking links."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from support.builders import add_contact, contact, form_errors, messages_for
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import (ConsentRecord, Contact, Enrollment, EnrollmentStatus, Event, PendingChange,
                                  SmsConfirmation)
from patient_drip.web.app import create_app

FORM = {"first_name": "Dana", "last_name": "Reyes", "email": "dana@example.com", "phone": "(312) 555-0188",
        "consent_email": "yes", "consent_sms": "yes", "preferred_channel": "sms"}


@pytest.fixture
def client(rt, clock):
    with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as test_client:
        yield test_client


def test_healthz_answers_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_consult_form_has_separate_unticked_consent_boxes_and_no_external_assets(client):
    page = client.get("/consult").text
    assert 'name="consent_email"' in page and 'name="consent_sms"' in page
    assert "checked" not in page.split('name="consent_email"')[1].split(">")[0]
    assert "Msg &amp; data rates may apply" in page and "STOP" in page and "HELP" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert 'name="website"' in page  # honeypot


def test_form_submission_creates_contact_records_email_consent_proof_and_asks_the_number_to_confirm(client, rt):
    response = client.post("/api/consultations", data=FORM, headers={"user-agent": "Mozilla/5.0 test"})
    assert response.status_code == 200 and "Thank you" in response.text
    with rt.sessions() as session:
        person = session.scalar(select(Contact))
        assert person.phone == "+13125550188" and person.email == "dana@example.com"
        assert person.timezone == "America/Chicago"
        records = list(session.scalars(select(ConsentRecord).order_by(ConsentRecord.channel)))
        # Texts wait for the number's YES (double opt-in): only the email consent is recorded now.
        assert [r.channel for r in records] == ["email"] and person.sms_consent is False
        assert all(r.method == "web_form" and r.ip_address and r.user_agent == "Mozilla/5.0 test" for r in records)
        asked = session.scalar(select(SmsConfirmation))
        assert asked.form_wording_version == "sms-v2" and asked.text.startswith("Riverside Wellness: Reply YES")
        assert asked.sent_at is not None and asked.confirmed_at is None
        assert session.scalar(select(func.count(Enrollment.id))) == 1


def test_resubmitting_the_form_does_not_enroll_twice_or_change_the_contact(client, rt):
    first = client.post("/api/consultations", json=FORM)
    again = client.post("/api/consultations", json={**FORM, "first_name": "Danielle"})
    assert again.status_code == first.status_code == 202
    assert again.json() == first.json() == {"status": "received"}
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 1
        assert session.scalar(select(func.count(Enrollment.id))) == 1
        assert session.scalar(select(Contact.first_name)) == "Dana"  # only a confirmed change renames
        assert session.scalar(select(PendingChange.request)) is not None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("email", "dana@", "email"),
    ("phone", "12345", "phone"),
    ("timezone", "Mars/Olympus", "timezone"),
])
def test_bad_fields_are_named(client, field, value, message):
    response = client.post("/api/consultations", json={**FORM, field: value})
    assert response.status_code == 422
    assert message in form_errors(response)


def test_form_errors_are_shown_next_to_the_field(client):
    response = client.post("/api/consultations", data={**FORM, "email": "nope"})
    assert response.status_code == 400
    assert 'id="email-error"' in response.text and 'aria-invalid="true"' in response.text


def test_sms_consent_without_a_phone_is_refused(client):
    response = client.post("/api/consultations", json={**FORM, "phone": ""})
    assert response.status_code == 422 and "phone" in form_errors(response)


def test_honeypot_pretends_success_and_stores_nothing(client, rt):
    response = client.post("/api/consultations", json={**FORM, "website": "http://spam.example"})
    assert response.status_code == 202 and response.json() == {"status": "received"}  # like a real one
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 0


def test_per_ip_rate_limit(client):
    codes = [client.post("/api/consultations", json={**FORM, "email": f"p{i}@example.com",
                                                      "phone": f"+1312555{i:04d}"}).status_code for i in range(7)]
    assert codes[:5] == [202] * 5 and codes[5] == 429


def _first_email(rt, clock):
    contact_id = add_contact(rt, clock.now)
    Dispatcher(rt, "w").run_once(clock.now)
    return contact_id, messages_for(rt, contact_id)[0]


def test_one_click_unsubscribe_works_without_login_or_redirect(client, rt, clock):
    contact_id, email = _first_email(rt, clock)
    token = email.body_html.split("https://clinic.test/u/")[1].split('"')[0]
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert response.status_code == 200
    person = contact(rt, contact_id)
    assert person.email_consent is False and person.email_blocked.startswith("opted_out")
    assert person.sms_consent is True


def test_preference_page_unsubscribes_everything_and_can_resubscribe(client, rt, clock):
    contact_id, email = _first_email(rt, clock)
    token = email.body_html.split("https://clinic.test/u/")[1].split('"')[0]
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and "Stop all messages" in page.text
    client.post(f"/u/{token}", data={"action": "all"})
    with rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == "unsubscribed"
    assert "Start emails again" in client.get(f"/u/{token}").text
    again = client.post(f"/u/{token}", data={"action": "resubscribe_email", "wording_version": "email-v1"})
    assert "subscribed again" in again.text and contact(rt, contact_id).email_consent is True


def test_tampered_tokens_get_a_friendly_404(client):
    assert client.get("/u/abc.def").status_code == 404
    response = client.get("/b/MTIz.forged")
    assert response.status_code == 404 and "could not open that link" in response.text


def test_booking_link_records_the_click_and_redirects_with_utm_tags(client, rt, clock):
    contact_id, email = _first_email(rt, clock)
    token = email.body_text.split("https://clinic.test/b/")[1].split()[0].rstrip(").,")
    response = client.get(f"/b/{token}", follow_redirects=False)
    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert target.netloc == "book.clinic.test"
    # A generic scheduler: UTM tags and our tracking value; no prefill (we do not know its names).
    assert parse_qs(target.query) == {"utm_source": ["patient-drip"], "utm_medium": ["email"],
                                      "utm_campaign": ["ketamine-consult"], "utm_content": ["welcome-email"],
                                      "drip": [token]}
    assert response.headers["referrer-policy"] == "no-referrer"
    assert messages_for(rt, contact_id)[0].clicked_at is not None
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Event.id)).where(Event.kind == "clicked")) == 1


def test_security_headers_on_every_page(client):
    for path in ("/consult", "/healthz", "/u/bad"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


# -- every problem at once, and limits that count only successful requests (issue 14) -------------


EVERYTHING_WRONG = {"first_name": "URGENT: verify at https://evil.example/x", "email": "dana@", "phone": "+19005550100",
                    "timezone": "Mars/Olympus", "consent_sms": "yes", "preferred_channel": "pigeon"}


def test_the_form_api_lists_every_field_error_at_once(client, rt):
    response = client.post("/api/consultations", json=EVERYTHING_WRONG)
    assert response.status_code == 422
    errors = form_errors(response)
    assert set(errors) == {"first_name", "email", "phone", "timezone", "preferred_channel"}
    assert "link" in errors["first_name"] and "premium-rate" in errors["phone"]
    with rt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 0


def test_a_missing_name_and_a_missing_address_are_both_reported_on_the_first_try(client):
    response = client.post("/api/consultations", json={"consent_sms": "yes"})
    assert set(form_errors(response)) == {"first_name", "email", "phone"}


def test_the_html_form_shows_every_error_at_once(client):
    response = client.post("/api/consultations", data=EVERYTHING_WRONG)
    assert response.status_code == 400
    summary = response.text.split('id="error-summary"')[1].split("</div>")[0]
    for field in ("first_name", "email", "phone", "timezone", "preferred_channel"):
        assert f'href="#{field}"' in summary, field
    assert "Please correct these 5 things" in summary
    for field in ("first_name", "email", "phone"):
        assert f'id="{field}-error"' in response.text


def test_typos_do_not_use_up_a_patients_tries(client, rt):
    for _ in range(12):  # a real patient getting the form wrong, again and again
        assert client.post("/api/consultations", json={**FORM, "email": "dana@"}).status_code == 422
    codes = [client.post("/api/consultations", json={**FORM, "email": f"p{i}@example.com", "phone": "",
                                                      "consent_sms": ""}).status_code for i in range(6)]
    assert codes == [202] * 5 + [429]


def test_a_refused_request_answers_429_naming_the_limit_and_stores_nothing(client, rt):
    for i in range(5):
        client.post("/api/consultations", json={**FORM, "email": f"p{i}@example.com", "phone": f"+1312555{i:04d}"})
    with rt.sessions() as session:
        before = (session.scalar(select(func.count(Contact.id))), session.scalar(select(func.count(Event.id))))
    refused = client.post("/api/consultations", json={**FORM, "email": "late@example.com", "phone": "+13125559999"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    [error] = refused.json()["errors"]
    assert error["field"] == "form" and error["limit"] == "form" and "too many" in error["message"].lower()
    page = client.post("/api/consultations", data={**FORM, "email": "late@example.com", "phone": "+13125559999"})
    assert page.status_code == 429 and "Too many requests" in page.text and page.headers["retry-after"]
    with rt.sessions() as session:
        assert (session.scalar(select(func.count(Contact.id))), session.scalar(select(func.count(Event.id)))) == before
