"""The dashboard: messages sent today and this week, replies waiting, crisis flags, messages waiting
for a staff decision (`/admin/review`), bookings not matched to a contact, paused channels, the
public form's SMS-pumping alerts (`contacts.intake_limits.recent_alerts`),
and the funnel of the last 30 days (`admin.funnel`: live bookings, message figures at most seconds old)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from patient_drip.contacts.intake_limits import recent_alerts
from patient_drip.contacts.tasks import count_open
from patient_drip.web.admin.auth import AnyUser
from patient_drip.web.admin.common import clinic_zone, render
from patient_drip.dispatch.pauses import paused_channels
from patient_drip.dispatch.queue import count_in_review
from patient_drip.models import Booking, InboundMessage, Message
from patient_drip.runtime import Runtime
from patient_drip.dispatch.funnel import SENT_STATUSES
from patient_drip.web.admin.funnel import funnel_cache, funnel_context, report_range
from patient_drip.web.admin.funnel_view import funnel_for
from patient_drip.web.deps import NowDep, ReadSessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def start_of_day(now: datetime, rt: Runtime) -> datetime:
    local = now.astimezone(clinic_zone(rt))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, user: AnyUser, session: ReadSessionDep, now: NowDep) -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    today = start_of_day(now, rt)
    week = today - timedelta(days=today.weekday())

    def sent_since(moment: datetime) -> int:  # uses ix_message_sent_at
        return int(session.scalar(select(func.count(Message.id)).where(
            Message.sent_at >= moment, Message.status.in_(SENT_STATUSES))) or 0)

    open_replies = select(func.count(InboundMessage.id)).where(InboundMessage.handled_at.is_(None))
    report, age = funnel_for(rt, funnel_cache(request), session, report_range(request, now))
    return render(request, "admin/dashboard.html", {
        "sent_today": sent_since(today),
        "sent_week": sent_since(week),
        "replies_waiting": int(session.scalar(open_replies) or 0),
        "crisis_open": int(session.scalar(open_replies.where(InboundMessage.crisis.is_(True))) or 0),
        "bookings_unmatched": int(session.scalar(select(func.count(Booking.id)).where(Booking.contact_id.is_(None)))
                                  or 0),
        "in_review": count_in_review(session),
        "tasks_open": count_open(session),
        "paused": paused_channels(session),
        "intake_alerts": recent_alerts(session, now),
        "clinic_zone": clinic_zone(rt),
        **funnel_context(report, age),
    }, user=user)
