"""Messages for front-desk staff: the searchable list of every message (the outbox among them in
outbox mode), one message as sent, and its HTML in a sandbox. Every read is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.read_audit import ReadKind
from patient_drip.content.rendering import sms_info
from patient_drip.models import Contact, Event, Message
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import clinic_zone, render
from patient_drip.web.admin.contacts import sandboxed_html
from patient_drip.web.admin.date_range import parse_range
from patient_drip.web.admin.message_queries import STATUSES, MessageFilter, find_messages
from patient_drip.web.deps import NowDep, ReadSessionDep, record_read

router = APIRouter(prefix="/admin", include_in_schema=False)


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _live_contact(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    return contact if contact is not None and contact.erased_at is None else None


@router.get("/messages", response_class=HTMLResponse)
def message_list(request: Request, user: StaffUser, session: ReadSessionDep, now: NowDep,
                 q: Annotated[str, Query(max_length=200)] = "", channel: Annotated[str, Query(max_length=10)] = "",
                 status: Annotated[str, Query(max_length=20)] = "", step: Annotated[str, Query(max_length=100)] = "",
                 sent_from: Annotated[str, Query(alias="from", max_length=20)] = "",
                 sent_to: Annotated[str, Query(alias="to", max_length=20)] = "",
                 box: Annotated[str, Query(max_length=10)] = "",
                 before: int | None = None, after: int | None = None) -> HTMLResponse:
    rt = _rt(request)
    zone = clinic_zone(rt)
    dates = parse_range(sent_from, sent_to, zone, today=now.astimezone(zone).date())
    campaign = next((cid for cid, c in rt.campaigns.items() if any(s.id == step for s in c.message_steps)), "")
    wanted = MessageFilter(channel=channel if channel in ("email", "sms") else "",
                           status=status if status in STATUSES else "", campaign=campaign,
                           step=step if campaign else "", sent_from=dates.start, sent_until=dates.end,
                           outbox=box == "outbox", query=q)
    page = find_messages(session, wanted, before=before, after=after)
    filters = {"q": q, "channel": wanted.channel, "status": wanted.status, "step": wanted.step,
               "box": "outbox" if wanted.outbox else "", **dates.query()}
    # One audit row for the page: who was listed is patient data, like the contacts list.
    record_read(request, user, ReadKind.MESSAGES_LISTED, now, count=len(page.rows),
                what=" ".join(f"{k}={v}" for k, v in {**filters, "before": before, "after": after}.items()
                              if v not in (None, "")))
    return render(request, "admin/messages.html", {
        "page": page, "filters": filters, "statuses": STATUSES, "campaigns": rt.campaigns,
        "date_error": dates.error, "filtered": any(filters.values()),
    }, user=user)


@router.get("/messages/{message_id}", response_class=HTMLResponse)
def message_page(request: Request, message_id: int, user: StaffUser, session: ReadSessionDep,
                 now: NowDep) -> HTMLResponse:
    message = session.get(Message, message_id)
    contact = _live_contact(session, message.contact_id) if message else None
    if message is None or contact is None:
        return render(request, "admin/not_found.html", {"what": "This message"}, user=user, status_code=404)
    record_read(request, user, ReadKind.MESSAGE_VIEWED, now, count=1, contact_id=contact.id,
                what=f"message {message.id}")
    events = list(session.scalars(select(Event).where(Event.message_id == message.id).order_by(Event.id)))
    info = sms_info(message.body_text) if message.channel == "sms" and message.body_text else None
    return render(request, "admin/message.html", {"message": message, "contact": contact, "events": events,
                                                   "sms": info}, user=user)


@router.get("/messages/{message_id}/html")
def message_html(request: Request, message_id: int, user: StaffUser, session: ReadSessionDep,
                 now: NowDep) -> Response:
    """Exactly the HTML that was sent, for a sandboxed iframe: its own CSP forbids scripts, forms and
    same-origin access, and allows only the inline styles emails need. Audited like the message page
    (it can be opened on its own)."""
    message = session.get(Message, message_id)
    if message is None or not message.body_html or _live_contact(session, message.contact_id) is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    record_read(request, user, ReadKind.MESSAGE_VIEWED, now, count=1, contact_id=message.contact_id,
                what=f"message {message.id} html")
    return sandboxed_html(message.body_html)
