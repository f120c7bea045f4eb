"""The contact page as a workbench (issue 14): only the actions that fit the person's state, staff
resubscribe a channel with the consent wording shown and recorded, every stored code in words, phone
numbers in the patient's national format, a skipped step once on the timeline, and a contact list
that filters by campaign, status, last step sent and date added."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from patient_drip.contacts.blocks import BlockReason, block_channel
from patient_drip.contacts.consent import load_wording
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Booking, Channel, ConsentRecord, Contact, Enrollment, Event, Message
from patient_drip.runtime import Runtime
from patient_drip.web.admin.labels import block_label, national_phone
from support.builders import VirtualClock, add_contact
from support.staff import add_user, make_client, sign_in_as


@pytest.fixture
def desk(srt: Runtime, clock: VirtualClock) -> Iterator[tuple[TestClient, str]]:
    """A front-desk user's signed-in client and CSRF token."""
    with make_client(srt, clock) as client:
        yield client, sign_in_as(client, srt, add_user(srt, "staff"), clock.now)


def actions_of(page: str) -> str:
    return page.split('id="actions-h"')[1].split("</section>")[0]


def buttons(page: str) -> list[str]:
    return [b.strip() for b in re.findall(r"<button[^>]*>([^<]+)</button>", actions_of(page))]


def test_stop_buttons_show_only_for_channels_that_reach_the_person(srt, clock, desk):
    client, csrf = desk
    both = add_contact(srt, clock.now)
    no_email = add_contact(srt, clock.now, email=None, phone="+13125550199", consent=("sms",))
    assert buttons(client.get(f"/admin/contacts/{both}").text) == ["Mark as booked", "Stop emails", "Stop texts",
                                                                   "Stop everything"]
    page = client.get(f"/admin/contacts/{no_email}").text
    assert "Stop emails" not in actions_of(page) and "Stop everything" not in actions_of(page)
    assert "Stop texts" in buttons(page)
    # Emails stopped: no "Stop emails" any more, a way to resubscribe instead.
    client.post(f"/admin/contacts/{both}/unsubscribe", data={"channel": "email", "csrf_token": csrf})
    page = client.get(f"/admin/contacts/{both}").text
    assert buttons(page) == ["Mark as booked", "Stop texts", "Resubscribe to emails"]


def test_mark_as_booked_is_gone_after_booking_and_a_second_post_books_nothing(srt, clock, desk):
    client, csrf = desk
    contact_id = add_contact(srt, clock.now)
    assert "Mark as booked" in buttons(client.get(f"/admin/contacts/{contact_id}").text)
    client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf})
    page = client.get(f"/admin/contacts/{contact_id}").text
    assert "Mark as booked" not in actions_of(page) and 'id="booked-note"' in page
    again = client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf})
    assert again.headers["location"].endswith("done=already_booked")
    with srt.sessions() as session:
        assert session.scalar(select(func.count(Booking.id))) == 1


def test_staff_resubscribe_records_the_wording_shown(srt, clock, desk):
    client, csrf = desk
    contact_id = add_contact(srt, clock.now)
    client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "sms", "csrf_token": csrf})
    page = client.get(f"/admin/contacts/{contact_id}").text
    version, text = load_wording(srt.settings.policy_dir).shown()["sms"]
    form = page.split('id="resubscribe-sms"')[1].split("</form>")[0]
    assert text in form.replace("&#39;", "'").replace("&amp;", "&") and f'value="{version}"' in form
    # Without the tick nothing is recorded.
    refused = client.post(f"/admin/contacts/{contact_id}/resubscribe",
                          data={"channel": "sms", "wording_version": version, "csrf_token": csrf})
    assert refused.status_code == 400 and "agreed to the wording" in refused.text
    done = client.post(f"/admin/contacts/{contact_id}/resubscribe",
                       data={"channel": "sms", "wording_version": version, "agreed": "yes", "csrf_token": csrf})
    assert done.status_code == 303 and done.headers["location"].endswith("done=resubscribed_sms")
    with srt.sessions() as session:
        contact = session.get(Contact, contact_id)
        assert contact.sms_consent and contact.sms_blocked is None
        record = session.scalar(select(ConsentRecord).order_by(ConsentRecord.id.desc()))
        assert (record.channel, record.action, record.method, record.wording_version, record.wording_text,
                record.actor) == ("sms", "granted", "staff", version, text, "staff@clinic.test")
        assert session.scalar(select(AuditEntry.id).where(AuditEntry.action == "consent_granted",
                                                          AuditEntry.contact_id == contact_id)) is not None
    assert "Stop texts" in buttons(client.get(f"/admin/contacts/{contact_id}").text)


def test_resubscribe_cannot_lift_a_bounce_or_use_an_unpublished_wording(srt, clock, desk):
    client, csrf = desk
    contact_id = add_contact(srt, clock.now)
    with srt.sessions() as session, session.begin():
        block_channel(session, session.get(Contact, contact_id), Channel.EMAIL, BlockReason.BOUNCED, "mailbox gone",
                      clock.now, "test")
    page = client.get(f"/admin/contacts/{contact_id}").text
    assert 'id="resubscribe-email"' not in page and "Stop emails" not in actions_of(page)
    assert "Bounced: mailbox gone" in page
    with srt.sessions() as session:
        before = session.scalar(select(func.count(ConsentRecord.id)))
    forced = client.post(f"/admin/contacts/{contact_id}/resubscribe",
                         data={"channel": "email", "agreed": "yes", "csrf_token": csrf})
    assert forced.status_code == 400 and "consent cannot lift that block" in forced.text
    client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "sms", "csrf_token": csrf})
    unknown = client.post(f"/admin/contacts/{contact_id}/resubscribe",
                          data={"channel": "sms", "wording_version": "made-up", "agreed": "yes", "csrf_token": csrf})
    assert unknown.status_code == 400 and "not a published" in unknown.text
    with srt.sessions() as session:
        granted = session.scalar(select(func.count(ConsentRecord.id)).where(ConsentRecord.action == "granted"))
        assert granted == 2 and session.scalar(select(func.count(ConsentRecord.id))) == before + 1


def test_codes_are_shown_in_words_and_phones_in_national_format(srt, clock, desk):
    client, csrf = desk
    contact_id = add_contact(srt, clock.now, phone="+13125550142")
    uk = add_contact(srt, clock.now, email="uk@example.com", phone="+447911123456", campaign=None)
    with srt.sessions() as session, session.begin():
        session.get(Contact, contact_id).source = "web_form"
    client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "email", "csrf_token": csrf})
    page = client.get(f"/admin/contacts/{contact_id}").text
    assert "Opted out (staff)" in page and "opted_out" not in page
    assert "Website form" in page and "web_form" not in page
    assert '<a class="phone" href="tel:+13125550142" title="+13125550142">(312) 555-0142</a>' in page
    assert "07911 123456" in client.get(f"/admin/contacts/{uk}").text
    listing = client.get("/admin/contacts").text
    assert "(312) 555-0142" in listing and ">+13125550142<" not in listing
    # The person's own clock is on the page.
    assert re.search(r"data-their-now>[^<]*\d{1,2}:\d{2}", page)
    assert national_phone("+13125550142") == "(312) 555-0142" and national_phone("not a number") == "not a number"
    assert block_label("opted_out", "opted_out: one_click") == "Opted out (one-click unsubscribe)"


def test_a_skipped_step_shows_once_on_the_timeline_with_why(srt, clock, desk):
    client, _csrf = desk
    contact_id = add_contact(srt, clock.now, phone=None, consent=("email",))  # the welcome text cannot go out
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session:
        skipped = session.scalar(select(Message).where(Message.contact_id == contact_id, Message.status == "skipped"))
        assert skipped is not None
        assert session.scalar(select(func.count(Event.id)).where(Event.message_id == skipped.id,
                                                                 Event.kind == "message_skipped")) == 1
    timeline = client.get(f"/admin/contacts/{contact_id}").text.split('class="timeline"')[1]
    titles = re.findall(r'<span class="tl-title">(.*?)</span>', timeline, re.S)
    assert [t.strip() for t in titles if "Welcome sms" in t] == ["Text message: Welcome sms"]
    assert "Message skipped" not in timeline
    assert "why: no phone number" in timeline and "Skipped (not sent)" in timeline


def test_contact_list_filters_by_campaign_status_step_and_date(srt, clock, desk):
    client, _csrf = desk
    early = add_contact(srt, clock.now - timedelta(days=10), email="early@example.com", phone=None,
                        consent=("email",), first_name="Early")
    late = add_contact(srt, clock.now, email="late@example.com", phone=None, consent=("email",), first_name="Late")
    loose = add_contact(srt, clock.now, email="loose@example.com", phone=None, consent=("email",), campaign=None,
                        first_name="Loose")
    Dispatcher(srt, "w").run_once(clock.now)  # every enrolled contact's first steps go out (the text is skipped)

    def listed(query: str) -> set[int]:
        page = client.get(f"/admin/contacts?{query}")
        assert page.status_code == 200
        return {int(i) for i in re.findall(r'<th scope="row"><a href="/admin/contacts/(\d+)"', page.text)}

    assert listed("campaign=ketamine-consult") == {early, late}
    assert listed("campaign=ketamine-consult&status=not_enrolled") == {loose}
    assert late in listed("status=active&step=check-day-2")  # welcome sent, waiting for day 2
    with srt.sessions() as session:
        done = {e.contact_id: e.step_index for e in session.scalars(select(Enrollment))}
    step_ids = [step.id for step in srt.campaign("ketamine-consult").steps]
    assert done[early] != done[late]
    assert listed(f"step={step_ids[done[early]]}") == {early}
    assert listed("step=consult-email") == set()
    day = clock.now.date().isoformat()
    assert listed(f"from={day}&to={day}") == {late, loose}
    assert listed(f"to={(clock.now - timedelta(days=5)).date().isoformat()}") == {early}
    bad = client.get("/admin/contacts?from=yesterday")
    assert bad.status_code == 200 and "YYYY-MM-DD" in bad.text
    with srt.sessions() as session:  # each listing is one audit row with the filters it used
        whats = [d.get("what", "") for d in session.scalars(select(AuditEntry.detail).where(
            AuditEntry.action == "contacts_listed").order_by(AuditEntry.id))]
        assert f"from={day} to={day}" in whats and "status=not_enrolled campaign=ketamine-consult" in whats
