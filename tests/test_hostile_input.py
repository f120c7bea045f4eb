"""Junk, huge, truncated and wrongly typed bodies at every public endpoint: the answer is a 4xx with
a message that says what is wrong -- never a 5xx -- and nothing is stored half-way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from support.builders import START, UNLIMITED_INTAKE, VirtualClock, add_contact, form_errors, make_settings
from support.webhooks import booking_headers, sendgrid_headers
from support.databases import POSTGRES_REACHABLE, TEMPLATES
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import ConsentRecord, Contact, Enrollment, Event, InboundMessage, Message
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.providers.sandbox import SendGridSigner
from patient_drip.web.app import create_app

TWILIO_TOKEN = "twilio-hostile-token"
BOOKING_SECRET = "booking-hostile-secret"
SIGNER = SendGridSigner()
BASE = "https://clinic.test"
TABLES = (Contact, Enrollment, ConsentRecord, Message, InboundMessage, Event)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hrt(request, tmp_path_factory) -> Iterator[Runtime]:
    """One database per module and engine (every test compares row counts before and after)."""
    if request.param == "postgresql" and not POSTGRES_REACHABLE:
        pytest.skip("PostgreSQL not reachable")
    with TEMPLATES.migrated(request.param, tmp_path_factory.mktemp("hostile")) as url:
        rt = build_runtime(make_settings(url, twilio_auth_token=TWILIO_TOKEN, booking_webhook_secret=BOOKING_SECRET,
                                         sendgrid_webhook_public_key=SIGNER.public_key,
                                         **UNLIMITED_INTAKE))  # this file tests parsing, not the limits
        yield rt
        rt.close()


@pytest.fixture(scope="module")
def client(hrt) -> Iterator[TestClient]:
    app = create_app(hrt, clock=VirtualClock())
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as test_client:
        yield test_client


def counts(rt: Runtime) -> dict[str, int]:
    with rt.sessions() as session:
        return {table.__name__: session.scalar(select(func.count()).select_from(table)) for table in TABLES}


def assert_refused(response, *words: str) -> None:  # type: ignore[no-untyped-def]
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    text = response.text.lower()
    assert any(word.lower() in text for word in words), (words, response.text[:500])


# -- POST /api/consultations -------------------------------------------------------------------------------

JSON_BODIES = [
    (b"", "email"),  # an empty body is an empty request: say which field is missing
    (b"{", "json"),
    (b'{"email": "a@', "json"),
    (b"not json at all", "json"),
    (b"\xff\xfe\x00garbage", "json"),
    (b"[]", "object"),
    (b'"a string"', "object"),
    (b"42", "object"),
    (b"null", "object"),
    (b"[" * 20_000 + b"]" * 20_000, "json"),
    (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "json"),
    (b"x" * (65 * 1024), "larger than"),
]


@pytest.mark.parametrize(("body", "word"), JSON_BODIES, ids=[f"json{i}" for i in range(len(JSON_BODIES))])
def test_junk_json_is_refused_with_a_reason_and_stores_nothing(client, hrt, body, word):
    before = counts(hrt)
    response = client.post("/api/consultations", content=body, headers={"Content-Type": "application/json"})
    assert_refused(response, word)
    assert counts(hrt) == before


WRONG_TYPES = [
    ({"email": 123, "first_name": "A"}, "email"),
    ({"email": ["a@example.com"], "first_name": "A"}, "email"),
    ({"email": {"$ne": None}, "first_name": "A"}, "email"),
    ({"phone": True, "first_name": "A"}, "phone"),
    ({"phone": 13125550142.5, "first_name": "A"}, "phone"),
    ({"email": "a@example.com", "first_name": ["A", "B"] * 60}, "first_name"),
    ({"email": "a@example.com", "first_name": "x" * 10_000}, "first_name"),
    ({"email": "a@example.com", "first_name": "Nul\u0000Byte"}, "first_name"),
    ({"email": "a@example.com", "first_name": "Lone\ud800Surrogate"}, "first_name"),
    ({"email": "a@example.com", "last_name": "\u202eevil"}, "last_name"),
    ({"email": "a\u0000@example.com", "first_name": "A"}, "email"),
    ({"email": "a@example.com\r\nBcc: all@example.com", "first_name": "A"}, "email"),
    ({"email": "\ud800@example.com", "first_name": "A"}, "email"),
    ({"phone": "+1312555\u00000142", "first_name": "A"}, "phone"),
    ({"phone": "9" * 5000, "first_name": "A"}, "phone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": "America"}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": "Etc"}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": "../../etc/passwd"}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": "x" * 5000}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": "Europe/\u0000"}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "timezone": ["America/Chicago"]}, "timezone"),
    ({"email": "a@example.com", "first_name": "A", "preferred_channel": "pigeon"}, "preferred_channel"),
    ({"first_name": "A"}, "email"),
    ({"email": "", "phone": "", "first_name": "A"}, "email"),
    ({"email": "a@example.com"}, "first_name"),
    ({"email": "a@example.com", "first_name": "A", "consent_sms": "yes"}, "phone"),
]


@pytest.mark.parametrize(("data", "field"), WRONG_TYPES, ids=[f"type{i}" for i in range(len(WRONG_TYPES))])
def test_wrong_values_name_the_field_and_store_nothing(client, hrt, data, field):
    before = counts(hrt)
    body = json.dumps(data).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes
    response = client.post("/api/consultations", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), (response.status_code, response.text)
    assert field in form_errors(response), response.json()
    assert counts(hrt) == before


FORM_BODIES = [
    (b"email=a%40example.com&first_name=%ZZ", None),  # bad percent-escape
    (b"email=a%40example.com&first_name=%FF%FE", None),  # not UTF-8
    (b"email=a%40example.com&first_name=A%00B", "first_name"),
    (b"&&&===&&", "email"),
    (b"email=" + b"a" * 70_000, "larger than"),
    (b"first_name=A&email=a%40example.com&timezone=America", "timezone"),
]


@pytest.mark.parametrize(("body", "field"), FORM_BODIES, ids=[f"form{i}" for i in range(len(FORM_BODIES))])
def test_junk_forms_get_the_form_back_with_the_problem(client, hrt, body, field):
    before = counts(hrt)
    response = client.post("/api/consultations", content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code < 500, response.text[:300]
    if field is not None:
        assert_refused(response, field.replace("_", " "), field, "too large", "larger than", "Please")
        assert counts(hrt) == before


def test_broken_multipart_is_a_400(client, hrt):
    before = counts(hrt)
    for content_type, body in [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nab"),
        ("multipart/form-data", b"no boundary at all"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"f\"; "
                                              b"filename=\"a.txt\"\r\n\r\n" + b"x" * 1000 + b"\r\n--xyz--\r\n"),
    ]:
        response = client.post("/api/consultations", content=body, headers={"Content-Type": content_type})
        assert 400 <= response.status_code < 500, (content_type, response.status_code, response.text[:200])
    assert counts(hrt) == before


def test_a_lying_content_length_does_not_hang_or_crash(client, hrt):
    response = client.post("/api/consultations", content=b'{"email": "a@example.com"}',
                           headers={"Content-Type": "application/json", "Content-Length": "999999999"})
    assert response.status_code < 500


def test_get_and_other_methods_on_the_form_endpoint_are_405(client):
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/api/consultations").status_code == 405


def test_a_valid_request_after_all_that_still_works(client, hrt):
    before = counts(hrt)["Enrollment"]
    response = client.post("/api/consultations", json={"first_name": "Dana", "email": "dana@example.com",
                                                       "consent_email": True})
    assert response.status_code == 202
    assert counts(hrt)["Enrollment"] == before + 1


# -- /u/{token} and /b/{token} --------------------------------------------------------------------------

JUNK_TOKENS = ["x", "a" * 5000, "..%2F..%2Fetc%2Fpasswd", "%00", "%F0%9F%92%A9", "WzEsMl0.forged", "null",
               "eyJhIjoxfQ", "WzEsMl0", "[1,2]", "-1", "0", "%ED%A0%80"]


@pytest.mark.parametrize("token", JUNK_TOKENS)
def test_junk_link_tokens_are_a_plain_404(client, hrt, token):
    before = counts(hrt)
    for method, path in (("GET", "/u/"), ("POST", "/u/"), ("GET", "/b/")):
        response = client.request(method, path + token, data={"action": "all"} if method == "POST" else None,
                                  follow_redirects=False)
        assert response.status_code == 404, (method, path, token, response.status_code)
        # ("../" in a token leaves the route altogether: the app's plain 404)
        assert "link" in response.text.lower() or response.json() == {"detail": "Not Found"}
    assert counts(hrt) == before


def test_preference_post_with_junk_fields_says_what_to_do(client, hrt):
    contact_id = add_contact(hrt, START, email="prefs@example.com", phone="+13125550178", campaign=None)
    token = hrt.tokens.unsubscribe(contact_id)
    for data in ({}, {"action": "explode"}, {"action": "ALL"}, {"List-Unsubscribe": "Two-Clicks"}):
        response = client.post(f"/u/{token}", data=data)
        assert response.status_code == 400 and "choose an option" in response.text.lower()
    response = client.post(f"/u/{token}", data={"action": "x" * 10_000})
    assert response.status_code == 422 and "action" in response.text
    with hrt.sessions() as session:
        contact = session.get(Contact, contact_id)
        assert contact.email_consent and contact.sms_consent


def test_booking_link_for_a_message_that_no_longer_exists_is_a_404(client, hrt):
    response = client.get(f"/b/{hrt.tokens.booking(987654)}", follow_redirects=False)
    assert response.status_code == 404


# -- webhooks -------------------------------------------------------------------------------------------


def twilio_post(client: TestClient, path: str, params: dict[str, str], query: str = ""):  # type: ignore[no-untyped-def]
    url = f"{BASE}{path}" + (f"?{query}" if query else "")
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return client.post(path + (f"?{query}" if query else ""), content=urlencode(params).encode(),
                       headers={"X-Twilio-Signature": signature,
                                "Content-Type": "application/x-www-form-urlencoded"})


def sendgrid_post(client: TestClient, body: bytes, timestamp: str | None = None):  # type: ignore[no-untyped-def]
    return client.post("/webhooks/sendgrid/events", content=body,
                       headers=sendgrid_headers(SIGNER, body, int(timestamp) if timestamp else None))


def booking_post(client: TestClient, body: bytes):  # type: ignore[no-untyped-def]
    return client.post("/webhooks/booking", content=body, headers=booking_headers(BOOKING_SECRET, body, START))


@pytest.fixture(scope="module")
def sent(hrt) -> int:
    """A contact with its first email and SMS sent (outbox): message ids 1 and 2."""
    contact_id = add_contact(hrt, START, email="sent@example.com", phone="+13125550177")
    Dispatcher(hrt, "w").run_once(START)
    return contact_id


@pytest.mark.parametrize(("params", "query"), [
    ({}, ""),
    ({"MessageStatus": "exploded", "MessageSid": "SM1"}, ""),
    ({"MessageStatus": "delivered", "MessageSid": "SM1"}, "m=99999999999999999999999999"),
    ({"MessageStatus": "delivered", "MessageSid": "SM1"}, "m=%C2%B2"),  # a superscript two: isdigit(), not int()
    ({"MessageStatus": "delivered", "MessageSid": "SM1"}, "m=-1"),
    ({"MessageStatus": "failed", "MessageSid": "SM1", "ErrorCode": "99999999999999999999999"}, "m=2"),
    ({"MessageStatus": "failed", "MessageSid": "SM\u0000" * 50, "ErrorCode": "30007\u0000"}, "m=2"),
    ({"MessageStatus": "undelivered", "MessageSid": "x" * 5000, "ErrorCode": "²"}, "m=2"),
    ({"MessageStatus": "DELIVERED", "MessageSid": "SM1"}, "m=1"),  # an email's id: not an SMS
])
def test_signed_but_odd_twilio_status_callbacks_never_5xx(client, hrt, sent, params, query):
    response = twilio_post(client, "/webhooks/twilio/status", params, query)
    assert response.status_code in (204, 400), (response.status_code, response.text[:300])
    if response.status_code == 400:
        assert "messagestatus" in response.text.lower()


@pytest.mark.parametrize("params", [
    {},
    {"From": "+13125550142", "Body": "hello\u0000world", "MessageSid": "SMnul"},
    {"From": "\u0000", "Body": "STOP", "MessageSid": "SMfrom"},
    {"From": "+13125550142", "Body": "x" * 100_000, "MessageSid": "SMbig"},
    {"From": "+13125550142", "Body": "I want to end it all", "MessageSid": "\u0000" * 200},
    {"From": "not a number" * 10, "Body": "HELP", "MessageSid": "SMhelp"},
])
def test_signed_but_odd_inbound_sms_never_5xx(client, hrt, sent, params):
    response = twilio_post(client, "/webhooks/twilio/sms", params)
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.text.startswith("<?xml")


@pytest.mark.parametrize("body", [
    b"", b"{", b"[", b"{}", b"[1, 2]", b'["x"]', b"null", b'[{"event": "delivered"}]',
    b"[" * 20_000 + b"]" * 20_000,
    json.dumps([{"event": "delivered", "drip_message_id": "9" * 40}]).encode(),
    json.dumps([{"event": "delivered", "drip_message_id": 10**40}]).encode(),
    json.dumps([{"event": "delivered", "drip_message_id": "\u00b2"}]).encode(),
    json.dumps([{"event": ["bounce"], "drip_message_id": 1, "type": {"a": 1}}]).encode(),
    json.dumps([{"event": "bounce", "drip_message_id": 1, "reason": "550 \u0000 no such user"}]).encode(),
    json.dumps([{"event": "dropped", "drip_message_id": 1, "reason": "Bounced Address\u0000"}]).encode(),
    json.dumps([{"event": "delivered", "sg_message_id": {"x": 1}}]).encode(),
    json.dumps([{"event": "delivered", "sg_message_id": "\u0000" * 10}]).encode(),
    json.dumps([{"event": "delivered", "drip_message_id": 1}] * 1000).encode(),
])
def test_signed_but_odd_sendgrid_events_never_5xx(client, hrt, sent, body):
    response = sendgrid_post(client, body)
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if response.status_code == 400:
        assert "json" in response.text.lower()


@pytest.mark.parametrize("data", [
    None, [], "x", {}, {"email": 5}, {"email": "\u0000"}, {"phone": "+1312555\u00000142"},
    {"email": "alex@example.com", "source": "tool\u0000"}, {"email": "alex@example.com", "source": ["a"] * 1000},
    {"email": "nobody@example.com"}, {"phone": "12"},
])
def test_signed_but_odd_booking_webhooks_never_5xx(client, hrt, sent, data):
    body = b"not json" if data is None else json.dumps(data).encode()
    response = booking_post(client, body)
    assert response.status_code in (200, 400, 404), (response.status_code, response.text[:300])
    # An unknown person is recorded for staff ("unmatched"), never an error or a crash.
    assert response.json().get("error") or response.json().get("status") in ("booked", "unmatched")


def test_a_path_with_an_encoded_nul_or_a_huge_segment_is_a_404_not_a_crash(client):
    for path in ("/u/%00%00", "/b/" + "%F0%9F%92%A9" * 500, "/webhooks/" + "x" * 5000, "/" + quote("\u0000"),
                 "/api/consultations/..%2F..%2Fhealthz"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code in (404, 405), (path, response.status_code)


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America", "x" * 300])
def test_a_folder_or_overlong_clinic_time_zone_is_a_settings_error_naming_the_variable(zone):
    from patient_drip.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="DRIP_CLINIC_TIMEZONE"):
        load_settings(clinic_timezone=zone, _env_file=None)
