"""Staff tasks from the schedulers: a Calendly no-show (signed as Calendly signs it) opens a task to call
the person, once however often it is replayed; a booking by someone we cannot match opens one to find
them. Staff see them on "To do" and the dashboard, take one on and finish it; a finished task keeps who
and when, and finishing it twice is refused with who did it. Each change is audited."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from patient_drip.models import AuditEntry, StaffTask
from support.builders import add_contact
from support.staff import add_user, make_client, runtime_for, sign_in_as
from support.webhooks import calendly_event, calendly_headers

CALENDLY_KEY = "calendly-signing-key-for-tests"
NO_SHOW = (b'{"event": "invitee_no_show.created", "created_at": "2026-03-02T16:00:00Z", "payload": '
           b'{"invitee": {"uri": "u-2", "email": "alex@example.com", "name": "Alex"}, "uri": "ns-1"}}')


def _tasks(rt):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return [(t.kind, t.contact_id, t.done_by) for t in session.scalars(select(StaffTask).order_by(StaffTask.id))]


def test_a_no_show_and_an_unmatched_booking_become_tasks_staff_take_and_finish(tmp_path, clock):
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", calendly_signing_key=CALENDLY_KEY)
    contact_id = add_contact(rt, clock.now)
    with make_client(rt, clock) as client:
        def post(body: bytes) -> str:
            answer = client.post("/webhooks/calendly", content=body, headers=calendly_headers(CALENDLY_KEY, body,
                                                                                              clock.now))
            return str(answer.json()["status"])

        booked = calendly_event("invitee.created", email="alex@example.com", name="Alex", uri="u-2", at=clock.now)
        walk_in = calendly_event("invitee.created", email="walk-in@example.org", name="Jordan Walk", uri="u-9",
                                 at=clock.now)
        assert [post(booked), post(walk_in), post(NO_SHOW), post(NO_SHOW)] == ["booked", "unmatched", "no_show",
                                                                               "duplicate"]
        assert _tasks(rt) == [("unmatched_booking", None, None), ("no_show", contact_id, None)]

        first = add_user(rt, "staff", "front@clinic.example", name="Front Desk")
        csrf = sign_in_as(client, rt, first, clock.now)
        assert '<span class="card-value" id="tasks-open">2</span>' in client.get("/admin").text
        page = client.get("/admin/tasks")
        assert page.status_code == 200
        assert "Missed the consultation: call them" in page.text and "Jordan Walk · walk-in@example.org" in page.text
        with rt.sessions() as session:
            no_show_id, unmatched_id = (session.scalar(select(StaffTask.id).where(StaffTask.kind == kind))
                                        for kind in ("no_show", "unmatched_booking"))

        taken = client.post(f"/admin/tasks/{no_show_id}/take", data={"csrf_token": csrf}, follow_redirects=True)
        assert "The task is yours now." in taken.text
        row = taken.text.split(f'id="task-{no_show_id}"')[1].split("</tr>")[0]
        assert "Front Desk" in row and "Take it" not in row

        clock.advance(timedelta(minutes=7))
        done = client.post(f"/admin/tasks/{no_show_id}/done", data={"csrf_token": csrf}, follow_redirects=True)
        assert "Done. The task is kept below" in done.text
        assert f'id="task-{no_show_id}"' not in done.text
        kept = done.text.split(f'id="done-{no_show_id}"')[1].split("</tr>")[0]
        assert "front@clinic.example" in kept and "Missed the consultation" in kept
        again = client.post(f"/admin/tasks/{no_show_id}/done", data={"csrf_token": csrf})
        assert again.status_code == 409 and "already done by front@clinic.example" in again.text
        assert '<span class="card-value" id="tasks-open">1</span>' in client.get("/admin").text
        assert client.post("/admin/tasks/999999/done", data={"csrf_token": csrf}).status_code == 409
        # without the CSRF token nothing changes
        assert client.post(f"/admin/tasks/{unmatched_id}/done", data={}).status_code == 403

    with rt.sessions() as session:
        task = session.get(StaffTask, no_show_id)
        assert (task.done_by, task.done_at, task.assigned_to) == ("front@clinic.example", clock.now, first.id)
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("task_%"))
                                       .order_by(AuditEntry.id)))
    assert actions == ["task_taken", "task_done"]  # the system opens tasks; what staff do is audited
    assert _tasks(rt)[1] == ("no_show", contact_id, "front@clinic.example")
    rt.close()


def test_marketing_cannot_open_the_task_list(tmp_path, clock):
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    with make_client(rt, clock) as client:
        sign_in_as(client, rt, add_user(rt, "marketing"), clock.now)
        assert client.get("/admin/tasks").status_code == 403
        assert "/admin/tasks" not in client.get("/admin").text
    rt.close()


def _open(rt):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return sorted((t.kind, t.contact_id) for t in session.scalars(select(StaffTask).where(StaffTask.done_at.is_(None))))


def test_new_requests_open_a_task_to_contact_them_closed_when_they_book(database_url, sandbox, clock):
    from patient_drip.contacts.bookings import mark_booked
    from patient_drip.models import Contact
    from support.intake import live_clinic, post_request, processed

    with live_clinic(database_url, sandbox, clock) as (rt, base):
        assert post_request(base, first_name="Rosa", email="rosa@example.com", consent_email=True,
                            campaign="ketamine-consult").status_code == 202
        assert post_request(base, first_name="Sam", email="sam@example.com", consent_email=True,
                            preferred_channel="phone", campaign="ketamine-consult").status_code == 202
        # a request naming someone we know opens nothing: it proves nothing until confirmed
        assert post_request(base, first_name="Rosa", email="rosa@example.com", consent_email=True,
                            campaign="ketamine-consult").status_code == 202
        processed(rt)
        with rt.sessions() as session:
            rosa, sam = (session.scalar(select(Contact.id).where(Contact.email == email))
                         for email in ("rosa@example.com", "sam@example.com"))
        assert _open(rt) == sorted([("new_request", rosa), ("phone_call", sam)])
        with rt.sessions() as session, session.begin():
            mark_booked(session, rt.tokens, rt.campaigns, session.get(Contact, rosa), clock.now, "user:desk", "staff")
        assert _open(rt) == [("phone_call", sam)]
        with rt.sessions() as session:
            closed = session.scalar(select(StaffTask).where(StaffTask.contact_id == rosa))
            assert closed.done_by == "user:desk (booked)" and closed.done_at == clock.now


def test_a_send_in_review_and_a_failed_send_open_tasks_settling_closes_the_review(database_url, sandbox, clock):
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.dispatch.reconcile import ReviewAction, reconcile_unknown, settle_by_staff
    from patient_drip.providers.sandbox import Fault
    from patient_drip.runtime import build_runtime
    from support.builders import add_contact, messages_for, sandbox_settings

    rt = build_runtime(sandbox_settings(database_url, sandbox, provider_timeout_seconds=1, worker_concurrency=1))
    try:
        doubtful = add_contact(rt, clock.now, phone=None, consent=("email",))
        sandbox.add_fault("sendgrid", Fault(timeout=True, hang_ms=1400))
        Dispatcher(rt, "w").run_once(clock.now)
        clock.advance(timedelta(minutes=31))
        assert reconcile_unknown(rt, clock.now) == {"needs_review": 1}
        bad_address = add_contact(rt, clock.now, email="nobody@example.com", phone=None, consent=("email",))
        sandbox.add_fault("sendgrid", Fault(status=400, recipient=True))
        Dispatcher(rt, "w").run_once(clock.now)
        assert _open(rt) == sorted([("review", doubtful), ("failed_send", bad_address)])
        with rt.sessions() as session:
            failed_message = session.scalar(select(StaffTask.message_id).where(StaffTask.kind == "failed_send"))
        assert failed_message == messages_for(rt, bad_address)[0].id

        message_id = messages_for(rt, doubtful)[0].id
        with rt.sessions() as session, session.begin():
            settle_by_staff(session, rt.campaigns, message_id, ReviewAction.MARK_SENT, "desk@clinic.test", clock.now)
        assert _open(rt) == [("failed_send", bad_address)]
        with rt.sessions() as session:
            review = session.scalar(select(StaffTask).where(StaffTask.kind == "review"))
            assert (review.done_by, review.message_id) == ("desk@clinic.test", message_id)
    finally:
        rt.close()


def test_the_to_do_page_shows_replies_waiting_crisis_first(client, srt, clock):
    from patient_drip.models import InboundMessage

    contact_id = add_contact(srt, clock.now)
    with srt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body="what does it cost?",
                                   classification="other", crisis=False, received_at=clock.now))
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body="I want to end it",
                                   classification="crisis", crisis=True, received_at=clock.now + timedelta(minutes=1)))
    sign_in_as(client, srt, add_user(srt, "staff"), clock.now)
    page = client.get("/admin/tasks").text
    waiting = page.split('id="replies-heading"')[1].split("</ul>")[0]
    assert "Replies waiting (2)" in page
    assert waiting.index("Possible crisis") < waiting.index("· message")
    assert waiting.count(f'href="/admin/replies/contacts/{contact_id}"') == 2
