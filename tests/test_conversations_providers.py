"""A staff reply in providers mode: the official Twilio SDK carries it to the sandbox over loopback HTTP,
the sandbox calls our live server back (signed) with its delivery status, and the send record follows.
A patient's text through the sandbox reopens the thread; a refused number costs no provider call."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from patient_drip.models import Conversation, Message, MessageStatus, StaffReply
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact
from support.live import LiveApp, live_sandbox_runtime, live_staff_client, wait_until
from support.staff import add_user

PHONE = "+13125550142"


@pytest.fixture
def live_rt(database_url: str, sandbox, clock: VirtualClock) -> Iterator[tuple[Runtime, LiveApp]]:  # type: ignore[no-untyped-def]
    rt = live_sandbox_runtime(database_url, sandbox)
    with LiveApp(rt, clock) as app:
        yield rt, app
    rt.close()


def staff_reply_record(rt: Runtime) -> Message:
    with rt.sessions() as session:
        found = session.scalar(select(Message).join(StaffReply, StaffReply.message_id == Message.id))
        assert found is not None
        return found


def test_a_staff_reply_reaches_twilio_through_the_sdk_and_its_status_callback_lands(live_rt, sandbox, clock):
    rt, app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    answer = sandbox.send_inbound_sms(PHONE, "do you take insurance?")
    assert answer.status_code == 200
    staff = add_user(rt, "staff", "desk@clinic.test")
    with live_staff_client(app, rt, staff.id, clock.now) as (web, csrf):
        url = f"/admin/replies/contacts/{contact_id}"
        page = web.get(url)
        assert "Conversational reply" in page.text
        key = re.search(r'name="key" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        form = {"csrf_token": csrf, "body": "Yes, most plans. We will call you today.", "key": key}
        sent = web.post(f"{url}/reply", data=form)
        assert sent.status_code == 303 and "done=reply_sent" in sent.headers["location"]
        assert web.post(f"{url}/reply", data=form).status_code == 303  # the same form again: no second text

    # Sent through the REST API by the SDK (not a TwiML answer to their text).
    outbound = [m for m in sandbox.messages(provider="twilio", to=PHONE) if m["direction"] == "outbound-api"]
    bodies = [m["text"] for m in outbound]
    assert bodies == ["Yes, most plans. We will call you today."]
    record = staff_reply_record(rt)
    assert record.provider == "twilio" and record.provider_message_id == outbound[-1]["id"]
    assert record.enrollment_id is None and record.step_id == "staff-reply"
    # The sandbox's signed status callback (StatusCallback ?m=<our id>) moves it to delivered.
    wait_until(lambda: staff_reply_record(rt).status == MessageStatus.DELIVERED)
    with rt.sessions() as session:
        assert session.scalar(select(Conversation.state).where(Conversation.contact_id == contact_id)) == "waiting"
    sandbox.send_inbound_sms(PHONE, "great, thanks! what time?")
    with rt.sessions() as session:
        assert session.scalar(select(Conversation.state).where(Conversation.contact_id == contact_id)) == "open"


def test_a_reply_to_a_number_that_texted_stop_never_reaches_twilio(live_rt, sandbox, clock):
    rt, app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    sandbox.send_inbound_sms(PHONE, "STOP")
    before = len(sandbox.messages(provider="twilio", to=PHONE))
    staff = add_user(rt, "staff", "desk@clinic.test")
    with live_staff_client(app, rt, staff.id, clock.now) as (web, csrf):
        url = f"/admin/replies/contacts/{contact_id}"
        assert "opted out of texts" in web.get(url).text  # no form: the reason instead
        refused = web.post(f"{url}/reply", data={"csrf_token": csrf, "body": "Hello?", "key": "k-stop"})
        assert refused.status_code == 422 and "opted out of texts" in refused.text
    assert len(sandbox.messages(provider="twilio", to=PHONE)) == before


def test_a_staff_reply_whose_answer_was_lost_is_never_sent_twice_and_is_settled(live_rt, sandbox, clock):
    from datetime import timedelta

    from patient_drip.dispatch.reconcile import reconcile_unknown
    from patient_drip.dispatch.staff_reply import send_staff_reply
    from patient_drip.providers.sandbox import Fault

    rt, _app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=3000))  # Twilio takes it, the answer is lost
    lost = send_staff_reply(rt, contact_id, "We will call you at 4.", "k-lost", "desk@clinic.test", clock.now)
    assert lost.status == MessageStatus.UNKNOWN and lost.error is not None and "do not send it again" in lost.error
    again = send_staff_reply(rt, contact_id, "We will call you at 4.", "k-lost", "desk@clinic.test", clock.now)
    assert again.duplicate and again.message_id == lost.message_id  # the resent form changes nothing
    clock.advance(timedelta(minutes=3))
    reconcile_unknown(rt, clock.now)  # asks Twilio (or the status callback came first): it has it
    wait_until(lambda: staff_reply_record(rt).status in (MessageStatus.SENT, MessageStatus.DELIVERED))
    assert [m["text"] for m in sandbox.messages(provider="twilio", to=PHONE)
            if m["direction"] == "outbound-api"] == ["We will call you at 4."]


def test_a_staff_reply_twilio_refuses_for_good_fails_and_stops_texts_to_the_number(live_rt, sandbox, clock):
    from patient_drip.dispatch.staff_reply import send_staff_reply
    from patient_drip.models import Contact
    from patient_drip.providers.sandbox import Fault

    rt, _app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    sandbox.add_fault("twilio", Fault(code=21211))
    failed = send_staff_reply(rt, contact_id, "Hello from the clinic", "k-bad", "desk@clinic.test", clock.now)
    assert failed.status == MessageStatus.FAILED and failed.error is not None and "Invalid phone number" in failed.error
    with rt.sessions() as session:
        found = session.get(Contact, contact_id)
        assert found is not None and found.sms_block_reason == "failed"


def test_an_unknown_staff_reply_twilio_never_got_fails_instead_of_waiting_for_a_sequence(live_rt, sandbox, clock):
    from datetime import timedelta

    from patient_drip.dispatch.reconcile import reconcile_unknown

    rt, _app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    with rt.sessions() as session, session.begin():
        message = Message(enrollment_id=None, contact_id=contact_id, campaign_id="", step_id="staff-reply",
                          channel="sms", status=MessageStatus.UNKNOWN, to_address=PHONE, body_text="Lost on the way",
                          provider="twilio", attempts=1, created_at=clock.now, attempted_at=clock.now,
                          handed_at=clock.now, updated_at=clock.now)
        session.add(message)
        session.flush()
        session.add(StaffReply(message_id=message.id, contact_id=contact_id, idempotency_key="k-never",
                               sent_by="desk@clinic.test", conversational=False, created_at=clock.now))
    clock.advance(timedelta(minutes=5))
    assert reconcile_unknown(rt, clock.now) == {"failed": 1}
    record = staff_reply_record(rt)
    assert record.status == MessageStatus.FAILED and "send the reply again" in (record.last_error or "")


def test_a_staff_reply_left_sending_by_a_stopped_process_is_reconciled(live_rt, sandbox, clock):
    from datetime import timedelta

    from patient_drip.dispatch.reconcile import reconcile_unknown

    rt, _app = live_rt
    contact_id = add_contact(rt, clock.now, campaign=None)
    with rt.sessions() as session, session.begin():  # recorded and handed over, then the process died
        message = Message(enrollment_id=None, contact_id=contact_id, campaign_id="", step_id="staff-reply",
                          channel="sms", status=MessageStatus.SENDING, to_address=PHONE, body_text="Cut off",
                          provider="twilio", attempts=1, created_at=clock.now, attempted_at=clock.now,
                          handed_at=clock.now, updated_at=clock.now)
        session.add(message)
        session.flush()
        session.add(StaffReply(message_id=message.id, contact_id=contact_id, idempotency_key="k-cut",
                               sent_by="desk@clinic.test", conversational=False, created_at=clock.now))
    assert reconcile_unknown(rt, clock.now) == {}  # still within its lease: maybe in flight
    assert staff_reply_record(rt).status == MessageStatus.SENDING
    clock.advance(timedelta(minutes=10))
    assert reconcile_unknown(rt, clock.now) == {"failed": 1}  # Twilio never got it
    assert staff_reply_record(rt).status == MessageStatus.FAILED
