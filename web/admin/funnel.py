"""The funnel page for marketing and everyone else: sent → delivered → opened → clicked → booked per
campaign step over a date range, with rates, a daily trend (server-side SVG with a table as its text
alternative), the attribution rule in words, and the same figures as CSV. Only counts: no patient data."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.dispatch.funnel_report import RULE, FunnelReport
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import AnyUser
from patient_drip.web.admin.common import clinic_zone, render
from patient_drip.web.admin.date_range import DateRange, parse_range
from patient_drip.web.admin.funnel_view import BAR_WIDTH, FunnelCache, funnel_for, step_bars, step_title, trend
from patient_drip.web.deps import NowDep, ReadSessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)

DEFAULT_DAYS = 30
TREND_STAGES = ("sent", "clicked", "booked")


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def funnel_cache(request: Request) -> FunnelCache:
    return request.app.state.admin.funnel_cache  # type: ignore[no-any-return]


def report_range(request: Request, now: datetime, first: str = "", last: str = "") -> DateRange:
    """The range asked for, by default the last 30 days of the clinic's calendar up to today."""
    zone = clinic_zone(_rt(request))
    return parse_range(first, last, zone, today=now.astimezone(zone).date(), default_days=DEFAULT_DAYS)


def funnel_context(report: FunnelReport, age: int, campaign: str = "") -> dict[str, object]:
    """What the `_funnel.html` partial needs: the campaigns shown with their bars and trends."""
    shown = [c for c in report.campaigns if not campaign or c.campaign == campaign]
    return {
        "report": report, "funnel_age": age, "rule": RULE, "bar_width": BAR_WIDTH,
        "blocks": [(c, *step_bars(c, report.delivery_known), [trend(c.days, s) for s in TREND_STAGES])
                   for c in shown],
        "step_title": step_title,
    }


@router.get("/funnel", response_class=HTMLResponse)
def funnel_page(request: Request, user: AnyUser, session: ReadSessionDep, now: NowDep,
                first: Annotated[str, Query(alias="from", max_length=20)] = "",
                last: Annotated[str, Query(alias="to", max_length=20)] = "",
                campaign: Annotated[str, Query(max_length=100)] = "") -> HTMLResponse:
    rt = _rt(request)
    dates = report_range(request, now, first, last)
    report, age = funnel_for(rt, funnel_cache(request), session, dates)
    chosen = campaign if campaign in {c.campaign for c in report.campaigns} else ""
    return render(request, "admin/funnel.html", {
        **funnel_context(report, age, chosen), "dates": dates, "campaign": chosen,
        "campaign_names": {c.campaign: c.name for c in report.campaigns},
        "csv_query": {**dates.query(), "campaign": chosen},
    }, user=user)


CSV_COLUMNS = ("campaign", "step_number", "step", "channel", "sent", "delivered", "opened", "clicked", "booked",
               "skipped", "failed", "delivered_rate", "opened_rate", "clicked_rate", "booked_rate")
DAY_COLUMNS = ("campaign", "day", "sent", "clicked", "booked")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@router.get("/funnel.csv")
def funnel_csv(request: Request, user: AnyUser, session: ReadSessionDep, now: NowDep,
               first: Annotated[str, Query(alias="from", max_length=20)] = "",
               last: Annotated[str, Query(alias="to", max_length=20)] = "",
               campaign: Annotated[str, Query(max_length=100)] = "",
               by: Annotated[str, Query(max_length=10)] = "step") -> Response:
    """The funnel per step (`by=step`) or per day (`by=day`) as CSV; a figure not known (delivery in
    outbox mode, opens of texts) is left empty, not written as 0."""
    rt = _rt(request)
    dates = report_range(request, now, first, last)
    report, _age = funnel_for(rt, funnel_cache(request), session, dates)
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    shown = [c for c in report.campaigns if not campaign or c.campaign == campaign]
    if by == "day":
        writer.writerow(DAY_COLUMNS)
        for funnel in shown:
            for day in funnel.days:
                writer.writerow([funnel.campaign, day.day.isoformat(), day.sent, day.clicked, day.booked])
    else:
        writer.writerow(CSV_COLUMNS)
        for funnel in shown:
            for step in funnel.steps:
                delivered = step.delivered if report.delivery_known else ""
                opened = step.opened if report.opens_known and step.channel == "email" else ""
                writer.writerow([
                    funnel.campaign, step.position or "", step.step, step.channel, step.sent, delivered, opened,
                    step.clicked, step.booked, step.skipped, step.failed,
                    _rate(step.rate("delivered")) if report.delivery_known else "",
                    _rate(step.rate("opened")) if opened != "" else "",
                    _rate(step.rate("clicked")), _rate(step.rate("booked"))])
    name = f"funnel-{'days' if by == 'day' else 'steps'}-{dates.first}-{dates.last}.csv"
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})
