"""Real delivery: the official Twilio and SendGrid SDKs against the sandbox over loopback HTTP, with
the sandbox calling our real web server back (signed) — every path from issue 3."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from patient_drip import db
from support.builders import add_contact, contact, messages_for, run_until_done, settled
from support.live import LiveApp, live_sandbox_runtime, wait_until
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Contact, Enrollment, Message, MessageStatus
from patient_drip.dispatch.reconcile import reconcile_unknown
from patient_drip.runtime import Runtime
from patient_drip.providers.sandbox import Fault


@pytest.fixture
def provider_rt(database_url, sandbox, clock) -> Iterator[Runtime]:
    rt = live_sandbox_runtime(database_url, sandbox)
    with LiveApp(rt, clock):
        yield rt
    rt.close()


def sms_of(rt: Runtime, contact_id: int) -> list[Message]:
    return [m for m in messages_for(rt, contact_id) if m.channel == "sms"]


def received(sandbox, to: str) -> list[dict]:
    return [m for m in sandbox.messages() if m["to"] == to and m.get("direction", "outbound") != "inbound"]


def test_whole_sequence_through_both_sdks_with_opt_out_bounce_and_one_click(provider_rt, sandbox, clock):
    rt = provider_rt
    people = {
        "stays": add_contact(rt, clock.now, email="stays@example.com", phone="+13125550101"),
        "texts_stop": add_contact(rt, clock.now, email="stop@example.com", phone="+13125550102"),
        "bounces": add_contact(rt, clock.now, email="bounce@example.com", phone="+13125550103"),
        "one_click": add_contact(rt, clock.now, email="oneclick@example.com", phone="+13125550104"),
    }
    Dispatcher(rt, "w").run_once(clock.now)
    wait_until(lambda: settled(rt) and contact(rt, people["bounces"]).email_blocked is not None)

    reply = sandbox.send_inbound_sms("+13125550102", "STOP")
    assert reply.status_code == 200
    first_email = received(sandbox, "oneclick@example.com")[0]
    unsubscribe_header = first_email["headers"]["List-Unsubscribe"]
    assert first_email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    one_click_url = unsubscribe_header.split("<", 1)[1].split(">", 1)[0]
    import httpx

    response = httpx.post(one_click_url, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert response.status_code == 200

    run_until_done(rt, clock)
    wait_until(lambda: settled(rt))

    def count(to: str) -> int:
        return len(received(sandbox, to))

    assert (count("stays@example.com"), count("+13125550101")) == (5, 3)
    assert (count("stop@example.com"), count("+13125550102")) == (5, 1)
    assert (count("bounce@example.com"), count("+13125550103")) == (1, 3)
    assert (count("oneclick@example.com"), count("+13125550104")) == (1, 3)
    everything = [(m["to"], m.get("text") or m.get("body")) for m in sandbox.messages() if m["to"] != "+15005550006"]
    assert max(Counter(everything).values()) == 1, "a message was sent twice"

    stays = messages_for(rt, people["stays"])
    assert all(m.status == MessageStatus.DELIVERED for m in stays)
    assert contact(rt, people["bounces"]).email_blocked.startswith("bounced")
    assert contact(rt, people["texts_stop"]).sms_consent is False


def test_email_has_text_then_html_headers_custom_args_and_no_click_tracking(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, phone=None, consent=("email",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    email = received(sandbox, "alex@example.com")[0]
    message = messages_for(provider_rt, contact_id)[0]
    assert email["custom_args"] == {"drip_message_id": str(message.id)}
    assert email["categories"] == ["ketamine-consult", "welcome-email"]
    assert email["tracking_settings"]["click_tracking"]["enable"] is False
    assert email["content_types"] == ["text/plain", "text/html"]
    assert email["subject"] == message.subject
    assert message.provider_message_id and message.status in (MessageStatus.SENT, MessageStatus.DELIVERED)


def test_sms_carries_a_status_callback_with_our_message_id(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, email=None, consent=("sms",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    sms = received(sandbox, "+13125550142")[0]
    message = sms_of(provider_rt, contact_id)[0]
    assert sms["status_callback"].endswith(f"/webhooks/twilio/status?m={message.id}")
    wait_until(lambda: sms_of(provider_rt, contact_id)[0].status == MessageStatus.DELIVERED)


def test_status_only_moves_forward_when_callbacks_arrive_out_of_order(provider_rt, sandbox, clock):
    sandbox.configure(twilio_status_callbacks=False)
    contact_id = add_contact(provider_rt, clock.now, email=None, consent=("sms",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    sid = sms_of(provider_rt, contact_id)[0].provider_message_id
    sandbox.send_twilio_status(sid, "delivered")
    sandbox.send_twilio_status(sid, "sent")
    sandbox.send_twilio_status(sid, "queued")
    assert sms_of(provider_rt, contact_id)[0].status == MessageStatus.DELIVERED


def test_permanent_failure_callback_suppresses_the_number(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, email=None, phone="+15005550007", consent=("sms",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    wait_until(lambda: contact(provider_rt, contact_id).sms_blocked is not None)
    assert "30007" in contact(provider_rt, contact_id).sms_blocked
    run_until_done(provider_rt, clock)
    assert len(received(sandbox, "+15005550007")) == 1


def test_invalid_number_is_permanent_and_stops_sms_for_that_contact(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, phone="+15005550001")
    run_until_done(provider_rt, clock)
    wait_until(lambda: settled(provider_rt))
    messages = messages_for(provider_rt, contact_id)
    sms = [m for m in messages if m.channel == "sms"]
    assert sms[0].status == MessageStatus.FAILED and sms[0].error_code == "21211"
    assert all(m.status == MessageStatus.SKIPPED for m in sms[1:])
    assert "Invalid phone number" in contact(provider_rt, contact_id).sms_blocked
    assert sum(m.status == MessageStatus.DELIVERED for m in messages if m.channel == "email") == 5


def test_transient_errors_retry_with_backoff_honouring_retry_after(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, email=None, consent=("sms",))
    sandbox.add_fault("twilio", Fault(status=429, retry_after=120))
    sandbox.add_fault("twilio", Fault(status=503))
    dispatcher = Dispatcher(provider_rt, "w")
    assert dispatcher.run_once(clock.now).outcomes["retrying"] == 1
    with provider_rt.sessions() as session:
        due = session.scalar(select(Enrollment.next_due_at))
    assert due - clock.now >= timedelta(seconds=120)
    clock.set(due)
    assert dispatcher.run_once(clock.now).outcomes["retrying"] == 1  # the 503
    with provider_rt.sessions() as session:
        second_wait = session.scalar(select(Enrollment.next_due_at)) - clock.now
    assert timedelta(seconds=30) <= second_wait <= timedelta(seconds=60)  # backoff with jitter, attempt 2
    clock.advance(second_wait)
    assert dispatcher.run_once(clock.now).outcomes["sent"] == 1
    message = sms_of(provider_rt, contact_id)[0]
    assert message.attempts == 3 and message.status in (MessageStatus.SENT, MessageStatus.DELIVERED)
    assert len(received(sandbox, "+13125550142")) == 1


def test_ambiguous_timeout_is_not_resent_and_is_settled_by_the_callback(provider_rt, sandbox, clock):
    sandbox.configure(callback_delay_ms=2500)  # the receipt arrives after our 2 s client timeout
    contact_id = add_contact(provider_rt, clock.now, email=None, consent=("sms",))
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=3000))
    dispatcher = Dispatcher(provider_rt, "w")
    assert dispatcher.run_once(clock.now).outcomes["unknown"] == 1
    assert len(received(sandbox, "+13125550142")) == 1  # the provider did take it
    # waiting for reconciliation, the enrollment does not resend
    clock.advance(timedelta(minutes=3))
    dispatcher.run_once(clock.now)
    assert len(received(sandbox, "+13125550142")) == 1
    wait_until(lambda: sms_of(provider_rt, contact_id)[0].status == MessageStatus.DELIVERED)
    run_until_done(provider_rt, clock)
    assert len(received(sandbox, "+13125550142")) == 3


def test_ambiguous_sms_without_callback_is_reconciled_by_asking_twilio(provider_rt, sandbox, clock):
    sandbox.configure(twilio_status_callbacks=False)
    contact_id = add_contact(provider_rt, clock.now, email=None, consent=("sms",))
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=3000))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    assert sms_of(provider_rt, contact_id)[0].status == MessageStatus.UNKNOWN
    assert reconcile_unknown(provider_rt, clock.now + timedelta(minutes=3)) == {"found": 1}
    message = sms_of(provider_rt, contact_id)[0]
    assert message.status in (MessageStatus.SENT, MessageStatus.DELIVERED)
    assert message.provider_message_id.startswith("SM")


def test_auth_failure_pauses_the_channel_instead_of_burning_messages(provider_rt, sandbox, clock):
    for index in range(3):
        add_contact(provider_rt, clock.now, email=None, phone=f"+1312555020{index}", consent=("sms",))
    sandbox.configure(twilio_auth_token="rotated-token")
    summary = Dispatcher(provider_rt, "w").run_once(clock.now)
    assert summary.outcomes["paused"] == 3
    with provider_rt.sessions() as session:
        assert db.get_kv(session, "pause:sms")
        sms = list(session.scalars(select(Message).where(Message.channel == "sms")))
        # the first refusal pauses the channel; no message burns an attempt or fails
        assert sms and all(m.status == MessageStatus.RETRYING and m.attempts == 0 for m in sms)
    assert len(received(sandbox, "+13125550200")) + len(received(sandbox, "+13125550201")) == 0
    sandbox.configure(twilio_auth_token=provider_rt.settings.twilio_auth_token.get_secret_value())
    with provider_rt.sessions() as session, session.begin():
        db.delete_kv(session, "pause:sms")
    clock.advance(timedelta(minutes=2))
    assert Dispatcher(provider_rt, "w").run_once(clock.now).outcomes["sent"] == 3


def test_spam_complaint_suppresses_email(provider_rt, sandbox, clock):
    contact_id = add_contact(provider_rt, clock.now, email="spam@example.com", phone=None, consent=("email",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    wait_until(lambda: contact(provider_rt, contact_id).email_blocked is not None)
    assert contact(provider_rt, contact_id).email_blocked == "spam complaint"
    run_until_done(provider_rt, clock)
    assert len(received(sandbox, "spam@example.com")) == 1
    with provider_rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == "exited"


def test_forged_sendgrid_events_are_refused(provider_rt, sandbox, clock):
    import httpx

    contact_id = add_contact(provider_rt, clock.now, email="ok@example.com", phone=None, consent=("email",))
    Dispatcher(provider_rt, "w").run_once(clock.now)
    message = messages_for(provider_rt, contact_id)[0]
    body = f'[{{"event":"spamreport","drip_message_id":"{message.id}"}}]'
    url = f"{provider_rt.settings.public_url}/webhooks/sendgrid/events"
    unsigned = httpx.post(url, content=body, headers={"content-type": "application/json"})
    forged = httpx.post(url, content=body, headers={
        "content-type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": "MEUCIQDforged",
        "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time())),
    })
    assert (unsigned.status_code, forged.status_code) == (403, 403)
    assert contact(provider_rt, contact_id).email_blocked is None
    with provider_rt.sessions() as session:
        assert session.scalar(select(Contact.email_consent)) is True
