"""Webhooks refuse unsigned calls in every delivery mode.

SendGrid events are applied only with `SENDGRID_WEBHOOK_PUBLIC_KEY` configured and a valid ECDSA
signature inside the timestamp tolerance (outbox mode included: one unsigned spamreport used to
suppress a patient for good). The booking webhook signs ``f"{timestamp}.{body}"`` and refuses a
missing, malformed, old or future X-Drip-Timestamp (more than 5 minutes from the app's clock) with
401, so a captured call cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Enrollment, Event, Suppression
from patient_drip.providers.sandbox import SandboxServer, SendGridSigner
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.web.app import create_app
from support.builders import VirtualClock, add_contact, contact, make_settings, messages_for, sandbox_settings
from support.webhooks import booking_headers, sendgrid_headers

SIGNER = SendGridSigner()
BOOKING_SECRET = "signature-test-booking-secret"


def _client(rt: Runtime, clock: VirtualClock) -> TestClient:
    return TestClient(create_app(rt, clock=clock), base_url="https://clinic.test")


def _spamreport_for_first_email(rt: Runtime, clock: VirtualClock) -> tuple[int, bytes]:
    """A contact whose welcome email went out, and a spamreport batch naming that email."""
    contact_id = add_contact(rt, clock.now, phone=None, consent=("email",))
    Dispatcher(rt, "w").run_once(clock.now)
    message = messages_for(rt, contact_id)[0]
    return contact_id, json.dumps([{"event": "spamreport", "drip_message_id": str(message.id)}]).encode()


def _untouched(rt: Runtime, contact_id: int) -> None:
    """Nothing an applied spamreport would change has changed."""
    assert contact(rt, contact_id).email_blocked is None
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "email_spamreport")) == 0


@pytest.fixture
def keyless(database_url: str) -> Iterator[Runtime]:
    """Outbox delivery (the default) with no SendGrid key and no booking secret."""
    runtime = build_runtime(make_settings(database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def keyed(database_url: str) -> Iterator[Runtime]:
    """Outbox delivery with the SendGrid event key and the booking secret configured."""
    runtime = build_runtime(make_settings(database_url, sendgrid_webhook_public_key=SIGNER.public_key,
                                          booking_webhook_secret=BOOKING_SECRET))
    yield runtime
    runtime.close()


# -- SendGrid --------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_sendgrid_events_without_a_configured_key_are_refused_in_outbox_mode(keyless, clock, signed):
    contact_id, body = _spamreport_for_first_email(keyless, clock)
    headers = sendgrid_headers(SIGNER, body) if signed else {"Content-Type": "application/json"}
    with _client(keyless, clock) as client:
        response = client.post("/webhooks/sendgrid/events", content=body, headers=headers)
    assert response.status_code == 403
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not configured" in response.json()["error"]
    assert "applied" not in response.json()
    _untouched(keyless, contact_id)


def test_sendgrid_events_without_a_configured_key_are_refused_in_providers_mode(sqlite_url, sandbox: SandboxServer,
                                                                                  clock):
    rt = build_runtime(sandbox_settings(sqlite_url, sandbox, sendgrid_webhook_public_key=""))
    try:
        assert rt.delivery == "providers"
        contact_id, body = _spamreport_for_first_email(rt, clock)
        with _client(rt, clock) as client:
            response = client.post("/webhooks/sendgrid/events", content=body, headers=sendgrid_headers(SIGNER, body))
        assert response.status_code == 403
        assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not configured" in response.json()["error"]
        _untouched(rt, contact_id)
    finally:
        rt.close()


def test_a_validly_signed_sendgrid_event_is_applied_in_outbox_mode(keyed, clock):
    contact_id, body = _spamreport_for_first_email(keyed, clock)
    with _client(keyed, clock) as client:
        response = client.post("/webhooks/sendgrid/events", content=body, headers=sendgrid_headers(SIGNER, body))
    assert response.status_code == 200 and response.json() == {"received": 1, "applied": 1}
    assert contact(keyed, contact_id).email_blocked is not None


@pytest.mark.parametrize("age", [-700, 700], ids=["stale", "future"])
def test_a_signed_sendgrid_event_outside_the_tolerance_is_refused(keyed, clock, age):
    contact_id, body = _spamreport_for_first_email(keyed, clock)
    headers = sendgrid_headers(SIGNER, body, int(time.time()) + age)
    with _client(keyed, clock) as client:
        response = client.post("/webhooks/sendgrid/events", content=body, headers=headers)
    assert response.status_code == 403 and "timestamp" in response.json()["error"]
    _untouched(keyed, contact_id)


# Sent as bytes: b"\xb2" arrives as "²" (headers are Latin-1), which str.isdigit() accepts and int() refuses.
@pytest.mark.parametrize("timestamp", [b"9" * 5000, b"\xb2"], ids=["5000-digits", "superscript-two"])
def test_a_sendgrid_timestamp_that_is_no_plain_number_is_refused_not_a_crash(keyed, clock, timestamp):
    contact_id, body = _spamreport_for_first_email(keyed, clock)
    headers = {**sendgrid_headers(SIGNER, body), "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}
    with _client(keyed, clock) as client:
        response = client.post("/webhooks/sendgrid/events", content=body, headers=headers)
    assert response.status_code == 403 and "timestamp" in response.json()["error"]
    _untouched(keyed, contact_id)


def test_a_sendgrid_event_signed_with_another_key_is_refused(keyed, clock):
    contact_id, body = _spamreport_for_first_email(keyed, clock)
    with _client(keyed, clock) as client:
        response = client.post("/webhooks/sendgrid/events", content=body,
                               headers=sendgrid_headers(SendGridSigner(), body))
    assert response.status_code == 403 and "bad SendGrid signature" in response.json()["error"]
    _untouched(keyed, contact_id)


# -- booking ---------------------------------------------------------------------------------------


BOOKED = json.dumps({"email": "alex@example.com"}).encode()


def _enrollment_status(rt: Runtime) -> str:
    with rt.sessions() as session:
        return str(session.scalar(select(Enrollment.status)))


def _assert_booking_refused(rt: Runtime, clock: VirtualClock, headers: dict[str, str] | dict[str, bytes],
                            status: int, why: str) -> None:
    """The booking call with `headers` is refused with `status` naming `why`, and nothing changed."""
    with _client(rt, clock) as client:
        response = client.post("/webhooks/booking", content=BOOKED, headers=headers)
    assert response.status_code == status and why in response.json()["error"]
    assert _enrollment_status(rt) == "active"


def test_a_booking_call_signed_now_is_applied(keyed, clock):
    add_contact(keyed, clock.now)
    with _client(keyed, clock) as client:
        response = client.post("/webhooks/booking", content=BOOKED, headers=booking_headers(BOOKING_SECRET, BOOKED,
                                                                                           clock.now))
    assert response.status_code == 200 and response.json()["enrollments_ended"] == 1


@pytest.mark.parametrize(("shift", "why"), [
    (timedelta(minutes=-5, seconds=-1), "more than 5 minutes old"),
    (timedelta(minutes=5, seconds=1), "more than 5 minutes in the future"),
    (timedelta(days=-30), "more than 5 minutes old"),
], ids=["just-stale", "future", "month-old"])
def test_a_booking_call_signed_too_far_from_now_is_refused_with_401(keyed, clock, shift, why):
    add_contact(keyed, clock.now)
    headers = booking_headers(BOOKING_SECRET, BOOKED, clock.now + shift)  # correctly signed, wrong time
    _assert_booking_refused(keyed, clock, headers, 401, why)


def test_a_booking_call_just_inside_the_window_is_applied(keyed, clock):
    add_contact(keyed, clock.now)
    headers = booking_headers(BOOKING_SECRET, BOOKED, clock.now - timedelta(minutes=4, seconds=59))
    with _client(keyed, clock) as client:
        assert client.post("/webhooks/booking", content=BOOKED, headers=headers).status_code == 200
    assert _enrollment_status(keyed) == "exited"


@pytest.mark.parametrize(("timestamp", "why"), [
    (None, "missing X-Drip-Timestamp"),
    ("", "missing X-Drip-Timestamp"),
    ("yesterday", "X-Drip-Timestamp must be unix seconds"),
    ("-5", "X-Drip-Timestamp must be unix seconds"),
    ("1" * 40, "X-Drip-Timestamp must be unix seconds"),
    ("١٧٧٢٤٦٥٠٠٠", "X-Drip-Timestamp must be unix seconds"),  # Arabic-Indic digits: isdigit() but not ours
])
def test_a_booking_call_without_a_usable_timestamp_is_refused_with_401(keyed, clock, timestamp, why):
    add_contact(keyed, clock.now)
    headers = booking_headers(BOOKING_SECRET, BOOKED, clock.now)
    if timestamp is None:
        del headers["X-Drip-Timestamp"]
    else:
        headers["X-Drip-Timestamp"] = timestamp
    _assert_booking_refused(keyed, clock, {k: v.encode() for k, v in headers.items()}, 401, why)


def test_a_body_only_signature_from_the_old_scheme_is_refused(keyed, clock):
    add_contact(keyed, clock.now)
    headers = booking_headers(BOOKING_SECRET, BOOKED, clock.now)
    headers["X-Drip-Signature"] = "sha256=" + hmac.new(BOOKING_SECRET.encode(), BOOKED, hashlib.sha256).hexdigest()
    _assert_booking_refused(keyed, clock, headers, 403, "bad X-Drip-Signature")


def test_booking_without_a_configured_secret_is_refused(keyless, clock):
    add_contact(keyless, clock.now)
    _assert_booking_refused(keyless, clock, booking_headers("guess", BOOKED, clock.now), 403,
                            "DRIP_BOOKING_WEBHOOK_SECRET")
