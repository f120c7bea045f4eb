"""Campaigns: the steps on a timeline, exactly what a patient receives when (simulate_campaign), and each
campaign's own funnel of the last 30 days."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select

from patient_drip.web.admin.auth import AnyUser
from patient_drip.web.admin.common import render
from patient_drip.web.admin.contacts import sandboxed_html
from patient_drip.web.admin.funnel import funnel_cache, funnel_context, report_range
from patient_drip.web.admin.funnel_view import funnel_for
from patient_drip.web.deps import NowDep, ReadSessionDep
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
    rt.refresh_templates()  # show the versions that are live now
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
    campaign = rt.campaign(campaign_id)
    messages, error = _simulate(rt, campaign_id)
    total_days = max([int(step.delay.total_seconds()) // 86400 for step in campaign.steps] + [0])
    sms = {m.step: sms_info(m.text) for m in messages if m.channel == "sms"}
    # Its own numbers: the funnel of the last 30 days for this campaign alone.
    report, age = funnel_for(rt, funnel_cache(request), session, report_range(request, now))
    return render(request, "admin/campaign.html", {
        **funnel_context(report, age, campaign_id),
        "campaign": campaign, "messages": messages, "error": error, "sms": sms, "total_days": total_days,
        "sample_name": SAMPLE_FIRST_NAME, "steps_by_id": {s.id: s for s in campaign.steps},
    }, user=user)


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
