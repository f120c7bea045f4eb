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
