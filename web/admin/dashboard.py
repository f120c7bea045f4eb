"""The dashboard: messages sent today and this week, replies waiting, crisis flags, messages waiting
for a staff decision (`/admin/review`), bookings not matched to a contact, paused channels, the
public form's SMS-pumping alerts (`contacts.intake_limits.recent_alerts`),
and the funnel per campaign step (sent → delivered → clicked → booked) drawn as inline SVG."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.contacts.intake_limits import recent_alerts
from patient_drip.contacts.tasks import count_open
from patient_drip.web.admin.auth import AnyUser
from patient_drip.web.admin.common import clinic_zone, render
from patient_drip.dispatch.pauses import paused_channels
from patient_drip.dispatch.queue import count_in_review
from patient_drip.models import Booking, InboundMessage, Message
from patient_drip.runtime import Runtime
from patient_drip.dispatch.funnel import SENT_STATUSES, CampaignSummary, campaign_summaries
from patient_drip.web.deps import NowDep, ReadSessionDep, read_session

log = logging.getLogger("drip.admin")
router = APIRouter(prefix="/admin", include_in_schema=False)

FUNNEL_TTL_SECONDS = 60  # the funnel reads every message row; recompute at most once a minute
BAR_WIDTH = 360  # px of the longest bar in the SVG chart
STAGES = ("sent", "delivered", "clicked", "booked")


@dataclass(frozen=True, slots=True)
class Bar:
    stage: str
    value: int
    width: int
    y: int


@dataclass(frozen=True, slots=True)
class StepChart:
    step: str
    channel: str
    bars: list[Bar]
    y: int
    sent: int
    conversion: str


def funnel(request: Request, session: Session, rt: Runtime, fresh: bool = False) -> tuple[list[CampaignSummary], float]:
    """Campaign summaries and their age in seconds.

    Counting reads every message row (about 1 s per 400k messages on SQLite), so the result is
    kept for a minute in this process; after that the stale figures are shown while one
    background thread recounts (on a read-only session, so the dispatcher is never held up).
    Only the very first view, or "Recount now" (`fresh`), waits for the count."""
    cache: dict[str, Any] = request.app.state.admin.funnel_cache
    cached = cache.get("funnel")
    moment = time.monotonic()
    if cached is not None and not fresh:
        age = moment - cached[0]
        if age >= FUNNEL_TTL_SECONDS:
            _recount_in_background(cache, rt)
        return cached[1], age
    summaries = campaign_summaries(session, rt.campaigns)
    cache["funnel"] = (moment, summaries)
    return summaries, 0.0


_recount_lock = threading.Lock()


def _recount_in_background(cache: dict[str, Any], rt: Runtime) -> None:
    if not _recount_lock.acquire(blocking=False):
        return  # already recounting

    def run() -> None:
        try:
            with read_session(rt) as session:
                started = time.monotonic()
                summaries = campaign_summaries(session, rt.campaigns)
            cache["funnel"] = (started, summaries)
        except Exception:  # the next view tries again; the stale figures stay meanwhile
            log.exception("funnel recount failed")
        finally:
            _recount_lock.release()

    threading.Thread(target=run, name="funnel-recount", daemon=True).start()


def chart(summary: CampaignSummary) -> tuple[list[StepChart], int]:
    """Bar geometry for one campaign's funnel; widths are relative to the largest `sent`."""
    top = max([step.sent for step in summary.steps] + [1])
    rows, y = [], 0
    for step in summary.steps:
        bars = []
        for index, stage in enumerate(STAGES):
            value = int(getattr(step, stage))
            bars.append(Bar(stage, value, max(1 if value else 0, round(BAR_WIDTH * value / top)), y + 20 + index * 14))
        conversion = f"{step.booked / step.sent:.1%}" if step.sent else "–"
        rows.append(StepChart(step.step, step.channel, bars, y, step.sent, conversion))
        y += 20 + len(STAGES) * 14 + 14
    return rows, y


def start_of_day(now: datetime, rt: Runtime) -> datetime:
    local = now.astimezone(clinic_zone(rt))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, user: AnyUser, session: ReadSessionDep, now: NowDep, fresh: str = "") -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    today = start_of_day(now, rt)
    week = today - timedelta(days=today.weekday())

    def sent_since(moment: datetime) -> int:  # uses ix_message_sent_at
        return int(session.scalar(select(func.count(Message.id)).where(
            Message.sent_at >= moment, Message.status.in_(SENT_STATUSES))) or 0)

    open_replies = select(func.count(InboundMessage.id)).where(InboundMessage.handled_at.is_(None))
    summaries, age = funnel(request, session, rt, fresh=bool(fresh))
    charts = [(summary, *chart(summary)) for summary in summaries]
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
        "charts": charts,
        "bar_width": BAR_WIDTH,
        "funnel_age": int(age),
        "campaign_names": {cid: c.name for cid, c in rt.campaigns.items()},
    }, user=user)
