"""The staff review queue (`/admin/review`): an email whose provider call timed out after the
request left, with no SendGrid event since, waits for a person. "Mark as sent" and "send again"
both go through `dispatch.reconcile.settle_by_staff`, are audited, and the sequence carries on
correctly after either — without a second send record."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.dispatch.reconcile import ReviewAction, ReviewError, reconcile_unknown, settle_by_staff
from patient_drip.models import AuditEntry, Enrollment, EnrollmentStatus, Event, Message, MessageStatus
from patient_drip.providers.sandbox import Fault
from patient_drip.runtime import Runtime, build_runtime
from support.builders import add_contact, messages_for, run_until_done, sandbox_settings

# An email-only contact: five email steps sent, the three SMS steps recorded as skipped.
from support.staff import add_user, make_client, sign_in_as


@pytest.fixture
def live(database_url, sandbox) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    runtime = build_runtime(sandbox_settings(database_url, sandbox, provider_timeout_seconds=1,
                                             worker_concurrency=2))
    yield runtime
    runtime.close()


def email_in_review(rt: Runtime, sandbox, clock) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """An email-only contact whose first email timed out after reaching SendGrid and got no event:
    reconciliation hands it to staff. Returns (contact id, message id)."""
    contact_id = add_contact(rt, clock.now, phone=None, consent=("email",))
    sandbox.add_fault("sendgrid", Fault(timeout=True, hang_ms=1400))
    Dispatcher(rt, "w").run_once(clock.now)
    assert [m.status for m in messages_for(rt, contact_id)] == [MessageStatus.UNKNOWN]
    clock.advance(timedelta(minutes=31))
    assert reconcile_unknown(rt, clock.now) == {"needs_review": 1}
    message = messages_for(rt, contact_id)[0]
    assert message.status == MessageStatus.NEEDS_REVIEW and message.handed_at is not None
    return contact_id, message.id


def received(sandbox, subject_part: str) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for m in sandbox.messages() if m.get("direction") == "outbound-api"
               and subject_part in (m.get("subject") or ""))


def test_mark_as_sent_settles_it_audited_and_the_sequence_goes_on(live, sandbox, clock):
    contact_id, message_id = email_in_review(live, sandbox, clock)
    first_subject = messages_for(live, contact_id)[0].subject or ""
    with live.sessions() as session, session.begin():
        settle_by_staff(session, live.campaigns, message_id, ReviewAction.MARK_SENT, "user:front@clinic.test",
                        clock.now)
    with live.sessions() as session:
        message = session.get(Message, message_id)
        assert message.status == MessageStatus.SENT and message.sent_at == message.handed_at
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "message_settled"))
        assert entry.actor == "user:front@clinic.test" and entry.detail["decision"] == "mark_sent"
    run_until_done(live, clock)
    emails = [m for m in messages_for(live, contact_id) if m.channel == "email"]
    assert [m.status for m in emails] == [MessageStatus.SENT] * 5  # every email step, once each
    assert received(sandbox, first_subject) == 1  # marking it sent sent nothing


def test_send_again_resends_the_same_record_then_carries_on(live, sandbox, clock):
    contact_id, message_id = email_in_review(live, sandbox, clock)
    first_subject = messages_for(live, contact_id)[0].subject or ""
    run_until_done(live, clock)  # the sequence went on meanwhile and finished
    with live.sessions() as session:
        assert session.scalar(select(Enrollment.status)) == EnrollmentStatus.COMPLETED
    with live.sessions() as session, session.begin():
        settle_by_staff(session, live.campaigns, message_id, ReviewAction.SEND_AGAIN, "user:front@clinic.test",
                        clock.now)
    summary = run_until_done(live, clock)
    assert summary.outcomes["sent"] == 1  # that one step, and nothing already done
    with live.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Message).where(Message.contact_id == contact_id))
        message = session.get(Message, message_id)
        assert rows == 8 and message.status == MessageStatus.SENT and message.attempts == 2
        assert session.scalar(select(Enrollment.status)) == EnrollmentStatus.COMPLETED
        kinds = list(session.scalars(select(Event.kind).where(Event.message_id == message_id).order_by(Event.id)))
        assert kinds[-2:] == ["message_settled", "message_sent"]
    assert received(sandbox, first_subject) == 2  # the timed-out request, and the one staff asked for


def test_a_decision_is_taken_once_and_an_ended_sequence_is_not_resent(live, sandbox, clock):
    contact_id, message_id = email_in_review(live, sandbox, clock)
    with live.sessions() as session, session.begin():
        enrollment = session.scalar(select(Enrollment))
        enrollment.status, enrollment.exit_reason = EnrollmentStatus.EXITED, "booked"
    with live.sessions() as session, session.begin(), pytest.raises(ReviewError, match="ended .booked."):
        settle_by_staff(session, live.campaigns, message_id, ReviewAction.SEND_AGAIN, "user:a", clock.now)
    with live.sessions() as session, session.begin():
        settle_by_staff(session, live.campaigns, message_id, ReviewAction.MARK_SENT, "user:a", clock.now)
    with live.sessions() as session, session.begin(), pytest.raises(ReviewError, match="no longer waiting"):
        settle_by_staff(session, live.campaigns, message_id, ReviewAction.SEND_AGAIN, "user:b", clock.now)


@pytest.mark.parametrize("button", ["mark_sent", "send_again"])
def test_front_desk_settles_an_item_on_the_review_page(live, sandbox, clock, button):
    contact_id, message_id = email_in_review(live, sandbox, clock)
    client = make_client(live, clock)
    csrf = sign_in_as(client, live, add_user(live, "staff", "front@clinic.test"), clock.now)
    dashboard = client.get("/admin").text
    assert re.search(r'id="in-review">1<', dashboard) and 'href="/admin/review"' in dashboard
    page = client.get("/admin/review").text
    assert f'id="review-{message_id}"' in page and "Handed to the provider" in page and "worker <code>w</code>" in page
    assert "timed out" in page or "no SendGrid event" in page  # what the provider said, and why it is here
    response = client.post(f"/admin/review/{message_id}", data={"csrf_token": csrf, "action": button})
    assert response.status_code == 303 and "done=review_" in response.headers["location"]
    assert "Nothing to review." in client.get("/admin/review").text
    assert re.search(r'id="in-review">0<', client.get("/admin").text)
    with live.sessions() as session:
        assert session.get(Message, message_id).status == (
            MessageStatus.SENT if button == "mark_sent" else MessageStatus.RETRYING)
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "message_settled"))
        assert entry.actor.endswith("front@clinic.test") and entry.detail["decision"] == button
    # Pressing it again (another tab) is refused with the reason, not applied twice.
    again = client.post(f"/admin/review/{message_id}", data={"csrf_token": csrf, "action": button})
    assert again.status_code == 409 and "no longer waiting for review" in again.text


def test_marketing_and_clinicians_cannot_open_or_settle_the_queue(live, sandbox, clock):
    _contact_id, message_id = email_in_review(live, sandbox, clock)
    for role in ("marketing", "clinician"):
        client = make_client(live, clock)
        csrf = sign_in_as(client, live, add_user(live, role, f"{role}@clinic.test"), clock.now)
        assert client.get("/admin/review").status_code == 403
        assert client.post(f"/admin/review/{message_id}", data={"csrf_token": csrf, "action": "mark_sent"}
                           ).status_code == 403
    with live.sessions() as session:
        assert session.get(Message, message_id).status == MessageStatus.NEEDS_REVIEW
