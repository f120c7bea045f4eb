"""Staff correct a contact (name, email, mobile, time zone): every field's problem at once, nothing
stored on a refusal, a new number needs new text consent, blocks that belonged to the old address go
with it, a new zone moves the next message into the new daytime, and every change is audited. The
contact page shows the person's own time now and when their next message goes out in it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from patient_drip.contacts.blocks import BlockReason, block_channel
from patient_drip.contacts.edit import ContactEditErrors, edit_contact
from patient_drip.contacts.consent import withdraw_consent
from patient_drip.models import AuditEntry, Channel, ConsentMethod, ConsentRecord, Contact, Enrollment, Event, EventKind, MessageStatus
from support.builders import add_contact, messages_for, run_until_done
from support.staff import add_user, make_client, runtime_for, sign_in_as

CHICAGO_MORNING = datetime(2026, 6, 1, 9, 30, tzinfo=ZoneInfo("America/Chicago"))


def _edit(rt, contact_id, now, **changes):  # type: ignore[no-untyped-def]
    with rt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        values = {"first_name": contact.first_name, "last_name": contact.last_name, "email": contact.email or "",
                  "phone": contact.phone or "", "timezone": contact.timezone} | changes
        return edit_contact(session, contact, values, campaigns=rt.campaigns, suppression_key=rt.suppression_key,
                            now=now, actor="staff:front@clinic.test")


def _row(rt, contact_id):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return session.get(Contact, contact_id)


def test_every_bad_field_is_named_at_once_and_nothing_changes(rt, clock):
    contact_id = add_contact(rt, clock.now)
    with pytest.raises(ContactEditErrors) as refused:
        _edit(rt, contact_id, clock.now, email="not-an-address", phone="12", timezone="Mars/Olympus",
              first_name="\u202eevil")
    assert set(refused.value.errors) == {"email", "phone", "timezone", "first_name"}
    assert "not a valid phone number" in refused.value.errors["phone"]
    assert "is not an IANA time zone" in refused.value.errors["timezone"]
    row = _row(rt, contact_id)
    assert (row.email, row.phone, row.timezone, row.first_name) == ("alex@example.com", "+13125550142",
                                                                     "America/Chicago", "Alex")


def test_an_address_of_another_contact_is_refused_for_that_field(rt, clock):
    first = add_contact(rt, clock.now)
    add_contact(rt, clock.now, email="sam@example.com", phone="+13125550199")
    with pytest.raises(ContactEditErrors) as refused:
        _edit(rt, first, clock.now, email="SAM@example.com", phone="(312) 555-0199")
    assert set(refused.value.errors) == {"email", "phone"}
    assert "belongs to another contact" in refused.value.errors["email"]


def test_email_and_phone_cannot_both_be_removed(rt, clock):
    contact_id = add_contact(rt, clock.now)
    with pytest.raises(ContactEditErrors) as refused:
        _edit(rt, contact_id, clock.now, email="", phone="")
    assert list(refused.value.errors) == ["email"]


def test_a_new_number_stops_texts_until_consent_is_given_for_it(rt, clock):
    contact_id = add_contact(rt, clock.now)
    result = _edit(rt, contact_id, clock.now, phone="+13125550177")
    assert result.changed == ("phone",)
    row = _row(rt, contact_id)
    assert row.phone == "+13125550177" and row.sms_consent is False and row.email_consent is True
    with rt.sessions() as session:
        withdrawal = session.scalar(select(ConsentRecord).where(ConsentRecord.contact_id == contact_id,
                                                                ConsentRecord.action == "withdrawn"))
        assert withdrawal.channel == "sms" and "previous number" in withdrawal.note
    run_until_done(rt, clock)
    texts = [m for m in messages_for(rt, contact_id) if m.channel == "sms"]
    assert texts and all(m.status == MessageStatus.SKIPPED for m in texts)


def test_an_opt_out_stays_with_the_person_a_bounce_goes_with_the_address(rt, clock):
    contact_id = add_contact(rt, clock.now)
    with rt.sessions() as session, session.begin():
        contact = session.get(Contact, contact_id)
        block_channel(session, contact, Channel.EMAIL, BlockReason.BOUNCED, "mailbox does not exist", clock.now, "test")
        withdraw_consent(session, contact, Channel.SMS, ConsentMethod.SMS_KEYWORD, clock.now, "sms")
    _edit(rt, contact_id, clock.now, email="alex.new@example.com", phone="+13125550166")
    row = _row(rt, contact_id)
    assert row.email_block_reason is None and row.email_consent is True
    assert row.sms_block_reason == BlockReason.OPTED_OUT


def test_a_suppressed_new_address_is_blocked_at_once(rt, clock):
    from patient_drip.contacts.blocks import suppress

    contact_id = add_contact(rt, clock.now)
    with rt.sessions() as session, session.begin():
        suppress(session, rt.suppression_key, Channel.EMAIL, "gone@example.com", "hard bounce", clock.now)
    result = _edit(rt, contact_id, clock.now, email="gone@example.com")
    assert _row(rt, contact_id).email_block_reason == BlockReason.SUPPRESSED
    assert any("do-not-contact" in note for note in result.notes)


def test_a_new_zone_moves_the_next_message_into_its_daytime_and_is_audited(rt, clock):
    clock.set(CHICAGO_MORNING.astimezone(ZoneInfo("UTC")))
    contact_id = add_contact(rt, clock.now, phone=None, consent=("email",))
    with rt.sessions() as session, session.begin():
        enrollment = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
        enrollment.step_index = rt.campaign("ketamine-consult").step_index("stress-brain-email")
        enrollment.next_due_at = CHICAGO_MORNING + timedelta(days=2)  # 09:30 Chicago
    # 09:30 in Chicago is 16:30 in Paris: fine there too. 09:30 Chicago is 07:30 in Los Angeles: too early.
    _edit(rt, contact_id, clock.now, timezone="America/Los_Angeles", first_name="Alexandra")
    with rt.sessions() as session:
        due = session.scalar(select(Enrollment.next_due_at).where(Enrollment.contact_id == contact_id))
        local = due.astimezone(ZoneInfo("America/Los_Angeles"))
        assert local.date() == (CHICAGO_MORNING + timedelta(days=2)).date() and 9 <= local.hour < 20
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "contact_edited"))
        assert entry.actor == "staff:front@clinic.test" and entry.contact_id == contact_id
        assert entry.detail == {"fields": ["first_name", "timezone"], "timezone_from": "America/Chicago",
                                "timezone_to": "America/Los_Angeles"}
        event = session.scalar(select(Event).where(Event.kind == EventKind.CONTACT_EDITED))
        assert "Alexandra" not in str(event.detail)


def test_saving_without_changes_writes_nothing(rt, clock):
    contact_id = add_contact(rt, clock.now)
    assert _edit(rt, contact_id, clock.now).changed == ()
    with rt.sessions() as session:
        assert session.scalar(select(AuditEntry).where(AuditEntry.action == "contact_edited")) is None


# -- the staff page -------------------------------------------------------------------------------


@pytest.fixture
def staff_client(tmp_path, clock):  # type: ignore[no-untyped-def]
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    with make_client(rt, clock) as client:
        csrf = sign_in_as(client, rt, add_user(rt, "staff"), clock.now)
        yield rt, client, csrf
    rt.close()


def test_edit_page_lists_every_problem_with_links_and_keeps_what_was_typed(staff_client, clock):
    rt, client, csrf = staff_client
    contact_id = add_contact(rt, clock.now)
    page = client.get(f"/admin/contacts/{contact_id}/edit")
    assert page.status_code == 200 and 'value="alex@example.com"' in page.text
    answer = client.post(f"/admin/contacts/{contact_id}/edit", data={
        "csrf_token": csrf, "first_name": "Alex", "last_name": "", "email": "alex@", "phone": "555",
        "timezone": "Nowhere/Land"})
    assert answer.status_code == 400
    summary = re.search(r'<div class="alert"[^>]*id="error-summary">(.*?)</div>', answer.text, re.S).group(1)
    assert "these 3 fields" in summary
    for name in ("email", "phone", "timezone"):
        assert f'href="#f-{name}"' in summary
    assert 'value="Nowhere/Land"' in answer.text and 'aria-invalid="true"' in answer.text
    assert _row(rt, contact_id).email == "alex@example.com"


def test_edit_page_saves_and_the_contact_page_shows_their_time(staff_client, clock):
    rt, client, csrf = staff_client
    contact_id = add_contact(rt, clock.now)  # Monday 2 March, 15:30 UTC
    answer = client.post(f"/admin/contacts/{contact_id}/edit", data={
        "csrf_token": csrf, "first_name": "Alex", "last_name": "Rivera", "email": "alex@example.com",
        "phone": "+33 1 42 68 53 00", "timezone": "Europe/Paris"})
    assert answer.status_code == 303 and answer.headers["location"].endswith("done=contact_updated_number")
    page = client.get(answer.headers["location"])
    assert "Texts stop until the person agrees to texts on the new number." in page.text
    assert re.search(r"Their time now: <strong data-their-now>Mon 2 Mar 16:30 \(Europe/Paris\)</strong>", page.text)
    assert "their time: " in page.text and "(Europe/Paris)" in page.text
    assert "Contact details edited" in page.text and "fields: last_name, phone, timezone" in page.text
    assert "Text message consent ended (new number)" in page.text
