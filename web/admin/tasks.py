"""The front desk's "To do" page (`/admin/tasks`): what the system asks a person to do — new requests
to contact, no-shows to call, bookings to match, sends to review or that failed — oldest first, with
who took each on and a link to act; replies waiting in the inbox (crisis first); and the recently done
tasks with who finished them and when. Taking and finishing go through `contacts.tasks` (audited); this module
parses and presents."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from patient_drip.contacts.tasks import TaskError, done_tasks, finish_task, open_tasks, take_task, waiting_replies
from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.deps import NowDep, ReadSessionDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page(request: Request, user: StaffUser, session: ReadSessionDep, error: str = "",
          status_code: int = 200) -> HTMLResponse:
    return render(request, "admin/tasks.html", {"open_rows": open_tasks(session), "done_rows": done_tasks(session),
                                                "replies": waiting_replies(session), "error": error},
                  user=user, status_code=status_code)


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request, user: StaffUser, session: ReadSessionDep) -> HTMLResponse:
    return _page(request, user, session)


@router.post("/tasks/{task_id}/take", response_model=None)
def take(request: Request, task_id: int, user: StaffUser, session: SessionDep, now: NowDep) -> Response:
    """The signed-in user takes the task on."""
    try:
        take_task(session, task_id, user.id, user.actor, now)
    except TaskError as exc:
        session.rollback()
        return _page(request, user, session, str(exc), 409)
    session.commit()
    return redirect("/admin/tasks", "task_taken")


@router.post("/tasks/{task_id}/done", response_model=None)
def done(request: Request, task_id: int, user: StaffUser, session: SessionDep, now: NowDep) -> Response:
    """The signed-in user finished the task; one already done is refused with who did it (409)."""
    try:
        finish_task(session, task_id, user.actor, now)
    except TaskError as exc:
        session.rollback()
        return _page(request, user, session, str(exc), 409)
    session.commit()
    return redirect("/admin/tasks", "task_done")
