"""Senders through the real twilio / sendgrid SDKs against the sandbox over loopback HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from twilio.request_validator import RequestValidator

from patient_drip.providers.sandbox import SandboxServer
from patient_drip.providers.outbox import OutboxSender
from patient_drip.providers.sendgrid import SendGridSender
from patient_drip.providers.twilio import TwilioSender
from patient_drip.providers.types import (
    AccountSendError,
    AmbiguousSendError,
    AuthSendError,
    Channel,
    OutgoingMessage,
    PermanentSendError,
    Sender,
    TransientSendError,
)
from support.live import loopback_url as closed_port_url  # a port nothing listens on

CALLBACK_BASE = "http://127.0.0.1:9/webhooks/twilio/status"  # loopback, nothing listening
SERVICE_SID = "MG" + "1" * 32
PATIENT_PHONE = "+15551234567"
PATIENT_EMAIL = "pat@example.com"


def sms(message_id: int = 41, to: str = PATIENT_PHONE, text: str = "Your reading for this week is ready.") -> OutgoingMessage:
    return OutgoingMessage(message_id=message_id, channel=Channel.SMS, to=to, text=text)


def email(message_id: int = 42, to: str = PATIENT_EMAIL) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=message_id,
        channel=Channel.EMAIL,
        to=to,
        text="Hello Pat,\n\nBook your free consultation: https://clinic.example/b/abc",
        subject="Your reading for this week",
        html="<p>Hello Pat,</p><p><a href='https://clinic.example/b/abc'>Book</a></p>",
        unsubscribe_url="https://clinic.example/u/tok123",
        categories=("ketamine-consult", "welcome-email"),
    )


def twilio_sender(sb: SandboxServer, **overrides: object) -> TwilioSender:
    kwargs: dict = {
        "from_number": "+15005550006",
        "status_callback_base": CALLBACK_BASE,
        "base_url": sb.url,
        "timeout": 2.0,
    }
    kwargs.update(overrides)
    return TwilioSender(sb.config.twilio_account_sid, sb.config.twilio_auth_token, **kwargs)


def sendgrid_sender(sb: SandboxServer, **overrides: object) -> SendGridSender:
    kwargs: dict = {"base_url": sb.url, "timeout": 2.0}
    kwargs.update(overrides)
    return SendGridSender(sb.config.sendgrid_api_key, "care@clinic.example", "Clinic Care Team", **kwargs)


class HangUpServer:
    """Accepts a connection, reads the request, then closes without answering: the
    "connection dropped after the request was sent" case."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests_seen = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests_seen += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hang_up_server():
    server = HangUpServer()
    yield server
    server.close()


# -- success paths ------------------------------------------------------------------------------


def test_outbox_sender_returns_deterministic_id_and_sends_nothing() -> None:
    sender = OutboxSender(Channel.SMS)
    assert isinstance(sender, Sender)
    assert sender.send(sms(7)) == "outbox-7"
    with pytest.raises(ValueError):
        sender.send(email())


def test_twilio_send_returns_sid_and_sandbox_records_status_callback_with_message_id(sandbox: SandboxServer) -> None:
    sid = twilio_sender(sandbox).send(sms(41))

    assert sid.startswith("SM") and len(sid) == 34
    [recorded] = sandbox.messages("twilio")
    assert recorded["id"] == sid
    assert recorded["to"] == PATIENT_PHONE
    assert recorded["text"] == "Your reading for this week is ready."
    assert recorded["from"] == "+15005550006"
    assert recorded["status_callback"] == f"{CALLBACK_BASE}?m=41"
    assert recorded["raw"]["params"]["StatusCallback"] == f"{CALLBACK_BASE}?m=41"


def test_twilio_prefers_messaging_service_over_from_number(sandbox: SandboxServer) -> None:
    twilio_sender(sandbox, messaging_service_sid=SERVICE_SID).send(sms())

    params = sandbox.messages("twilio")[0]["raw"]["params"]
    assert params["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in params


def test_status_callback_url_keeps_an_existing_query() -> None:
    sender = TwilioSender("AC" + "0" * 32, "token", from_number="+15005550006",
                          status_callback_base="https://clinic.example/hook?src=twilio")
    assert sender.status_callback_url(5) == "https://clinic.example/hook?src=twilio&m=5"


def test_sendgrid_send_returns_x_message_id_and_builds_a_compliant_mail(sandbox: SandboxServer) -> None:
    message_id = sendgrid_sender(sandbox).send(email(42))

    [recorded] = sandbox.messages("sendgrid")
    assert recorded["id"] == message_id
    assert recorded["to"] == PATIENT_EMAIL
    assert recorded["from"] == "care@clinic.example"
    assert recorded["from_name"] == "Clinic Care Team"
    assert recorded["subject"] == "Your reading for this week"
    assert recorded["content_types"] == ["text/plain", "text/html"]
    assert recorded["headers"] == {
        "List-Unsubscribe": "<https://clinic.example/u/tok123>, "
        "<mailto:unsubscribe@clinic.example?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert recorded["custom_args"] == {"drip_message_id": "42"}
    assert recorded["categories"] == ["ketamine-consult", "welcome-email"]
    assert recorded["tracking_settings"] == {"click_tracking": {"enable": False, "enable_text": False}}


def test_sendgrid_email_without_unsubscribe_url_has_no_list_unsubscribe_headers(sandbox: SandboxServer) -> None:
    message = OutgoingMessage(1, Channel.EMAIL, PATIENT_EMAIL, "text only", subject="Hi")
    sendgrid_sender(sandbox).send(message)
    recorded = sandbox.messages("sendgrid")[0]
    assert recorded["headers"] == {}
    assert recorded["content_types"] == ["text/plain"]


# -- error classes: Twilio ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "code", "reason"),
    [
        ("+15005550001", 21211, "Invalid phone number"),
        ("+15005550004", 21610, "Recipient opted out (STOP) at the carrier"),
        ("+15005550009", 21614, "Number is not a mobile number"),
    ],
)
def test_twilio_recipient_errors_are_permanent(sandbox: SandboxServer, to: str, code: int, reason: str) -> None:
    with pytest.raises(PermanentSendError) as caught:
        twilio_sender(sandbox).send(sms(to=to))
    assert caught.value.code == code
    assert caught.value.reason == reason
    assert not isinstance(caught.value, AccountSendError)
    assert to not in str(caught.value)  # no phone numbers in reasons (they end up in logs)
    assert sandbox.messages("twilio") == []


def test_twilio_injected_error_code_is_permanent(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", code=21610)
    with pytest.raises(PermanentSendError) as caught:
        twilio_sender(sandbox).send(sms())
    assert caught.value.code == 21610


def test_twilio_429_with_retry_after_is_transient_with_retry_after(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", status=429, retry_after=7)
    with pytest.raises(TransientSendError) as caught:
        twilio_sender(sandbox).send(sms())
    assert caught.value.retry_after == 7.0
    assert caught.value.code == 20429


def test_twilio_503_is_transient(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", status=503)
    sender = twilio_sender(sandbox)
    with pytest.raises(TransientSendError) as caught:
        sender.send(sms())
    assert caught.value.retry_after is None
    assert sender.send(sms()).startswith("SM")  # the fault was one-shot; the next send works


@pytest.mark.parametrize("how", ["wrong token", "injected 20003"])
def test_twilio_bad_credentials_are_auth_errors(sandbox: SandboxServer, how: str) -> None:
    if how == "wrong token":
        sender = TwilioSender(sandbox.config.twilio_account_sid, "wrong", from_number="+15005550006",
                              status_callback_base=CALLBACK_BASE, base_url=sandbox.url)
    else:
        sandbox.add_fault("twilio", code=20003)
        sender = twilio_sender(sandbox)
    with pytest.raises(AuthSendError) as caught:
        sender.send(sms())
    assert caught.value.code == 20003


def test_twilio_connection_refused_is_transient() -> None:
    sender = TwilioSender("AC" + "0" * 32, "token", from_number="+15005550006",
                          status_callback_base=CALLBACK_BASE, base_url=closed_port_url(), timeout=1)
    with pytest.raises(TransientSendError):
        sender.send(sms())


def test_twilio_timeout_after_sending_is_ambiguous_and_the_message_was_accepted(sandbox: SandboxServer) -> None:
    sandbox.add_fault("twilio", timeout=True, hang_ms=3000)
    sender = twilio_sender(sandbox, timeout=0.5)
    before = datetime.now(UTC) - timedelta(seconds=1)

    with pytest.raises(AmbiguousSendError):
        sender.send(sms(77))

    [recorded] = sandbox.messages("twilio")
    assert recorded["status_callback"].endswith("?m=77")
    # Reconciliation: Twilio lists it once it has a date_sent (the sandbox "sends" after ~5 ms).
    sandbox.state.wait_for(lambda s: s.get_message(recorded["id"])["date_sent"])
    found = twilio_sender(sandbox).find_sent(PATIENT_PHONE, before)
    assert [m.sid for m in found] == [recorded["id"]]
    assert found[0].body == recorded["text"]


def test_find_sent_filters_by_recipient_and_time(sandbox: SandboxServer) -> None:
    sender = twilio_sender(sandbox)
    sid_a = sender.send(sms(1, to="+15551110001"))
    sender.send(sms(2, to="+15551110002"))
    sandbox.state.wait_for(lambda s: all(m["date_sent"] for m in s.messages("twilio")))

    found = sender.find_sent("+15551110001", datetime.now(UTC) - timedelta(minutes=5))
    assert [m.sid for m in found] == [sid_a]
    assert found[0].status in {"sent", "delivered"}
    assert sender.find_sent("+15551110001", datetime.now(UTC) + timedelta(minutes=5)) == []


def test_find_sent_with_bad_credentials_is_an_auth_error(sandbox: SandboxServer) -> None:
    sender = TwilioSender(sandbox.config.twilio_account_sid, "wrong", from_number="+15005550006",
                          status_callback_base=CALLBACK_BASE, base_url=sandbox.url)
    with pytest.raises(AuthSendError):
        sender.find_sent(PATIENT_PHONE, datetime.now(UTC))


# -- error classes: SendGrid -------------------------------------------------------------------


def test_sendgrid_429_is_transient_with_retry_after(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", status=429, retry_after=9)
    with pytest.raises(TransientSendError) as caught:
        sendgrid_sender(sandbox).send(email())
    assert caught.value.code == 429
    assert caught.value.retry_after == 9.0


def test_sendgrid_503_is_transient(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", status=503)
    with pytest.raises(TransientSendError):
        sendgrid_sender(sandbox).send(email())


@pytest.mark.parametrize("how", ["invalid@ rule", "injected fault"])
def test_sendgrid_400_on_the_recipient_is_permanent(sandbox: SandboxServer, how: str) -> None:
    to = "invalid@example.com" if how == "invalid@ rule" else PATIENT_EMAIL
    if how == "injected fault":
        sandbox.add_fault("sendgrid", status=400, recipient=True)
    with pytest.raises(PermanentSendError) as caught:
        sendgrid_sender(sandbox).send(email(to=to))
    assert caught.value.reason.startswith("Invalid recipient address")
    assert not isinstance(caught.value, AccountSendError)


def test_sendgrid_400_on_the_sender_address_affects_all_recipients(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", status=400, field="from.email", message="The from email does not contain a valid address.")
    with pytest.raises(AccountSendError) as caught:
        sendgrid_sender(sandbox).send(email())
    assert isinstance(caught.value, AccountSendError) and not isinstance(caught.value, PermanentSendError)


def test_sendgrid_wrong_api_key_is_auth_error(sandbox: SandboxServer) -> None:
    sender = SendGridSender("SG.wrong", "care@clinic.example", "Clinic", base_url=sandbox.url)
    with pytest.raises(AuthSendError) as caught:
        sender.send(email())
    assert caught.value.code == 401


def test_sendgrid_connection_refused_is_transient() -> None:
    sender = SendGridSender("SG.key", "care@clinic.example", "Clinic", base_url=closed_port_url(), timeout=1)
    with pytest.raises(TransientSendError):
        sender.send(email())


def test_sendgrid_timeout_after_sending_is_ambiguous_and_the_mail_was_accepted(sandbox: SandboxServer) -> None:
    sandbox.add_fault("sendgrid", timeout=True, hang_ms=3000)
    with pytest.raises(AmbiguousSendError):
        sendgrid_sender(sandbox, timeout=0.5).send(email(88))
    [recorded] = sandbox.messages("sendgrid")
    assert recorded["custom_args"] == {"drip_message_id": "88"}


@pytest.mark.parametrize("provider", ["twilio", "sendgrid"])
def test_connection_dropped_after_the_request_was_sent_is_ambiguous(hang_up_server: HangUpServer, provider: str) -> None:
    if provider == "twilio":
        sender: TwilioSender | SendGridSender = TwilioSender(
            "AC" + "0" * 32, "token", from_number="+15005550006", status_callback_base=CALLBACK_BASE,
            base_url=hang_up_server.url, timeout=2,
        )
        message = sms()
    else:
        sender = SendGridSender("SG.key", "care@clinic.example", "Clinic", base_url=hang_up_server.url, timeout=2)
        message = email()
    with pytest.raises(AmbiguousSendError):
        sender.send(message)
    assert hang_up_server.requests_seen == 1


# -- callbacks end to end ----------------------------------------------------------------------


def test_twilio_status_callbacks_reach_the_app_signed_and_carry_our_message_id(sandbox: SandboxServer, webhook_sink) -> None:
    base = f"{webhook_sink.url}/webhooks/twilio/status"
    sid = twilio_sender(sandbox, status_callback_base=base).send(sms(55))

    sent, delivered = webhook_sink.wait_for(2, "/webhooks/twilio/status")
    validator = RequestValidator(sandbox.config.twilio_auth_token)
    for request, status in ((sent, "sent"), (delivered, "delivered")):
        assert request.path == "/webhooks/twilio/status?m=55"
        params = dict(parse_qsl(request.text, keep_blank_values=True))
        assert params["MessageSid"] == sid and params["MessageStatus"] == status
        assert validator.validate(webhook_sink.url + request.path, params, request.headers["X-Twilio-Signature"])


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [Channel.SMS, Channel.EMAIL])
def test_eight_threads_sending_at_once_all_succeed_with_distinct_ids(sandbox: SandboxServer, channel: Channel) -> None:
    sender: TwilioSender | SendGridSender = twilio_sender(sandbox) if channel == Channel.SMS else sendgrid_sender(sandbox)
    make: Callable[[int], OutgoingMessage] = (lambda i: sms(i)) if channel == Channel.SMS else (lambda i: email(i))
    per_thread = 10
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            try:
                provider_id = sender.send(make(n * 100 + i))
            except BaseException as exc:  # collected and asserted below
                with lock:
                    errors.append(exc)
            else:
                with lock:
                    ids.append(provider_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(ids) == len(set(ids)) == 8 * per_thread
    provider = "twilio" if channel == Channel.SMS else "sendgrid"
    assert {m["id"] for m in sandbox.messages(provider)} == set(ids)
