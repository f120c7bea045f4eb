"""Campaigns: the journey diagram with live counts (`web.admin.journey`), the timing form and its
version history (`content.campaign_versions`: marketing and admins change delays and turn steps off),
exactly what a patient receives when (simulate_campaign), each campaign's own funnel of the last
30 days, and its A/B steps' and holdout's results (`dispatch.experiment_results`)."""

from __future__ import annotations

from datetime import datetime

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip.web.admin.auth import AnyUser, CurrentUser, MarketingUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.admin.journey import journey_layout
from patient_drip.web.admin.contacts import sandboxed_html
from patient_drip.web.admin.funnel import funnel_cache, funnel_context, report_range
from patient_drip.web.admin.funnel_view import funnel_for
from patient_drip.web.deps import NowDep, ReadSessionDep, read_session
from patient_drip.content.campaign_migration import (MigrationInvalid, in_flight_versions, load_version,
                                                     migrate_in_flight, migration_preview)
from patient_drip.content.campaign_versions import (TimingInvalid, campaign_for, delay_field, format_delay,
                                                    history, save_version)
from patient_drip.dispatch.experiment_results import experiment_results
from patient_drip.dispatch.experiment_stats import MIN_BOOKINGS_TOTAL, MIN_SENT_PER_ARM
from patient_drip.dispatch.journey_counts import journey_counts
from patient_drip.models import Enrollment
from patient_drip.content.rendering import RenderError, sms_info
from patient_drip.runtime import Runtime
from patient_drip.content.context import message_context
from patient_drip.content.first_sms import sms_frequency
from patient_drip.content.simulate import PREVIEW_KEY, SAMPLE_FIRST_NAME, SimulatedMessage, simulate_campaign
from patient_drip.content.tokens import LinkTokens

router = APIRouter(prefix="/admin", include_in_schema=False)


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _simulate(rt: Runtime, campaign_id: str) -> tuple[list[SimulatedMessage], str]:
    rt.refresh()  # show the template and timing versions that are live now
    try:
        return simulate_campaign(rt.settings, rt.campaign(campaign_id), renderer=rt.renderer), ""
    except RenderError as exc:
        return [], str(exc)


@router.get("/campaigns", response_class=HTMLResponse)
def campaign_list(request: Request, user: AnyUser, session: ReadSessionDep) -> HTMLResponse:
    rt = _rt(request)
    counts = dict(session.execute(select(Enrollment.campaign_id, func.count(Enrollment.id))
                                  .group_by(Enrollment.campaign_id)).all())
    return render(request, "admin/campaigns.html", {"campaigns": rt.campaigns, "counts": counts}, user=user)


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: str, user: AnyUser, session: ReadSessionDep,
                  now: NowDep) -> HTMLResponse:
    rt = _rt(request)
    if campaign_id not in rt.campaigns:
        return render(request, "admin/not_found.html", {"what": "This campaign"}, user=user, status_code=404)
    return _campaign_page(request, rt, session, user, campaign_id, now)


def _campaign_page(request: Request, rt: Runtime, session: Session, user: CurrentUser, campaign_id: str,
                   now: datetime, *, values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                   status_code: int = 200) -> HTMLResponse:
    """The page; with `values` and `errors`, the timing form as it was sent and what is wrong with it."""
    messages, error = _simulate(rt, campaign_id)
    campaign = rt.campaign(campaign_id)  # after _simulate's refresh: the version in force
    total_days = max([int(step.delay.total_seconds()) // 86400 for step in campaign.message_steps] + [0])
    sms = {m.step: sms_info(m.text) for m in messages if m.channel == "sms"}
    # Its own numbers: the funnel of the last 30 days for this campaign alone.
    report, age = funnel_for(rt, funnel_cache(request), session, report_range(request, now))
    if values is None:
        values = {"delays": {step.id: format_delay(step.delay) for step in campaign.message_steps},
                  "enabled": {step.id for step in campaign.message_steps if step.enabled}, "note": ""}
    return render(request, "admin/campaign.html", {
        **funnel_context(report, age, campaign_id),
        "campaign": campaign, "messages": messages, "error": error, "sms": sms, "total_days": total_days,
        "sample_name": SAMPLE_FIRST_NAME, "steps_by_id": {s.id: s for s in campaign.message_steps},
        "journey": journey_layout(campaign, journey_counts(session, campaign_id)),
        "versions": history(session, campaign_id), "timing": values, "timing_errors": errors or {},
        "delay_field": delay_field,
        # All time, not the funnel's 30 days: a test's verdict is about everyone who took part.
        "results": experiment_results(session, campaign_ids=[campaign_id],
                                      step_order={campaign_id: [s.id for s in campaign.message_steps]}).get(campaign_id),
        "min_sent": MIN_SENT_PER_ARM, "min_bookings": MIN_BOOKINGS_TOTAL,
        "older": {number: count for number, count in sorted(in_flight_versions(session, campaign_id).items())
                  if number < campaign.version},
    }, user=user, status_code=status_code)


@router.post("/campaigns/{campaign_id}/timing", response_model=None)
async def campaign_timing_submit(request: Request, campaign_id: str, user: MarketingUser, now: NowDep) -> Response:
    """Save the timing form as a new version (`save_version`), or show it again with every problem."""
    rt = _rt(request)
    if campaign_id not in rt.campaigns:
        return render(request, "admin/not_found.html", {"what": "This campaign"}, user=user, status_code=404)
    form = await request.form()
    steps = rt.campaign(campaign_id).message_steps
    delays = {step.id: str(form.get(delay_field(step.id), ""))[:100] for step in steps}
    enabled = {str(value) for value in form.getlist("enabled")} & {step.id for step in steps}
    note = str(form.get("note", ""))[:2000]
    based_on = str(form.get("based_on", ""))
    values = {"delays": delays, "enabled": enabled, "note": note}

    def save() -> Response:
        with rt.sessions() as session:
            try:
                saved = save_version(session, rt.campaign(campaign_id), delays, enabled, note, user.actor, now,
                                     based_on=int(based_on) if based_on.isdigit() else None)
                session.commit()
            except TimingInvalid as exc:
                session.rollback()
                problems = exc.problems
            except IntegrityError:  # PostgreSQL: another save took the same number at the same moment
                session.rollback()
                problems = {"version": "someone saved a version at the same moment; reload this page and make "
                                       "your change again"}
            else:
                problems = {}
        if problems:  # the page again, read outside the write transaction
            with read_session(rt) as reading:
                return _campaign_page(request, rt, reading, user, campaign_id, now, values=values,
                                      errors=problems, status_code=400)
        rt.refresh_campaigns()  # this process follows the new version at once; others at their next refresh
        return redirect(f"/admin/campaigns/{campaign_id}?version={saved.version}", "timing_saved")

    return await run_in_threadpool(save)


def _file_of(rt: Runtime, campaign_id: str):  # type: ignore[no-untyped-def]
    """The campaign file (version 1), from which every saved version is built."""
    return campaign_for(rt.campaigns, campaign_id, 1)


def _migrate_page(request: Request, rt: Runtime, session: Session, user: CurrentUser, campaign_id: str,
                  from_version: int, *, note: str = "", errors: dict[str, str] | None = None,
                  status_code: int = 200) -> HTMLResponse:
    campaign = rt.campaign(campaign_id)
    base = _file_of(rt, campaign_id)
    old = load_version(session, base, from_version) if base is not None and from_version < campaign.version else None
    if old is None:
        return render(request, "admin/not_found.html", {"what": "This version"}, user=user, status_code=404)
    new = load_version(session, base, campaign.version)
    preview = migration_preview(session, old, new)
    return render(request, "admin/campaign_migrate.html", {
        "campaign": campaign, "preview": preview, "note": note, "errors": errors or {},
    }, user=user, status_code=status_code)


@router.get("/campaigns/{campaign_id}/migrate", response_class=HTMLResponse)
def campaign_migrate_preview(request: Request, campaign_id: str, user: MarketingUser, session: ReadSessionDep,
                             version: int = 1) -> HTMLResponse:
    """What moving the people in flight on `version` to the version in force would do, and the
    button that does it."""
    rt = _rt(request)
    if campaign_id not in rt.campaigns:
        return render(request, "admin/not_found.html", {"what": "This campaign"}, user=user, status_code=404)
    rt.refresh_campaigns()
    return _migrate_page(request, rt, session, user, campaign_id, version)


@router.post("/campaigns/{campaign_id}/migrate", response_model=None)
async def campaign_migrate_submit(request: Request, campaign_id: str, user: MarketingUser, now: NowDep) -> Response:
    """Move them (`migrate_in_flight`), or show the preview again with what is wrong."""
    rt = _rt(request)
    if campaign_id not in rt.campaigns:
        return render(request, "admin/not_found.html", {"what": "This campaign"}, user=user, status_code=404)
    form = await request.form()
    from_text, to_text = str(form.get("from_version", "")), str(form.get("to_version", ""))
    note = str(form.get("note", ""))[:2000]
    if not from_text.isdigit() or not to_text.isdigit():
        return render(request, "admin/not_found.html", {"what": "This version"}, user=user, status_code=404)
    from_version, to_version = int(from_text), int(to_text)

    def move() -> Response:
        rt.refresh_campaigns()
        problems: dict[str, str] = {}
        if not note.strip():
            problems["note"] = "say why they move (the note is kept in the audit log)"
        if to_version != rt.campaign(campaign_id).version:
            problems["to"] = (f"version {rt.campaign(campaign_id).version} was saved since you opened this page; "
                              "look at the new preview before moving anyone")
        base = _file_of(rt, campaign_id)
        if not problems and base is not None:
            with rt.sessions() as session:
                try:
                    migrate_in_flight(session, base, from_version, to_version, user.actor, now, note=note)
                    session.commit()
                except MigrationInvalid as exc:
                    session.rollback()
                    problems = exc.problems
        if problems:
            with read_session(rt) as reading:
                return _migrate_page(request, rt, reading, user, campaign_id, from_version, note=note,
                                     errors=problems, status_code=400)
        return redirect(f"/admin/campaigns/{campaign_id}", "people_moved")

    return await run_in_threadpool(move)


@router.get("/campaigns/{campaign_id}/steps/{step_id}/preview")
def campaign_step_html(request: Request, campaign_id: str, step_id: str, user: AnyUser) -> Response:
    """One simulated email's HTML for a sandboxed iframe."""
    rt = _rt(request)
    if campaign_id not in rt.campaigns:
        return Response("Not found", status_code=404, media_type="text/plain")
    campaign = rt.campaign(campaign_id)
    index = next((i for i, step in enumerate(campaign.steps) if step.id == step_id), None)
    if index is None or campaign.steps[index].channel != "email":
        return Response("Not found", status_code=404, media_type="text/plain")
    step = campaign.steps[index]
    # The same sample contact and preview-only link key as simulate_campaign.
    context = message_context(rt.settings, LinkTokens(PREVIEW_KEY), first_name=SAMPLE_FIRST_NAME, contact_id=1,
                              message_id=index + 1, campaign_name=campaign.name, step_id=step.id,
                              channel=step.channel, sms_frequency=sms_frequency(campaign))
    rt.refresh_templates()
    try:
        email = rt.renderer.render_email(step.template, context)
    except RenderError as exc:
        return Response(str(exc), status_code=500, media_type="text/plain")
    return sandboxed_html(email.html)
