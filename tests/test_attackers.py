"""Attackers: nobody outside the clinic may see or change anything.

Roles (enumerated from the app, so a new route is covered the day it is added), CSRF, forged /
replayed / re-signed webhooks, link tokens that cannot be forged or enumerated, rate limits on the
login and the public form, template injection through the editor, security headers on every page
and correctly flagged cookies. (Anonymous access to private routes is tests/test_routes_protected.py.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from patient_drip.web.admin.auth import SESSION_COOKIE, describe_auth
from support.builders import VirtualClock, add_contact, form_errors
from support.webhooks import booking_headers, sendgrid_headers
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, ConsentRecord, Contact, Enrollment, Event, InboundMessage, Message
from patient_drip.runtime import Runtime
from patient_drip.providers.sandbox import SendGridSigner
from support.staff import BASE_URL, ROLES, add_user, make_client, runtime_for, sign_in_as, token_for
from support.routes import PUBLIC, concrete, is_public, routes_of
from patient_drip.content.tokens import LinkTokens
from patient_drip.web.app import create_app

TWILIO_TOKEN = "attack-twilio-token"
BOOKING_SECRET = "attack-booking-secret"
SIGNER = SendGridSigner()


@pytest.fixture
def art(tmp_path) -> Iterator[Runtime]:
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", twilio_auth_token=TWILIO_TOKEN,
                     booking_webhook_secret=BOOKING_SECRET, sendgrid_webhook_public_key=SIGNER.public_key)
    yield rt
    rt.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def web(art, clock) -> Iterator[TestClient]:
    with make_client(art, clock) as client:
        yield client


def state(rt: Runtime) -> dict[str, int]:
    """Row counts of everything a successful attack would change."""
    with rt.sessions() as session:
        return {t.__name__: session.scalar(select(func.count()).select_from(t))
                for t in (Contact, Enrollment, ConsentRecord, Message, InboundMessage, Event, AuditEntry)}


# -- roles -------------------------------------------------------------------------------------------


def _auth_roles(dependant) -> tuple[str, ...] | None:  # type: ignore[no-untyped-def]
    """The roles an auth dependency (admin.auth.require / api_require) lets through."""
    for dep in dependant.dependencies:
        if describe_auth(dep.call):
            free = dict(zip(dep.call.__code__.co_freevars, (c.cell_contents for c in dep.call.__closure__ or ())))
            return tuple(str(r) for r in free["roles"])
        found = _auth_roles(dep)
        if found is not None:
            return found
    return None


def forbidden_pairs(app) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    """(role, method, path) for every private route a role may not use."""
    pairs = []
    for method, path, dependant in routes_of(app):
        if is_public(path) or method == "HEAD":
            continue
        assert dependant is not None, f"{method} {path} is not a FastAPI route"
        roles = _auth_roles(dependant)
        assert roles is not None, f"{method} {path} has no auth dependency"
        for role in ROLES:
            if role != "admin" and role not in roles:
                pairs.append((role, method, path))
    return pairs


def test_every_role_is_refused_every_route_its_role_does_not_allow(art, clock):
    app_routes = forbidden_pairs(create_app(art, clock=clock))
    assert len({(m, p) for _r, m, p in app_routes}) >= 15  # staff-only, admin-only, marketing-only...
    before = state(art)
    accepted = []
    for role in ("staff", "marketing", "clinician"):
        with make_client(art, clock) as client:
            user = add_user(art, role, f"{role}-matrix@clinic.test")
            csrf = sign_in_as(client, art, user, clock.now)
            api = token_for(art, role, email=f"{role}-api@clinic.test")
            for pair_role, method, path in app_routes:
                if pair_role != role:
                    continue
                url = concrete(path)
                if path.startswith("/api/"):
                    response = client.request(method, url, headers=api, json={} if method == "POST" else None)
                else:
                    response = client.request(method, url, data={"csrf_token": csrf} if method == "POST" else None,
                                              headers={"X-CSRF-Token": csrf} if method == "POST" else None)
                if response.status_code != 403:
                    accepted.append(f"{role}: {method} {path} -> {response.status_code}")
    assert accepted == []
    after = state(art)
    # Only the sign-ins themselves were recorded; nothing the refused requests asked for happened.
    assert {k: v for k, v in after.items() if k != "AuditEntry"} == {k: v for k, v in before.items() if k != "AuditEntry"}


def test_a_revoked_api_token_and_a_disabled_users_token_open_nothing(web, art):
    for headers in (token_for(art, "admin", email="gone@clinic.test", revoked=True),
                    token_for(art, "admin", email="off@clinic.test", disabled=True)):
        for path in ("/api/v1/me", "/api/v1/contacts", "/api/v1/stats"):
            assert web.get(path, headers=headers).status_code == 401


def test_an_api_token_is_not_a_session_and_a_session_is_not_an_api_token(web, art, clock):
    user = add_user(art, "admin")
    sign_in_as(web, art, user, clock.now)
    assert web.get("/api/v1/me").status_code == 401
    web.cookies.clear()
    headers = token_for(art, "admin", email="api-only@clinic.test")
    assert web.get("/admin/contacts", headers=headers).status_code == 303


# -- CSRF --------------------------------------------------------------------------------------------


def test_csrf_token_is_not_taken_from_the_query_string_or_a_json_body(web, art, clock):
    user = add_user(art, "admin")
    csrf = sign_in_as(web, art, user, clock.now)
    before = state(art)
    assert web.post(f"/admin/account/tokens?csrf_token={csrf}", data={"name": "x"}).status_code == 403
    assert web.post("/admin/account/tokens", json={"name": "x", "csrf_token": csrf}).status_code == 403
    assert web.post("/admin/templates/preview/sms/01-welcome.txt",
                    json={"source": "hi", "csrf_token": csrf}).status_code == 403
    assert state(art) == before


def test_session_cookie_is_scoped_to_the_staff_ui_and_not_sent_cross_site(web, art, clock):
    add_user(art, "staff")
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/admin/login").text).group(1)
    response = web.post("/admin/login", data={"email": "staff@clinic.test", "password": "correct horse battery",
                                              "csrf_token": token})
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "Secure" in session and "Path=/admin" in session
    assert re.search(r"SameSite=(lax|strict)", session, re.I)


# -- webhooks ----------------------------------------------------------------------------------------


def twilio_request(web: TestClient, path: str, params: dict[str, str], *, token: str = TWILIO_TOKEN,
                   signed_url: str | None = None, sent_params: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    signature = RequestValidator(token).compute_signature(signed_url or f"{BASE_URL}{path}", params)
    return web.post(path, content=urlencode(sent_params or params).encode(),
                    headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def patient(art, clock) -> int:
    contact_id = add_contact(art, clock.now)
    Dispatcher(art, "w").run_once(clock.now)
    return contact_id


def test_forged_and_resigned_twilio_webhooks_change_nothing(web, art, patient):
    stop = {"From": "+13125550142", "To": "+15005550006", "Body": "STOP", "MessageSid": "SMstop", "AccountSid": "AC1"}
    before = state(art)
    attempts = [
        twilio_request(web, "/webhooks/twilio/sms", stop, token="someone-elses-token"),  # re-signed, wrong key
        twilio_request(web, "/webhooks/twilio/sms", stop, signed_url=f"{BASE_URL}/webhooks/twilio/status"),
        twilio_request(web, "/webhooks/twilio/sms", {**stop, "Body": "HELLO"}, sent_params=stop),  # altered
        twilio_request(web, "/webhooks/twilio/sms", stop, sent_params={**stop, "Extra": "1"}),
        twilio_request(web, "/webhooks/twilio/sms", stop, signed_url="https://evil.example/webhooks/twilio/sms"),
        web.post("/webhooks/twilio/sms", data=stop),
        web.post("/webhooks/twilio/sms", data=stop, headers={"X-Twilio-Signature": "AAAA"}),
        twilio_request(web, "/webhooks/twilio/status", {"MessageStatus": "failed", "ErrorCode": "21610",
                                                         "MessageSid": "SMx"}, token="guess"),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert state(art) == before
    with art.sessions() as session:
        assert session.get(Contact, patient).sms_consent is True


def test_a_replayed_twilio_webhook_is_handled_once(web, art, patient):
    stop = {"From": "+13125550142", "To": "+15005550006", "Body": "STOP", "MessageSid": "SMonce"}
    assert twilio_request(web, "/webhooks/twilio/sms", stop).status_code == 200
    after_first = state(art)
    for _ in range(3):
        assert twilio_request(web, "/webhooks/twilio/sms", stop).status_code == 200
    assert state(art) == after_first
    # A replayed older status can never move a message backwards.
    with art.sessions() as session:
        sms = session.scalar(select(Message).where(Message.channel == "sms"))
    delivered = {"MessageStatus": "delivered", "MessageSid": "SMd"}
    assert twilio_request(web, f"/webhooks/twilio/status?m={sms.id}", delivered).status_code == 204
    queued = {"MessageStatus": "queued", "MessageSid": "SMd"}
    path = f"/webhooks/twilio/status?m={sms.id}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"{BASE_URL}{path}", queued)
    web.post(path, data=queued, headers={"X-Twilio-Signature": signature})
    with art.sessions() as session:
        assert session.get(Message, sms.id).status == "delivered"


def sendgrid_request(web: TestClient, body: bytes, *, timestamp: int | None = None, signer: SendGridSigner = SIGNER,
                     signed_body: bytes | None = None, signed_timestamp: int | None = None):  # type: ignore[no-untyped-def]
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = sendgrid_headers(signer, signed_body or body, signed_timestamp or timestamp)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(timestamp)
    return web.post("/webhooks/sendgrid/events", content=body, headers=headers)


def test_stale_forged_and_resigned_sendgrid_events_change_nothing(web, art, patient):
    body = json.dumps([{"event": "spamreport", "drip_message_id": 1}]).encode()
    now = int(time.time())
    before = state(art)
    attempts = [
        sendgrid_request(web, body, timestamp=now - 3600),  # replayed an hour later, correctly signed
        sendgrid_request(web, body, timestamp=now + 3600),  # from the future
        sendgrid_request(web, body, signer=SendGridSigner()),  # re-signed with an attacker's key
        sendgrid_request(web, body, signed_body=body.replace(b"spamreport", b"delivered")),  # body swapped
        sendgrid_request(web, body, signed_timestamp=now - 3600),  # fresh timestamp pasted on an old signature
        web.post("/webhooks/sendgrid/events", content=body, headers={"Content-Type": "application/json"}),
        web.post("/webhooks/sendgrid/events", content=body, headers={
            "X-Twilio-Email-Event-Webhook-Signature": "MEUCIQ" + "A" * 90, "X-Twilio-Email-Event-Webhook-Timestamp": str(now)}),
        web.post("/webhooks/sendgrid/events", content=body, headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(b"x" * 70).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": "not-a-number"}),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert state(art) == before
    with art.sessions() as session:
        assert session.get(Contact, patient).email_blocked is None


def test_booking_webhook_forgeries_are_refused_and_a_replay_changes_nothing_more(web, art, patient, clock):
    body = json.dumps({"email": "alex@example.com"}).encode()
    signed = booking_headers(BOOKING_SECRET, body, clock.now)
    good, stamp = signed["X-Drip-Signature"], {"X-Drip-Timestamp": signed["X-Drip-Timestamp"]}
    before = state(art)
    for headers in ({}, {"X-Drip-Signature": "sha256=" + "0" * 64},
                    {"X-Drip-Signature": "sha256=" + hmac.new(b"guess", body, hashlib.sha256).hexdigest()},
                    {"X-Drip-Signature": good.removeprefix("sha256=")},
                    {"X-Drip-Signature": "sha1=" + hmac.new(BOOKING_SECRET.encode(), body, hashlib.sha1).hexdigest()},
                    # the old, untimestamped scheme: HMAC of the body alone
                    {"X-Drip-Signature": "sha256=" + hmac.new(BOOKING_SECRET.encode(), body, hashlib.sha256).hexdigest()}):
        assert web.post("/webhooks/booking", content=body, headers={**stamp, **headers}).status_code == 403
    altered = json.dumps({"email": "someone-else@example.com"}).encode()
    assert web.post("/webhooks/booking", content=altered, headers=signed).status_code == 403
    assert state(art) == before
    assert web.post("/webhooks/booking", content=body, headers=signed).json()["enrollments_ended"] == 1
    # Within the 5-minute window a replay is possible, and harmless -- it can only say again that
    # this person booked.
    replay = web.post("/webhooks/booking", content=body, headers=signed)
    assert replay.status_code == 200 and replay.json()["enrollments_ended"] == 0
    # Later than that the same call is refused, and so is a fresh timestamp pasted on it.
    clock.advance(timedelta(minutes=5, seconds=1))
    late = web.post("/webhooks/booking", content=body, headers=signed)
    assert late.status_code == 401 and "more than 5 minutes old" in late.json()["error"]
    pasted = {**signed, "X-Drip-Timestamp": str(int(clock.now.timestamp()))}
    assert web.post("/webhooks/booking", content=body, headers=pasted).status_code == 403


# -- link tokens -------------------------------------------------------------------------------------


def test_link_tokens_cannot_be_forged_or_enumerated(web, art, patient):
    other_installation = LinkTokens("another-installations-secret")
    genuine = art.tokens.unsubscribe(patient, 1)
    payload, signature = genuine.rsplit(".", 1)
    attempts = [
        *(other_installation.unsubscribe(contact_id) for contact_id in range(1, 30)),  # enumerate with a guess key
        *(other_installation.booking(message_id) for message_id in range(1, 30)),
        art.tokens.booking(1),  # a booking token is not an unsubscribe token
        base64.urlsafe_b64encode(b"[2,1]").decode().rstrip("=") + "." + signature,  # someone else's id, old signature
        payload + "." + signature[:-2] + ("AA" if not signature.endswith("AA") else "BB"),
        payload, genuine + "x", genuine[1:],
    ]
    before = state(art)
    for token in attempts:
        assert web.get(f"/u/{token}").status_code == 404
        assert web.post(f"/u/{token}", data={"action": "all"}).status_code == 404
    for token in [other_installation.booking(1), art.tokens.unsubscribe(patient, 1), payload]:
        assert web.get(f"/b/{token}", follow_redirects=False).status_code == 404
    assert state(art) == before
    with art.sessions() as session:
        assert session.get(Contact, patient).email_consent is True
    # The page a genuine token opens names no one: a forwarded email shows no address.
    page = web.get(f"/u/{genuine}").text
    assert "alex@example.com" not in page and "+13125550142" not in page and "5550142" not in page


def test_an_unknown_and_a_forged_token_look_the_same(web, art):
    missing = web.get(f"/u/{art.tokens.unsubscribe(424242)}")
    forged = web.get(f"/u/{LinkTokens('guess').unsubscribe(1)}")
    assert missing.status_code == forged.status_code == 404
    assert missing.text == forged.text


# -- rate limits -------------------------------------------------------------------------------------


def test_the_public_form_is_rate_limited_per_address(art, clock):
    app = create_app(art, clock=clock)
    with TestClient(app, base_url=BASE_URL) as client:
        answers = [client.post("/api/consultations", json={"first_name": "Spam", "email": f"spam{i}@example.com"})
                   for i in range(8)]
        assert all(a.status_code == 202 for a in answers[:5])
        assert all(a.status_code == 429 and int(a.headers["retry-after"]) > 0 for a in answers[5:])
        assert "too many" in form_errors(answers[-1])["form"].lower()
        form = client.post("/api/consultations", data={"first_name": "Spam", "email": "form@example.com"})
        assert form.status_code == 429
    with art.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 5


def test_sign_in_is_throttled_per_address_across_many_accounts(web, art):
    def attempt(email: str):  # type: ignore[no-untyped-def]
        web.cookies.clear()
        token = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/admin/login").text).group(1)
        return web.post("/admin/login", data={"email": email, "password": "wrong password!", "csrf_token": token})

    codes = [attempt(f"user{i}@clinic.test").status_code for i in range(32)]
    assert codes[:30] == [401] * 30 and codes[30:] == [429, 429]  # credential stuffing: one IP, many accounts


# -- template injection through the editor -------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "{{ lipsum.__globals__ }}",
    "{{ config }}{{ request }}{{ settings.SECRET_KEY }}",
    "{% set x = ''.__class__ %}{{ x }}",
    "{{ ''|attr('__class__') }}",
    "{{ (0).__class__.__base__.__subclasses__() }}",
]
BOMBS = [
    "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 999999999 }}",
    "{% set a = 'xxxxxxxxxx' %}{% set b = a~a~a~a~a~a~a~a~a~a %}{% set c = b~b~b~b~b~b~b~b~b~b %}"
    "{% set d = c~c~c~c~c~c~c~c~c~c %}{% set e = d~d~d~d~d~d~d~d~d~d %}{% set f = e~e~e~e~e~e~e~e~e~e %}"
    "{% set g = f~f~f~f~f~f~f~f~f~f %}{% set h = g~g~g~g~g~g~g~g~g~g %}{{ h|length }}",
    "{{ 'x'|center(999999999) }}",
    "{{ '%0999999999d' % 1 }}",
    "{% for i in range(100000) %}{{ 'xxxxxxxxxx' }}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
]


@pytest.fixture
def marketing(web, art, clock) -> str:
    return sign_in_as(web, art, add_user(art, "marketing"), clock.now)


@pytest.mark.parametrize("source", ESCAPES + BOMBS)
def test_template_injection_in_the_editor_is_reported_not_run(web, art, marketing, source):
    started = time.monotonic()
    response = web.post("/admin/templates/preview/sms/01-welcome.txt", json={"source": source},
                        headers={"X-CSRF-Token": marketing})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:300]
    result = response.json()
    assert result["ok"] is False and result["problems"], result
    # two renders (the preview and the content check), 2 s budget each, on a possibly busy machine
    assert elapsed < 12, f"preview took {elapsed:.1f}s"
    leaked = json.dumps(result)
    for secret in ("test-secret-key", "<class", "__builtins__", "popen", "uid="):
        assert secret not in leaked


def test_a_template_bomb_cannot_be_saved(web, art, marketing):
    source = BOMBS[0]
    response = web.post("/admin/templates/edit/sms/01-welcome.txt",
                        data={"source": source, "csrf_token": marketing, "action": "save"})
    assert response.status_code == 422 and "Not saved" in response.text
    with art.sessions() as session:
        from patient_drip.models import TemplateVersion

        assert session.scalar(select(TemplateVersion).where(TemplateVersion.source == source)) is None


def test_email_preview_html_is_served_in_a_sandbox(web, art, marketing):
    source = ('{% extends "email/_layout.html" %}{% block subject %}Hi{% endblock %}{% block body %}'
              '<script>alert(document.cookie)</script><p>{{ first_name }}</p>{% endblock %}')
    result = web.post("/admin/templates/preview/email/01-welcome.html", json={"source": source},
                      headers={"X-CSRF-Token": marketing}).json()
    assert result["html_url"]
    preview = web.get(result["html_url"])
    csp = preview.headers["content-security-policy"]
    assert csp.startswith("sandbox") and "default-src 'none'" in csp and "script-src" not in csp.replace(
        "default-src 'none'", "")


# -- headers and cookies on every page -------------------------------------------------------------------


def _check_headers(response, where: str) -> list[str]:  # type: ignore[no-untyped-def]
    problems = []
    csp = response.headers.get("content-security-policy", "")
    if "frame-ancestors" not in csp:
        problems.append(f"{where}: no CSP frame-ancestors ({csp!r})")
    if response.headers.get("x-content-type-options") != "nosniff":
        problems.append(f"{where}: no X-Content-Type-Options: nosniff")
    if response.headers.get("referrer-policy") not in ("no-referrer", "same-origin", "strict-origin"):
        problems.append(f"{where}: Referrer-Policy {response.headers.get('referrer-policy')!r}")
    for cookie in [v for k, v in response.headers.multi_items() if k == "set-cookie"]:
        if "HttpOnly" not in cookie or "Secure" not in cookie or not re.search(r"SameSite=(lax|strict)", cookie, re.I):
            problems.append(f"{where}: cookie not flagged: {cookie}")
    return problems


def test_security_headers_on_every_page_and_error(web, art, clock, patient):
    admin = add_user(art, "admin")
    sign_in_as(web, art, admin, clock.now)
    api = token_for(art, "admin", email="headers-api@clinic.test")
    problems: list[str] = []
    seen = 0
    for method, path, _dependant in routes_of(web.app):
        if method != "GET":
            continue
        url = concrete(path).replace("/static", "/static/admin.css")
        response = web.get(url, headers=api if path.startswith("/api/") else None)
        seen += 1
        problems += _check_headers(response, f"GET {url} ({response.status_code})")
        private = path.startswith(("/admin", "/api/v1")) and not is_public(path)
        if private and response.status_code == 200 and "no-store" not in response.headers.get("cache-control", ""):
            problems.append(f"GET {url}: private page without Cache-Control: no-store")
    for url, method in (("/nowhere", "GET"), ("/healthz", "POST"), ("/admin/login", "PUT"),
                        (f"/u/{art.tokens.unsubscribe(patient)}", "GET"), ("/u/junk", "GET"), ("/b/junk", "GET"),
                        ("/admin/login", "GET"), ("/consult", "GET")):
        response = web.request(method, url)
        problems += _check_headers(response, f"{method} {url} ({response.status_code})")
    public_token_page = web.get(f"/u/{art.tokens.unsubscribe(patient)}")
    if "no-store" not in public_token_page.headers.get("cache-control", ""):
        problems.append("preference page (a patient's choices) is cacheable")
    if "max-age" not in web.get("/healthz").headers.get("strict-transport-security", ""):
        problems.append("no Strict-Transport-Security although DRIP_PUBLIC_URL is https")
    assert seen > 30
    assert problems == []


def test_every_private_route_is_covered_by_the_anonymous_access_test():
    # tests/test_routes_protected.py enumerates routes from the app with this allow-list; keep it
    # short: a new public route must be added there on purpose.
    assert len(PUBLIC) <= 13  # the 13th: /favicon.ico (a static icon)


def test_ids_beyond_64_bits_in_any_path_are_a_4xx_not_a_crash(art, clock):
    """An id the database cannot even compare (SQLite: OverflowError; PostgreSQL: DataError)."""
    app = create_app(art, clock=clock)
    huge = str(2**70)
    crashed: list[str] = []
    tried: list[str] = []
    with TestClient(app, base_url=BASE_URL, follow_redirects=False, raise_server_exceptions=False) as client:
        csrf = sign_in_as(client, art, add_user(art, "admin"), clock.now)
        api = token_for(art, "admin", email="ids-api@clinic.test")
        for method, path, _dependant in routes_of(app):
            if "_id}" not in path or method == "HEAD":
                continue
            url = concrete(re.sub(r"\{[a-z_]*_id(:[a-z]+)?\}", huge, path))
            tried.append(url)
            headers = api if path.startswith("/api/") else {"X-CSRF-Token": csrf}
            response = client.request(method, url, headers=headers, json={} if path.startswith("/api/") and method == "POST" else None,
                                      data={"csrf_token": csrf} if method == "POST" and not path.startswith("/api/") else None)
            if response.status_code >= 500:
                crashed.append(f"{method} {url} -> {response.status_code}")
    assert len(tried) >= 8 and crashed == []
