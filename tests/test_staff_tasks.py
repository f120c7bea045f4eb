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
    assert actions == ["task_opened", "task_opened", "task_taken", "task_done"]
    assert _tasks(rt)[1] == ("no_show", contact_id, "front@clinic.example")
    rt.close()


def test_marketing_cannot_open_the_task_list(tmp_path, clock):
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    with make_client(rt, clock) as client:
        sign_in_as(client, rt, add_user(rt, "marketing"), clock.now)
        assert client.get("/admin/tasks").status_code == 403
        assert "/admin/tasks" not in client.get("/admin").text
    rt.close()
