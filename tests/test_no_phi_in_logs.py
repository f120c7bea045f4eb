"""No PHI in logs: a whole sequence in providers mode against the sandbox -- the public form, a CSV
import with bad rows, sends with provider errors and a timeout, status callbacks and events, patient
replies (HELP, STOP, a crisis, free text), a booking, a staff search, a forged webhook -- with
logging at DEBUG as `drip serve` configures it. No email address, phone number, name or message
body of a contact appears in any log line: not in what our code logs (raw records), not in what the
handler writes (formatted lines, tracebacks included), not in uvicorn's access log."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from support.builders import drive, settled
from support.webhooks import booking_headers
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.contacts.importer import import_csv
from patient_drip.logs import AccessLogFilter, RedactingFilter, configure_logging, redact
from patient_drip.models import Message
from patient_drip.dispatch.reconcile import reconcile_unknown
from patient_drip.runtime import Runtime
from patient_drip.providers.sandbox import Fault, RecipientRule
from support.staff import token_for
from support.live import LiveApp, live_sandbox_runtime, wait_until

NAME, SURNAME = "Quintessa", "Zebrowski"
EMAIL = "quintessa.zebrowski@example.com"
PHONE_E164, PHONE_NATIONAL = "+13125550199", "(312) 555-0199"
OTHER_EMAIL, OTHER_PHONE = "orrin.vantreight@example.com", "+13125550188"
CRISIS = "honestly I want to kill myself tonight"
FREE_TEXT = "please stop texting me, Quintessa here"
CSV = f"""first_name,last_name,email,phone,consent_email,consent_sms
Orrin,Vantreight,{OTHER_EMAIL},{OTHER_PHONE},yes,yes
Broken,Row,not-an-email@,312-555-01,yes,maybe
Orrin,Vantreight,{OTHER_EMAIL},{OTHER_PHONE},yes,yes
Bouncy,Person,bounce@example.com,+15005550001,yes,yes
"""


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged(sqlite_url, sandbox, clock) -> Iterator[tuple[Runtime, Capture, io.StringIO]]:
    rt = live_sandbox_runtime(sqlite_url, sandbox, log_level="DEBUG", provider_timeout_seconds=1,
                              booking_webhook_secret="phi-booking-secret", staff_alert_email="alerts@clinic.test")
    settings = rt.settings
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {name: logging.getLogger(name).level for name in
                                            ("sqlalchemy", "twilio", "urllib3", "httpx", "uvicorn.access")})
    configure_logging(settings)  # exactly what `drip serve` / `drip worker` do
    written = io.StringIO()
    root.handlers[0].setStream(written)  # type: ignore[attr-defined]
    capture = Capture()
    root.addHandler(capture)
    try:
        with LiveApp(rt, clock, access_log=True):
            yield rt, capture, written
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
        rt.close()


def test_a_whole_sequence_logs_no_patient_data(logged, sandbox, clock):
    rt, capture, written = logged
    base = rt.settings.public_url
    # The public form, and a CSV import with bad rows.
    assert httpx.post(f"{base}/api/consultations", json={
        "first_name": NAME, "last_name": SURNAME, "email": EMAIL, "phone": PHONE_NATIONAL,
        "consent_email": True, "consent_sms": True}).status_code == 202
    report = import_csv(rt, io.StringIO(CSV), rt.campaign("ketamine-consult"), clock.now, "staff@clinic.test")
    assert report.enrolled == 2 and report.failed == 2
    # Sends, with a rate limit, an outage blip and a timeout on the way.
    sandbox.add_fault("twilio", Fault(status=429, retry_after=60))
    sandbox.add_fault("sendgrid", Fault(status=503))
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=1300))
    sandbox.add_rule(RecipientRule("sendgrid", "bounce@*", outcome="bounce"))
    dispatcher = Dispatcher(rt, "phi-worker")
    drive(rt, clock, dispatcher, until=clock.now + timedelta(hours=1))
    # Replies: help, a crisis, a free-text opt-out, someone unknown.
    for sender, body in ((PHONE_E164, "HELP"), (PHONE_E164, CRISIS), (OTHER_PHONE, FREE_TEXT), ("+13125550111", "who is this")):
        assert sandbox.send_inbound_sms(sender, body).status_code == 200
    # The booking tool says she booked; a forged webhook is refused; a staff member searches.
    import json

    body = json.dumps({"email": EMAIL}).encode()
    signed = booking_headers("phi-booking-secret", body, clock.now)
    assert httpx.post(f"{base}/webhooks/booking", content=body, headers=signed).status_code == 200
    assert httpx.post(f"{base}/webhooks/booking", content=body,
                      headers={**signed, "X-Drip-Signature": "sha256=0"}).status_code == 403
    api = token_for(rt, "staff", email="searcher@clinic.test")
    assert httpx.get(f"{base}/api/v1/contacts", params={"q": EMAIL}, headers=api).status_code == 200
    drive(rt, clock, dispatcher)
    reconcile_unknown(rt, clock.now + timedelta(hours=1))
    wait_until(lambda: settled(rt), timeout=10)
    time.sleep(0.2)

    with rt.sessions() as session:
        bodies = [m.body_text for m in session.scalars(select(Message)) if m.body_text]
        subjects = [m.subject for m in session.scalars(select(Message)) if m.subject]
    assert len(bodies) > 8
    secrets = {EMAIL, EMAIL.upper(), OTHER_EMAIL, "bounce@example.com", PHONE_E164, PHONE_E164[2:], "555-0199",
               OTHER_PHONE, OTHER_PHONE[2:], "555-0188", "+15005550001", NAME, SURNAME, "Orrin", "Vantreight",
               CRISIS, "kill myself", FREE_TEXT, "who is this", "not-an-email@", "312-555-01"}
    # Message bodies: every distinct line of what patients were sent (long enough to be specific).
    for text in bodies + subjects:
        secrets.update(line.strip() for line in text.splitlines() if len(line.strip()) >= 25)
    raw = [(r.name, r.getMessage() + ("\n" + logging.Formatter().formatException(r.exc_info) if r.exc_info else ""))
           for r in capture.records]
    assert len(raw) > 20, "the sequence should have logged something"
    names = {name for name, _ in raw}
    assert "uvicorn.access" in names and "drip.dispatch" in names and "drip.webhooks" in names
    leaks = [(name, secret, line[:200]) for name, line in raw for secret in secrets
             if secret.lower() in line.lower() and name != "uvicorn.access"]
    assert leaks == [], leaks[:10]
    # What the handler wrote -- uvicorn's access lines included -- has none of it either.
    output = written.getvalue()
    assert "GET /api/v1/contacts" in output
    written_leaks = sorted({secret for secret in secrets if secret.lower() in output.lower()})
    assert written_leaks == []
    assert not re.search(r"/[ub]/[A-Za-z0-9_-]{10,}", output), "link tokens in the access log"


def test_the_redacting_filter_masks_addresses_and_numbers_in_messages_and_tracebacks():
    logger = logging.getLogger("drip.test.redact")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("contact dana.r@example.com at %s or (312) 555-0142", "+13125550142")
        try:
            raise ValueError("duplicate key (email)=(dana.r@example.com)")
        except ValueError:
            logger.exception("insert failed for message %s", 42)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "example.com" not in text and "555" not in text
    assert "<email>" in text and "<phone>" in text and "message 42" in text and "ValueError" in text
    assert redact("2026-03-02 15:30:00 message 123 took 45 ms") == "2026-03-02 15:30:00 message 123 took 45 ms"


def test_access_log_lines_lose_query_strings_and_link_tokens():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/u/WzEsMl0.abcDEF123?x=dana%40example.com", "1.1", 200), None)
    AccessLogFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /u/… HTTP/1.1" 200'
