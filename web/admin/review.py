"""The review queue (`/admin/review`): sends whose fate nobody can tell automatically — an email a
worker had handed to SendGrid when it died, with no event since; a text Twilio could not be asked
about — each with what is known, and the two staff decisions: "mark as sent" or "send again".

Both go through `dispatch.reconcile.settle_by_staff` (audited); this module parses and presents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from patient_drip.dispatch import queue
from patient_drip.dispatch.reconcile import ReviewAction, ReviewError, settle_by_staff
from patient_drip.models import Contact, Event, Message
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.deps import NowDep, ReadSessionDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE = 50  # settling these brings the next ones up
DONE = {ReviewAction.MARK_SENT: "review_marked_sent", ReviewAction.SEND_AGAIN: "review_sent_again"}


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One send in review, with what is known about it."""

    message: Message
    contact: Contact
    campaign_name: str
    events: list[Event]  # newest first: provider answers, retries, when it became unknown


def _items(request: Request, session: ReadSessionDep) -> tuple[list[ReviewItem], int]:
    rt: Runtime = request.app.state.rt
    rows = queue.messages_in_review(session, PAGE)
    items = [ReviewItem(message, contact, getattr(rt.campaigns.get(message.campaign_id), "name", message.campaign_id),
                        queue.message_events(session, message.id)) for message, contact in rows]
    return items, queue.count_in_review(session)


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, user: StaffUser, session: ReadSessionDep) -> HTMLResponse:
    """Sends waiting for a staff decision, oldest first, 50 at a time."""
    items, total = _items(request, session)
    return render(request, "admin/review.html", {"entries": items, "total": total, "error": ""}, user=user)


@router.post("/review/{message_id}", response_model=None)
def settle(request: Request, message_id: int, user: StaffUser, session: SessionDep, now: NowDep,
           action: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Apply one decision (`action` = mark_sent | send_again); a refused one shows why (409)."""
    rt: Runtime = request.app.state.rt
    try:
        choice = ReviewAction(action)
    except ValueError:
        choice = None
    try:
        if choice is None:
            raise ReviewError("Choose “mark as sent” or “send again”.")
        settle_by_staff(session, rt.campaigns, message_id, choice, user.actor, now)
    except ReviewError as exc:
        session.rollback()
        items, total = _items(request, session)
        return render(request, "admin/review.html", {"entries": items, "total": total, "error": str(exc)},
                      user=user, status_code=409)
    session.commit()
    return redirect("/admin/review", DONE[choice])
