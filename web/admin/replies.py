"""The replies inbox: patients' text replies, crisis-flagged first, each marked handled by a person.

Handling a crisis reply resolves the crisis: staff choose whether the sequences it paused resume
or stay paused (`contacts.enrollment.resolve_crisis`); keeping them paused is the default."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from patient_drip.contacts.enrollment import mark_reply_handled
from patient_drip.contacts.read_audit import ReadKind
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.models import Contact, InboundMessage
from patient_drip.web.deps import NowDep, ReadSessionDep, SessionDep, record_read

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE = 50
RESUME = "resume"  # the "resolve and resume the sequence" button; anything else keeps them paused


@router.get("/replies", response_class=HTMLResponse)
def replies(request: Request, user: StaffUser, session: ReadSessionDep, now: NowDep, show: str = "open",
            before: int | None = None) -> HTMLResponse:
    """Open replies: crisis first, then oldest first (who has waited longest), 50 at a time (handling
    them brings the next ones up). Handled: newest first, paginated by id."""
    query = select(InboundMessage, Contact).outerjoin(Contact, Contact.id == InboundMessage.contact_id)
    if show == "handled":
        query = query.where(InboundMessage.handled_at.is_not(None))
        if before is not None:
            query = query.where(InboundMessage.id < before)
        query = query.order_by(InboundMessage.id.desc())
    else:
        show = "open"
        query = query.where(InboundMessage.handled_at.is_(None)).order_by(
            InboundMessage.crisis.desc(), InboundMessage.received_at, InboundMessage.id)
    rows = list(session.execute(query.limit(PAGE + 1)).all())
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    older = rows[-1][0].id if rows and more and show == "handled" else None
    # Patients' own words: one audit row for the page, with how many replies it shows.
    record_read(request, user, ReadKind.REPLIES_VIEWED, now, count=len(rows),
                what=f"show={show}" + (f" before={before}" if before is not None else ""))
    return render(request, "admin/replies.html", {"rows": rows, "show": show, "older": older, "more": more},
                  user=user)


@router.post("/replies/{reply_id}/handled")
def reply_handled(request: Request, reply_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                  note: Annotated[str, Form(max_length=400)] = "",
                  sequence: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Mark the reply handled (once). For a crisis reply of a known contact this also resolves the
    crisis: `sequence=resume` resumes the sequences it paused, anything else keeps them paused."""
    reply = session.get(InboundMessage, reply_id)
    if reply is None:
        return render(request, "admin/not_found.html", {"what": "This reply"}, user=user, status_code=404)
    rt: Runtime = request.app.state.rt
    resumed = mark_reply_handled(session, rt.campaigns, reply, sequence == RESUME, note, now, user.actor)
    session.commit()
    if resumed is None:  # asked to resume, but another crisis reply of this person is still open
        return redirect("/admin/replies", "crisis_still_open")
    return redirect("/admin/replies", "resumed" if resumed else "handled")
