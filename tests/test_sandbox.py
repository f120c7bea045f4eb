"""The provider sandbox: provider-shaped API, recording, faults and signed callbacks."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import httpx
import pytest
from support.sandbox import WebhookSink
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader
from sendgrid.helpers.mail import Category, Mail
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from patient_drip.providers.sandbox import Fault, RecipientRule, SandboxConfig, SandboxServer, sms_segments

PATIENT = "+15551234567"


def twilio_client(sb: SandboxServer, token: str | None = None) -> Client:
    client = Client(sb.config.twilio_account_sid, token or sb.config.twilio_auth_token)
    client.api.base_url = sb.url
    return client


def sendgrid_client(sb: SandboxServer) -> SendGridAPIClient:
    return SendGridAPIClient(sb.config.sendgrid_api_key, host=sb.url)


def mail(to: str = "pat@example.com") -> Mail:
    return Mail("care@clinic.example", to, "Subject", "plain text", "<p>html</p>")


def twilio_messages_url(sb: SandboxServer) -> str:
    return f"{sb.url}/2010-04-01/Accounts/{sb.config.twilio_account_sid}/Messages.json"


def twilio_auth(sb: SandboxServer) -> tuple[str, str]:
    return (sb.config.twilio_account_sid, sb.config.twilio_auth_token)


# -- Twilio API shape --------------------------------------------------------------------------


def test_twilio_create_returns_twilios_message_json(sandbox: SandboxServer) -> None:
    response = httpx.post(
        twilio_messages_url(sandbox),
        auth=twilio_auth(sandbox),
        data={"To": PATIENT, "From": "+15005550006", "Body": "Hello"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert body["status"] == "queued"
    assert (body["to"], body["from"], body["body"], body["num_segments"]) == (PATIENT, "+15005550006", "Hello", "1")
    assert body["date_created"].endswith("+0000")
    assert body["uri"] == f"/2010-04-01/Accounts/{sandbox.config.twilio_account_sid}/Messages/{body['sid']}.json"


def test_twilio_wrong_credentials_get_401_with_code_20003(sandbox: SandboxServer) -> None:
    response = httpx.post(twilio_messages_url(sandbox), auth=("AC" + "0" * 32, "nope"), data={"To": PATIENT})
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 20003 and body["status"] == 401
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20003"
    assert sandbox.messages() == []


def test_accept_any_credentials_lets_any_account_in(make_sandbox) -> None:
    sb = make_sandbox(accept_any_credentials=True)
    response = httpx.post(
        f"{sb.url}/2010-04-01/Accounts/ACother/Messages.json",
        auth=("ACother", "whatever"),
        data={"To": PATIENT, "From": "+15005550006", "Body": "Hi"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({}, 21604),
        ({"To": "555-1234", "From": "+15005550006", "Body": "x"}, 21211),
        ({"To": PATIENT, "Body": "x"}, 21603),
        ({"To": PATIENT, "From": "+15005550006", "Body": "  "}, 21602),
        ({"To": PATIENT, "From": "+15005550006", "Body": "x" * 1601}, 21617),
        ({"To": PATIENT, "MessagingServiceSid": "MGnope", "Body": "x"}, 21705),
    ],
)
def test_twilio_invalid_requests_get_twilios_400_shape(sandbox: SandboxServer, form: dict, code: int) -> None:
    response = httpx.post(twilio_messages_url(sandbox), auth=twilio_auth(sandbox), data=form)
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert set(response.json()) >= {"code", "message", "more_info", "status"}


def test_twilio_junk_body_does_not_crash_the_sandbox(sandbox: SandboxServer) -> None:
    response = httpx.post(
        twilio_messages_url(sandbox), auth=twilio_auth(sandbox), content=b"\xff\xfe\x00garbage",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 21604


def test_twilio_sdk_list_filters_by_recipient_and_follows_pages(sandbox: SandboxServer) -> None:
    client = twilio_client(sandbox)
    sids = [client.messages.create(to=PATIENT, from_="+15005550006", body=f"m{i}").sid for i in range(5)]
    client.messages.create(to="+15557654321", from_="+15005550006", body="other")
    sandbox.state.wait_for(lambda s: all(m["date_sent"] for m in s.messages("twilio")))

    listed = client.messages.list(to=PATIENT, page_size=2)  # 3 pages through next_page_uri

    assert [m.sid for m in listed] == list(reversed(sids))  # newest first, like Twilio
    assert client.messages(sids[0]).fetch().body == "m0"


def test_twilio_status_callbacks_are_signed_like_twilio(sandbox: SandboxServer, webhook_sink: WebhookSink) -> None:
    callback = f"{webhook_sink.url}/status?m=12"
    sid = twilio_client(sandbox).messages.create(
        to=PATIENT, from_="+15005550006", body="Hi", status_callback=callback
    ).sid

    requests = webhook_sink.wait_for(2, "/status")
    validator = RequestValidator(sandbox.config.twilio_auth_token)
    statuses = []
    for request in requests:
        params = dict(parse_qsl(request.text, keep_blank_values=True))
        assert validator.validate(callback, params, request.headers["X-Twilio-Signature"])
        assert not validator.validate(callback, {**params, "MessageStatus": "x"}, request.headers["X-Twilio-Signature"])
        assert params["MessageSid"] == params["SmsSid"] == sid
        assert params["AccountSid"] == sandbox.config.twilio_account_sid
        assert (params["To"], params["From"]) == (PATIENT, "+15005550006")
        statuses.append(params["MessageStatus"])
    assert statuses == ["sent", "delivered"]
    assert sandbox.messages("twilio")[0]["status"] == "delivered"


def test_undeliverable_number_reports_undelivered_with_error_code(sandbox: SandboxServer, webhook_sink: WebhookSink) -> None:
    twilio_client(sandbox).messages.create(
        to="+15005550030", from_="+15005550006", body="Hi", status_callback=f"{webhook_sink.url}/status"
    )
    _, final = webhook_sink.wait_for(2, "/status")
    params = dict(parse_qsl(final.text, keep_blank_values=True))
    assert (params["MessageStatus"], params["ErrorCode"]) == ("undelivered", "30003")


def test_manual_status_callback_for_out_of_order_tests(sandbox: SandboxServer, webhook_sink: WebhookSink) -> None:
    sandbox.configure(twilio_status_callbacks=False)
    sid = twilio_client(sandbox).messages.create(
        to=PATIENT, from_="+15005550006", body="Hi", status_callback=f"{webhook_sink.url}/status"
    ).sid

    response = httpx.post(f"{sandbox.url}/_sandbox/twilio/status", json={"sid": sid, "status": "delivered"})
    assert response.json()["status_code"] == 200
    sandbox.send_twilio_status(sid, "sent")  # the late "sent" after "delivered"

    received = [dict(parse_qsl(r.text, keep_blank_values=True))["MessageStatus"] for r in webhook_sink.wait_for(2, "/status")]
    assert received == ["delivered", "sent"]


def test_callbacks_never_leave_loopback_unless_allowed(sandbox: SandboxServer) -> None:
    twilio_client(sandbox).messages.create(
        to=PATIENT, from_="+15005550006", body="Hi", status_callback="https://clinic.example/status"
    )
    entries = sandbox.wait_for_callbacks(2, "twilio_status")
    assert all(e["error"].startswith("skipped: not a loopback URL") for e in entries)


def test_inbound_sms_is_posted_signed_and_the_twiml_reply_is_recorded(make_sandbox, webhook_sink: WebhookSink) -> None:
    webhook_sink.respond(
        "/webhooks/twilio/sms", "<?xml version='1.0'?><Response><Message>You are unsubscribed.</Message></Response>",
        content_type="text/xml",
    )
    sb = make_sandbox(twilio_inbound_url=f"{webhook_sink.url}/webhooks/twilio/sms")

    response = httpx.post(f"{sb.url}/_sandbox/twilio/inbound", json={"from": PATIENT, "to": "+15005550006", "body": "STOP"})

    assert response.status_code == 200
    assert "You are unsubscribed." in response.text
    [request] = webhook_sink.wait_for(1, "/webhooks/twilio/sms")
    params = dict(parse_qsl(request.text, keep_blank_values=True))
    assert (params["From"], params["To"], params["Body"], params["SmsStatus"]) == (PATIENT, "+15005550006", "STOP", "received")
    assert RequestValidator(sb.config.twilio_auth_token).validate(
        f"{webhook_sink.url}/webhooks/twilio/sms", params, request.headers["X-Twilio-Signature"]
    )
    directions = [(m["direction"], m["to"], m["text"]) for m in sb.messages("twilio")]
    assert directions == [("inbound", "+15005550006", "STOP"), ("outbound-reply", PATIENT, "You are unsubscribed.")]


# -- SendGrid API shape ------------------------------------------------------------------------


def test_sendgrid_send_answers_202_with_x_message_id(sandbox: SandboxServer) -> None:
    response = sendgrid_client(sandbox).send(mail())
    assert response.status_code == 202
    assert response.body == b""
    [recorded] = sandbox.messages("sendgrid")
    assert response.headers["X-Message-Id"] == recorded["id"]
    assert (recorded["subject"], recorded["text"], recorded["html"]) == ("Subject", "plain text", "<p>html</p>")


def test_sendgrid_wrong_key_gets_sendgrids_401(sandbox: SandboxServer) -> None:
    response = httpx.post(f"{sandbox.url}/v3/mail/send", headers={"Authorization": "Bearer nope"}, json={})
    assert response.status_code == 401
    assert response.json() == {
        "errors": [{"message": "The provided authorization grant is invalid, expired, or revoked", "field": None, "help": None}]
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", None),
        (b"[]", None),
        (json.dumps({"from": {"email": "a@b.co"}}).encode(), "personalizations"),
        (json.dumps({"personalizations": [{"to": [{"email": "nope"}]}]}).encode(), "personalizations.0.to.0.email"),
        (json.dumps({"personalizations": [{"to": [{"email": "p@x.co"}]}], "from": {"email": "a@b.co"},
                     "subject": "s"}).encode(), "content"),
        (json.dumps({"personalizations": [{"to": [{"email": "p@x.co"}]}], "from": {"email": "a@b.co"}, "subject": "s",
                     "content": [{"type": "text/html", "value": "h"}, {"type": "text/plain", "value": "t"}]}).encode(),
         "content"),
    ],
)
def test_sendgrid_invalid_requests_get_sendgrids_400_shape(sandbox: SandboxServer, body: bytes, field: str | None) -> None:
    response = httpx.post(
        f"{sandbox.url}/v3/mail/send", content=body,
        headers={"Authorization": f"Bearer {sandbox.config.sendgrid_api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == field and error["message"]


def test_sendgrid_events_are_signed_and_verify_with_the_sandbox_public_key(make_sandbox, webhook_sink: WebhookSink) -> None:
    sb = make_sandbox(sendgrid_event_url=f"{webhook_sink.url}/webhooks/sendgrid/events")
    message = mail()
    message.add_custom_arg({"drip_message_id": "42"})
    message.add_category(Category("welcome-email"))
    x_message_id = sendgrid_client(sb).send(message).headers["X-Message-Id"]

    [request] = webhook_sink.wait_for(1, "/webhooks/sendgrid/events")
    signature = request.headers[EventWebhookHeader.SIGNATURE]
    timestamp = request.headers[EventWebhookHeader.TIMESTAMP]
    public_key = httpx.get(f"{sb.url}/_sandbox/sendgrid-public-key").json()["public_key"]
    assert public_key == sb.public_key
    # EventWebhook wants the key as an object: pass the base64 string to the constructor.
    assert EventWebhook(public_key).verify_signature(request.text, signature, timestamp)
    assert not EventWebhook(public_key).verify_signature(request.text.replace("delivered", "bounce"), signature, timestamp)
    assert request.text.endswith("\r\n")

    events = json.loads(request.text)
    assert [e["event"] for e in events] == ["processed", "delivered"]
    for event in events:
        assert event["sg_message_id"].startswith(x_message_id + ".")
        assert event["drip_message_id"] == "42"  # custom args are flattened into the event
        assert event["category"] == "welcome-email"
        assert event["email"] == "pat@example.com"
        assert event["sg_event_id"]
    assert len({e["sg_event_id"] for e in events}) == 2


def test_bounce_recipient_is_accepted_then_bounces(make_sandbox, webhook_sink: WebhookSink) -> None:
    sb = make_sandbox(sendgrid_event_url=f"{webhook_sink.url}/events")
    assert sendgrid_client(sb).send(mail("bounce@example.com")).status_code == 202
    [request] = webhook_sink.wait_for(1, "/events")
    bounce = json.loads(request.text)[-1]
    assert (bounce["event"], bounce["type"], bounce["email"]) == ("bounce", "bounce", "bounce@example.com")
    sb.state.wait_for(lambda s: s.messages("sendgrid")[0]["status"] == "bounce")


def test_arbitrary_sendgrid_events_can_be_posted_signed(make_sandbox, webhook_sink: WebhookSink) -> None:
    sb = make_sandbox(sendgrid_event_url=f"{webhook_sink.url}/events")
    response = httpx.post(
        f"{sb.url}/_sandbox/sendgrid/events",
        json=[{"event": "spamreport", "email": "pat@example.com", "drip_message_id": "7", "sg_message_id": "abc.filter0"}],
    )
    assert response.json()["status_code"] == 200
    sb.send_sendgrid_events([{"event": "unsubscribe", "email": "pat@example.com", "drip_message_id": "7"}])

    first, second = webhook_sink.wait_for(2, "/events")
    for request, name in ((first, "spamreport"), (second, "unsubscribe")):
        [event] = json.loads(request.text)
        assert event["event"] == name and event["timestamp"] and event["sg_event_id"]
        assert EventWebhook(sb.public_key).verify_signature(
            request.text, request.headers[EventWebhookHeader.SIGNATURE], request.headers[EventWebhookHeader.TIMESTAMP]
        )


def test_a_configured_private_key_gives_a_stable_public_key(make_sandbox) -> None:
    first = make_sandbox()
    pem = first.state.signer.private_key_pem()
    assert make_sandbox(sendgrid_private_key_pem=pem).public_key == first.public_key


# -- faults, control API, inbox ----------------------------------------------------------------


def test_fault_queue_over_http_then_cleared(sandbox: SandboxServer) -> None:
    control = httpx.post(
        f"{sandbox.url}/_sandbox/faults",
        json={"twilio": [{"status": 503, "times": 2}], "latency_ms": {"twilio": 10},
              "rules": [{"provider": "twilio", "to": "+1555000*", "code": 21610}]},
    )
    assert control.status_code == 200
    client = twilio_client(sandbox)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to=PATIENT, from_="+15005550006", body="x")
        assert caught.value.status == 503
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to="+15550001234", from_="+15005550006", body="x")
    assert caught.value.code == 21610

    httpx.delete(f"{sandbox.url}/_sandbox/faults")
    assert client.messages.create(to="+15550001234", from_="+15005550006", body="x").status == "queued"


def test_fault_api_rejects_junk(sandbox: SandboxServer) -> None:
    for body in ([1, 2], {"twilio": [{"nonsense": 1}]}, {"twilio": [{}]}, {"rules": [{"provider": "fax", "to": "x"}]}):
        response = httpx.post(f"{sandbox.url}/_sandbox/faults", json=body)
        assert response.status_code == 400 and response.json()["error"]
    assert httpx.post(f"{sandbox.url}/_sandbox/faults", content=b"{").status_code == 400


def test_python_fault_api_with_recipient_rule(sandbox: SandboxServer) -> None:
    sandbox.add_rule(RecipientRule("sendgrid", "*@blocked.example", status=400, recipient=True))
    sandbox.add_fault("sendgrid", Fault(status=500))
    client = sendgrid_client(sandbox)
    with pytest.raises(Exception) as first:
        client.send(mail())
    assert first.value.status_code == 500
    with pytest.raises(Exception) as second:
        client.send(mail("x@blocked.example"))
    assert second.value.status_code == 400
    assert client.send(mail()).status_code == 202


def test_config_can_be_changed_over_http(sandbox: SandboxServer) -> None:
    response = httpx.post(f"{sandbox.url}/_sandbox/config", json={"sendgrid_api_key": "SG.new", "callback_delay_ms": 1})
    assert response.status_code == 200
    assert response.json()["sendgrid_api_key"] == "SG.new"
    assert "sendgrid_private_key_pem" not in response.json()
    assert sandbox.config.callback_delay_ms == 1
    assert httpx.post(f"{sandbox.url}/_sandbox/config", json={"no_such": 1}).status_code == 400


def test_messages_endpoint_filters_and_resets(sandbox: SandboxServer) -> None:
    client = twilio_client(sandbox)
    client.messages.create(to=PATIENT, from_="+15005550006", body="a")
    sendgrid_client(sandbox).send(mail())
    listed = httpx.get(f"{sandbox.url}/_sandbox/messages", params={"provider": "twilio"}).json()
    assert listed["count"] == 1 and listed["messages"][0]["to"] == PATIENT
    assert httpx.get(f"{sandbox.url}/_sandbox/messages", params={"to": "pat@example.com"}).json()["count"] == 1
    httpx.delete(f"{sandbox.url}/_sandbox/messages")
    assert httpx.get(f"{sandbox.url}/_sandbox/messages").json()["count"] == 0


def test_inbox_page_shows_messages_escaped(sandbox: SandboxServer) -> None:
    twilio_client(sandbox).messages.create(to=PATIENT, from_="+15005550006", body="<script>alert(1)</script> hi")
    page = httpx.get(f"{sandbox.url}/")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt; hi" in page.text
    assert "<script>" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_unknown_provider_paths_get_provider_404s(sandbox: SandboxServer) -> None:
    assert httpx.get(f"{sandbox.url}/2010-04-01/Accounts/AC1/Calls.json").json()["code"] == 20404
    assert httpx.get(f"{sandbox.url}/v3/templates").status_code == 404


@pytest.mark.parametrize(
    ("body", "segments"),
    [("a" * 160, 1), ("a" * 161, 2), ("€" * 80, 1), ("’" * 70, 1), ("’" * 71, 2), ("a\u00a0b" * 30, 2)],
)
def test_segment_count_follows_gsm7_and_ucs2_rules(body: str, segments: int) -> None:
    assert sms_segments(body) == segments


def test_cli_style_kwargs_accept_short_names_and_none_means_default() -> None:
    config = SandboxConfig.from_kwargs(account_sid="AC" + "1" * 32, auth_token="tok", sendgrid_api_key=None)
    assert (config.twilio_account_sid, config.twilio_auth_token) == ("AC" + "1" * 32, "tok")
    assert config.sendgrid_api_key == SandboxConfig().sendgrid_api_key
    with pytest.raises(TypeError):
        SandboxConfig.from_kwargs(no_such_setting=1)
