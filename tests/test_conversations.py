"""The two-way text inbox: who may be texted (opt-out, block, never consented), when (conversational
within 24 hours of their text, else the quiet hours), one send per form, thread states (a new text
reopens), assignment, notes kept on the thread and the timeline, everything audited; and the pages,
through a signed-in staff client, for each role."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from patient_drip.contacts.blocks import BlockReason, block_channel
from patient_drip.contacts.conversations import ConversationError, add_note, assign, set_state
from patient_drip.dispatch.staff_reply import ReplyRefused, send_staff_reply
from patient_drip.models import (
    AuditEntry,
    Contact,
    Conversation,
    Enrollment,
    EnrollmentStatus,
    Event,
    InboundMessage,
    Message,
    MessageStatus,
    StaffReply,
)
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact
from support.staff import add_user, make_client, runtime_for, sign_in_as

TOKEN = "twilio-token-for-inbox-tests"
WEBHOOK = "https://clinic.test/webhooks/twilio/sms"
PHONE = "+13125550142"
# 23:30 in Chicago on a Monday (CST, UTC-6): outside every quiet-hours window.
LATE = datetime(2026, 3, 3, 5, 30, tzinfo=timezone.utc)


@pytest.fixture
def irt(database_url: str) -> Iterator[Runtime]:
    runtime = runtime_for(database_url, twilio_auth_token=TOKEN)
    yield runtime
    runtime.close()


@pytest.fixture
def web(irt: Runtime, clock: VirtualClock) -> Iterator[TestClient]:
    with make_client(irt, clock) as client:
        yield client


def sms_in(web: TestClient, body: str, sid: str, sender: str = PHONE) -> None:
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TOKEN).compute_signature(WEBHOOK, params)
    assert web.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200


def thread(rt: Runtime, contact_id: int) -> Conversation:
    with rt.sessions() as session:
        found = session.scalar(select(Conversation).where(Conversation.contact_id == contact_id))
        assert found is not None
        return found


def staff_texts(rt: Runtime, contact_id: int) -> list[Message]:
    with rt.sessions() as session:
        return list(session.scalars(select(Message).where(Message.contact_id == contact_id,
                                                          Message.enrollment_id.is_(None)).order_by(Message.id)))


def audit_actions(rt: Runtime, contact_id: int) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(AuditEntry.action).where(AuditEntry.contact_id == contact_id)
                                    .order_by(AuditEntry.id)))


# -- who may be texted -----------------------------------------------------------------------------


def test_a_reply_to_someone_who_texted_stop_is_refused_and_nothing_is_sent(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    sms_in(web, "STOP", "SMi1")
    with pytest.raises(ReplyRefused, match="opted out of texts"):
        send_staff_reply(irt, contact_id, "Hi, this is the clinic", "key-1", "desk@clinic.test", clock.now)
    assert staff_texts(irt, contact_id) == []


def test_a_reply_to_a_blocked_number_or_one_that_never_agreed_is_refused(irt, clock):
    never = add_contact(irt, clock.now, consent=("email",))
    with pytest.raises(ReplyRefused, match="never agreed to texts"):
        send_staff_reply(irt, never, "Hello", "key-2", "desk@clinic.test", clock.now)
    blocked = add_contact(irt, clock.now, email="b@example.com", phone="+13125550199")
    with irt.sessions() as session, session.begin():
        block_channel(session, session.get(Contact, blocked), "sms", BlockReason.FAILED, "Invalid phone number",  # type: ignore[arg-type]
                      clock.now, "test")
    with pytest.raises(ReplyRefused, match="number is blocked"):
        send_staff_reply(irt, blocked, "Hello", "key-3", "desk@clinic.test", clock.now)
    assert staff_texts(irt, never) == staff_texts(irt, blocked) == []


def test_a_reply_naming_the_treatment_or_too_long_is_refused(irt, clock):
    contact_id = add_contact(irt, clock.now)
    with pytest.raises(ReplyRefused, match="lock screens"):
        send_staff_reply(irt, contact_id, "Your ketamine consult is at 3", "key-4", "desk@clinic.test", clock.now)
    with pytest.raises(ReplyRefused, match="segments long"):
        send_staff_reply(irt, contact_id, "word " * 200, "key-5", "desk@clinic.test", clock.now)


# -- when ------------------------------------------------------------------------------------------


def test_a_reply_within_24_hours_of_their_text_may_go_at_night_and_later_it_may_not(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    clock.set(LATE - timedelta(minutes=20))
    sms_in(web, "can I bring my partner?", "SMi2")
    clock.set(LATE)
    sent = send_staff_reply(irt, contact_id, "Yes, of course. See you then.", "key-6", "desk@clinic.test", clock.now)
    assert sent.status == MessageStatus.SENT and sent.conversational
    clock.set(LATE + timedelta(hours=24))  # 23:30 again, a day later: no longer a conversation
    with pytest.raises(ReplyRefused, match=r"outside the hours texts may go .*You can send from Wed 4 Mar 08:00"):
        send_staff_reply(irt, contact_id, "One more thing", "key-7", "desk@clinic.test", clock.now)
    clock.set(LATE + timedelta(hours=34))  # 09:30 local: the quiet hours allow it, not as a conversation
    later = send_staff_reply(irt, contact_id, "One more thing", "key-7", "desk@clinic.test", clock.now)
    assert later.status == MessageStatus.SENT and not later.conversational
    texts = staff_texts(irt, contact_id)
    assert [t.body_text for t in texts] == ["Yes, of course. See you then.", "One more thing"]
    assert all(t.provider == "outbox" and t.provider_message_id == f"outbox-{t.id}" for t in texts)


def test_the_same_form_sent_twice_sends_once(irt, clock):
    contact_id = add_contact(irt, clock.now)
    first = send_staff_reply(irt, contact_id, "Thanks, we will call you", "same-key", "desk@clinic.test", clock.now)
    again = send_staff_reply(irt, contact_id, "Thanks, we will call you", "same-key", "desk@clinic.test", clock.now)
    assert again.duplicate and again.message_id == first.message_id and not first.duplicate
    assert len(staff_texts(irt, contact_id)) == 1
    with irt.sessions() as session:
        assert session.scalar(select(StaffReply.sent_by)) == "desk@clinic.test"


# -- states, assignment, notes ---------------------------------------------------------------------


def test_a_reply_waits_on_the_patient_and_their_next_text_reopens_the_thread(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    sms_in(web, "what does it cost?", "SMi3")
    assert thread(irt, contact_id).state == "open"
    send_staff_reply(irt, contact_id, "We will call you today about costs.", "key-8", "desk@clinic.test", clock.now)
    assert thread(irt, contact_id).state == "waiting"
    with irt.sessions() as session:
        inbound = session.scalar(select(InboundMessage))
        assert inbound.handled_by == "desk@clinic.test"  # answered by the text
    set_state_committed(irt, contact_id, "done", clock.now)
    sms_in(web, "HELP", "SMi4")  # answered automatically: nothing for staff, the thread stays done
    assert thread(irt, contact_id).state == "done"
    sms_in(web, "sorry, one more question", "SMi5")
    reopened = thread(irt, contact_id)
    assert reopened.state == "open" and reopened.state_by == "patient:sms"
    assert audit_actions(irt, contact_id).count("conversation_state") == 3  # waiting, done, open


def set_state_committed(rt: Runtime, contact_id: int, state: str, now: datetime, **kwargs: object) -> int | None:
    with rt.sessions() as session, session.begin():
        return set_state(session, rt.campaigns, contact_id, state, "desk@clinic.test", now, **kwargs)  # type: ignore[arg-type]


def test_a_crisis_thread_stays_open_after_a_reply_and_done_resolves_it_keeping_sequences_paused(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    sms_in(web, "i want to die", "SMi6")
    sent = send_staff_reply(irt, contact_id, "We are calling you now. You can also call or text 988.", "key-9",
                            "desk@clinic.test", clock.now)
    assert sent.status == MessageStatus.SENT and sent.conversational
    assert thread(irt, contact_id).state == "open"  # a possible crisis is resolved only on purpose
    assert set_state_committed(irt, contact_id, "done", clock.now, note="called back, safe") == 0
    assert thread(irt, contact_id).state == "done"
    with irt.sessions() as session:
        assert session.scalar(select(InboundMessage.handled_at)) is not None
        assert session.scalar(select(Enrollment.status)) == EnrollmentStatus.PAUSED
        notes = [e.detail for e in session.scalars(select(Event).where(Event.kind == "staff_note"))]
    assert notes == [{"note": "called back, safe", "by": "desk@clinic.test"}]
    assert {"staff_reply", "staff_note", "crisis_resolved", "conversation_state"} <= set(audit_actions(irt, contact_id))


def test_threads_are_given_only_to_people_who_work_the_inbox(irt, clock):
    contact_id = add_contact(irt, clock.now)
    clinician = add_user(irt, "clinician", "dr@clinic.test", name="Dr Lee")
    marketer = add_user(irt, "marketing", "mk@clinic.test")
    with irt.sessions() as session, session.begin():
        assert assign(session, contact_id, clinician.id, "desk@clinic.test", clock.now) == "Dr Lee"
        with pytest.raises(ConversationError, match="does not work the inbox"):
            assign(session, contact_id, marketer.id, "desk@clinic.test", clock.now)
        with pytest.raises(ConversationError, match="Write the note"):
            add_note(session, contact_id, "   ", "desk@clinic.test", clock.now)
    assert thread(irt, contact_id).assigned_to == clinician.id
    assert audit_actions(irt, contact_id).count("conversation_assigned") == 1


# -- the pages -------------------------------------------------------------------------------------


def test_the_inbox_pins_crisis_threads_with_the_procedure_tap_to_call_and_988(irt, web, clock):
    quiet = add_contact(irt, clock.now, email="q@example.com", phone="+13125550111", first_name="Quinn")
    add_contact(irt, clock.now, first_name="Alex")
    sms_in(web, "what does it cost?", "SMi7", sender="+13125550111")
    clock.advance(timedelta(minutes=5))
    sms_in(web, "i cant go on anymore, i want to die", "SMi8")
    sign_in_as(web, irt, add_user(irt, "staff"), clock.now)
    page = web.get("/admin/replies").text
    assert page.index("Alex") < page.index("Quinn")  # the crisis first, though Quinn waited longer
    assert 'href="tel:988"' in page and 'href="tel:+13125550142"' in page and 'href="tel:+12175550100"' in page
    thread_page = web.get(f"/admin/replies/contacts/{contact_id_of(irt, PHONE)}").text
    assert "Call the person back now" in thread_page  # policy/crisis_procedure.txt
    assert "Conversational reply" in thread_page and "at any hour" in thread_page
    assert web.get(f"/admin/replies/contacts/{quiet}").status_code == 200


def contact_id_of(rt: Runtime, phone: str) -> int:
    with rt.sessions() as session:
        found = session.scalar(select(Contact.id).where(Contact.phone == phone))
        assert found is not None
        return found


def test_staff_reply_note_and_done_through_the_pages(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    sms_in(web, "is parking free?", "SMi9")
    csrf = sign_in_as(web, irt, add_user(irt, "staff", "desk@clinic.test"), clock.now)
    url = f"/admin/replies/contacts/{contact_id}"
    key = re.search(r'name="key" value="([^"]+)"', web.get(url).text).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": csrf, "body": "Yes, parking is free behind the building.", "key": key}
    first = web.post(f"{url}/reply", data=form)
    second = web.post(f"{url}/reply", data=form)  # a double click
    assert first.status_code == second.status_code == 303
    assert "done=reply_sent" in first.headers["location"] and "done=reply_again" in second.headers["location"]
    assert len(staff_texts(irt, contact_id)) == 1
    assert web.post(f"{url}/note", data={"csrf_token": csrf, "text": "called back, safe"}).status_code == 303
    assert web.post(f"{url}/state", data={"csrf_token": csrf, "to": "done"}).status_code == 303
    page = web.get(url).text
    assert "Yes, parking is free behind the building." in page and "Reply by desk@clinic.test" in page
    assert "called back, safe" in page and "Thread marked done" in page
    assert "called back, safe" in web.get(f"/admin/contacts/{contact_id}").text  # and on the timeline
    refused = web.post(f"{url}/reply", data={**form, "key": "other", "body": "Your ketamine visit"})
    assert refused.status_code == 422 and "lock screens" in refused.text and "Your ketamine visit" in refused.text


@pytest.mark.parametrize(("role", "allowed"), [("staff", True), ("clinician", True), ("admin", True),
                                                ("marketing", False)])
def test_staff_clinicians_and_admins_work_the_inbox_marketing_does_not(irt, web, clock, role, allowed):
    contact_id = add_contact(irt, clock.now)
    csrf = sign_in_as(web, irt, add_user(irt, role), clock.now)
    for response in (web.get("/admin/replies"), web.get(f"/admin/replies/contacts/{contact_id}"),
                     web.get("/admin/replies/updates"),
                     web.post(f"/admin/replies/contacts/{contact_id}/note", data={"csrf_token": csrf, "text": "x"})):
        assert (response.status_code != 403) is allowed, (role, response.status_code)
    assert ('href="/admin/replies"' in web.get("/admin").text) is allowed


def test_the_live_update_answers_only_when_something_new_arrived(irt, web, clock):
    contact_id = add_contact(irt, clock.now)
    sign_in_as(web, irt, add_user(irt, "staff"), clock.now)
    first = web.get("/admin/replies/updates").json()
    assert first["changed"] is True
    assert web.get(f"/admin/replies/updates?v={first['v']}").json() == {"changed": False}
    sms_in(web, "are you open saturday?", "SMi10")
    update = web.get(f"/admin/replies/updates?v={first['v']}").json()
    assert update["changed"] is True and "are you open saturday?" in update["html"]
    one = web.get(f"/admin/replies/contacts/{contact_id}/updates").json()
    sms_in(web, "or sunday?", "SMi11")
    again = web.get(f"/admin/replies/contacts/{contact_id}/updates?v={one['v']}").json()
    assert again["changed"] is True and "or sunday?" in again["html"]
