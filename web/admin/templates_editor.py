"""The template editor: edit with a live preview, save drafts, approve (clinician), diff, roll back.

Marketing (and admins) edit; a saved change is a draft that becomes live only when a clinician or
an admin who is not its author approves it (template_store enforces that). Every version is kept
with its author, approver and times. The preview renders the submitted source in the Jinja
sandbox with the sample context and reports every problem inline; a draft with problems cannot
be saved or approved.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.web.admin.auth import AnyUser, ApprovingClinician, MarketingUser, TemplateViewer
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.admin.contacts import sandboxed_html
from patient_drip.web.admin.template_checks import Preview, all_sources, is_layout, preview_template, step_for, template_channel
from patient_drip.content.languages import language_of_template
from patient_drip.content.rendering import TEMPLATE_VARIABLES
from patient_drip.models import TemplateStatus, TemplateVersion
from patient_drip.runtime import Runtime
from patient_drip.content.template_store import (
    TemplateStoreError,
    approve,
    published,
    reject,
    rejected_parent,
    rollback_draft,
    save_draft,
    versions,
)
from patient_drip.web.admin.template_variables import insertable_variables
from patient_drip.web.admin.text_diff import DiffPiece, word_diff
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, templates

router = APIRouter(prefix="/admin", include_in_schema=False)
MAX_SOURCE = 100_000


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _known(request: Request, session: Session, name: str) -> bool:
    return name in all_sources(_rt(request), session)


def _missing(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "admin/not_found.html", {"what": "This template"}, user=user, status_code=404)


@dataclass(frozen=True, slots=True)
class TemplateRow:
    name: str
    channel: str
    layout: bool
    live: TemplateVersion | None
    drafts: list[TemplateVersion]
    used_by: list[str]


@router.get("/templates", response_class=HTMLResponse)
def template_list(request: Request, user: TemplateViewer, session: ReadSessionDep) -> HTMLResponse:
    rt = _rt(request)
    names = sorted(all_sources(rt, session))
    rows_by_name: dict[str, list[TemplateVersion]] = {}
    for version in session.scalars(select(TemplateVersion).where(
            TemplateVersion.status.in_([TemplateStatus.PUBLISHED, TemplateStatus.DRAFT]))
            .order_by(TemplateVersion.version.desc())):
        rows_by_name.setdefault(version.name, []).append(version)
    used: dict[str, list[str]] = {}
    for campaign in rt.campaigns.values():
        for step in campaign.message_steps:
            used.setdefault(step.template, []).append(f"{campaign.id} / {step.id}")
    rows = []
    for name in names:
        found = rows_by_name.get(name, [])
        live = next((v for v in found if v.status == TemplateStatus.PUBLISHED), None)
        rows.append(TemplateRow(name, template_channel(name), is_layout(name), live,
                                [v for v in found if v.status == TemplateStatus.DRAFT], used.get(name, [])))
    waiting = [draft for row in rows for draft in row.drafts]
    return render(request, "admin/templates.html", {"rows": rows, "waiting": waiting}, user=user)


def _editor_source(session: Session, request: Request, name: str,
                   start_from: int | None = None) -> tuple[str, TemplateVersion | None]:
    """What the editor opens: version `start_from` when given (e.g. a rejected one, to fix it),
    else the newest draft if there is one, else the live version (or the file)."""
    history = versions(session, name)
    chosen = next((v for v in history if v.version == start_from), None)
    if chosen is not None:
        return chosen.source, chosen
    newest_draft = next((v for v in history if v.status == TemplateStatus.DRAFT), None)
    live = next((v for v in history if v.status == TemplateStatus.PUBLISHED), None)
    if newest_draft is not None and (live is None or newest_draft.version > live.version):
        return newest_draft.source, newest_draft
    if live is not None:
        return live.source, live
    return all_sources(_rt(request), session)[name], None


def _preview_context(request: Request, user: CurrentUser, preview: Preview) -> dict[str, Any]:
    key = request.app.state.admin.previews.put(user.id, preview.html) if preview.html else ""
    return {"preview": preview, "preview_url": f"/admin/previews/{key}" if key else ""}


def _editor(request: Request, user: CurrentUser, session: Session, name: str, source: str, *,
            base: TemplateVersion | None, note: str = "", first_name: str | None = None, error: str = "",
            status_code: int = 200) -> HTMLResponse:
    rt = _rt(request)
    preview = preview_template(rt, session, name, source, first_name=first_name)
    step_id, campaign_name, campaign = step_for(rt.campaigns, preview.rendered_as or name)
    return render(request, "admin/template_edit.html", {
        "name": name, "source": source, "base": base, "note": note, "error": error,
        "rejected_base": base if base is not None and base.status == TemplateStatus.REJECTED else None,
        "live": published(session, name), "drafts": [v for v in versions(session, name)
                                                     if v.status == TemplateStatus.DRAFT],
        "first_name": preview_first_name(first_name), "step_id": step_id, "campaign_name": campaign_name,
        "campaign": campaign, "variables": insertable_variables(TEMPLATE_VARIABLES),
        **_preview_context(request, user, preview),
    }, user=user, status_code=status_code)


def preview_first_name(value: str | None) -> str:
    from patient_drip.content.checks import SAMPLE_LONG_FIRST_NAME

    return SAMPLE_LONG_FIRST_NAME if value is None else value


@router.get("/templates/edit/{name:path}", response_class=HTMLResponse)
def template_edit(request: Request, name: str, user: MarketingUser, session: ReadSessionDep,
                  start_from: Annotated[int | None, Query(alias="from")] = None) -> HTMLResponse:
    if not _known(request, session, name):
        return _missing(request, user)
    source, base = _editor_source(session, request, name, start_from)
    return _editor(request, user, session, name, source, base=base)


@router.post("/templates/edit/{name:path}", response_class=HTMLResponse)
def template_save(request: Request, name: str, user: MarketingUser, session: SessionDep, now: NowDep,
                  source: Annotated[str, Form(max_length=MAX_SOURCE)],
                  note: Annotated[str, Form(max_length=500)] = "", first_name: Annotated[str, Form(max_length=100)] = "",
                  action: Annotated[str, Form()] = "save",
                  based_on: Annotated[int | None, Form()] = None) -> Response:
    """`action=preview` shows the preview without saving (works without JavaScript); `save` saves a draft.
    `based_on`: the version the editor was opened with (recorded, so a draft built on a rejected
    version says so on its review page)."""
    if not _known(request, session, name):
        return _missing(request, user)
    source = source.replace("\r\n", "\n")
    _current, base = _editor_source(session, request, name, based_on)
    if action != "save":
        return _editor(request, user, session, name, source, base=base, note=note, first_name=first_name)
    preview = preview_template(_rt(request), session, name, source)
    if not preview.ok:
        return _editor(request, user, session, name, source, base=base, note=note, first_name=first_name,
                       status_code=422, error="Not saved: fix the problems listed below first.")
    newest = versions(session, name)
    if newest and newest[0].source == source and newest[0].status in (TemplateStatus.DRAFT, TemplateStatus.PUBLISHED):
        return _editor(request, user, session, name, source, base=base, note=note, first_name=first_name,
                       status_code=409, error="Nothing to save: this is the same as version "
                                              f"{newest[0].version} ({newest[0].status}).")
    draft = save_draft(session, name, source, now, user.actor, note=note.strip() or
                       (f"edited from version {base.version}" if base else "edited"),
                       based_on=base.version if base else None)
    session.commit()
    return redirect(f"/admin/templates/review/{name}?v={draft.version}", "draft_saved")


class PreviewIn(BaseModel):
    source: str = Field(max_length=MAX_SOURCE)
    first_name: str | None = Field(None, max_length=100)


@router.post("/templates/preview/{name:path}")
def template_preview(request: Request, name: str, body: PreviewIn, user: MarketingUser,
                     session: SessionDep) -> Response:
    """Live preview for the editor's script (JSON in, JSON out with the preview panel as HTML)."""
    if not _known(request, session, name):
        return JSONResponse({"detail": "no such template"}, status_code=404)
    preview = preview_template(_rt(request), session, name, body.source.replace("\r\n", "\n"),
                               first_name=body.first_name)
    context = _preview_context(request, user, preview)
    fragment = templates.get_template("admin/_preview.html").render(**context, name=name)
    sms = preview.sms
    return JSONResponse({
        "ok": preview.ok, "problems": [{"message": p.message, "line": p.line, "rule": p.rule, "where": p.where}
                                       for p in preview.problems],
        "notes": preview.notes, "channel": preview.channel, "subject": preview.subject, "text": preview.text,
        "html_url": context["preview_url"],
        "sms": {"characters": sms.characters, "encoding": sms.encoding, "segments": sms.segments,
                "units": sms.units} if sms else None,
        "fragment": fragment,
    }, headers={"Cache-Control": "no-store"})


@router.get("/previews/{key}")
def preview_html(request: Request, key: str, user: AnyUser) -> Response:
    html = request.app.state.admin.previews.get(user.id, key)
    if html is None:
        return Response("This preview has expired; edit the template to refresh it.", status_code=404,
                        media_type="text/plain")
    return sandboxed_html(html)


# -- versions, review, approval ---------------------------------------------------------------


def _version(session: Session, name: str, number: int | None) -> TemplateVersion | None:
    if number is None:
        return None
    return session.scalar(select(TemplateVersion).where(TemplateVersion.name == name,
                                                        TemplateVersion.version == number))


@dataclass(frozen=True, slots=True)
class DiffLine:
    kind: str  # "add", "del", "hunk", "ctx", "file"
    text: str


def unified_diff(old: str, new: str, old_label: str, new_label: str) -> list[DiffLine]:
    """Line diff for display (the template escapes it)."""
    lines = []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label, lineterm="", n=3):
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, line))
    return lines


@router.get("/templates/history/{name:path}", response_class=HTMLResponse)
def template_history(request: Request, name: str, user: TemplateViewer, session: ReadSessionDep,
                     a: int | None = None, b: int | None = None) -> HTMLResponse:
    history = versions(session, name)
    if not history and not _known(request, session, name):
        return _missing(request, user)
    diff: list[DiffLine] = []
    old, new = _version(session, name, a), _version(session, name, b)
    if old is not None and new is not None:
        diff = unified_diff(old.source, new.source, f"version {old.version}", f"version {new.version}")
    live = next((v for v in history if v.status == TemplateStatus.PUBLISHED), None)
    return render(request, "admin/template_history.html", {
        "name": name, "history": history, "live": live, "diff": diff, "a": old, "b": new,
        "default_a": live.version if live else (history[-1].version if history else None),
        "default_b": history[0].version if history else None,
    }, user=user)


@router.get("/templates/review/{name:path}", response_class=HTMLResponse)
def template_review(request: Request, name: str, user: TemplateViewer, session: ReadSessionDep,
                    v: int | None = None) -> HTMLResponse:
    """One version: its changes against the live version, its rendered preview and its problems;
    approve/reject for clinicians when it is a draft."""
    return _review_page(request, user, session, name, v)


def _review_page(request: Request, user: CurrentUser, session: Session, name: str, number: int | None,
                 error: str = "", status_code: int = 200) -> HTMLResponse:
    version = _version(session, name, number) if number is not None else (versions(session, name) or [None])[0]
    if version is None:
        return _missing(request, user)
    live = published(session, name)
    diff = unified_diff(live.source, version.source, f"live (version {live.version})", f"version {version.version}") \
        if live is not None and live.id != version.id else []
    preview = preview_template(_rt(request), session, name, version.source)
    return render(request, "admin/template_review.html", {
        "name": name, "version": version, "live": live, "diff": diff, "error": error,
        "language": language_of_template(name),  # a claim added from here is in the template's language
        "words": _rendered_diff(request, session, name, live, version, preview),
        "rejected_parent": rejected_parent(session, version), "claims_panel": True,
        "own": version.author == user.actor, **_preview_context(request, user, preview),
    }, user=user, status_code=status_code)


def _rendered_diff(request: Request, session: Session, name: str, live: TemplateVersion | None,
                   version: TemplateVersion, preview: Preview) -> list[DiffPiece]:
    """The version's rendered text against the live version's, word by word, with the sentences
    that need a clinician flagged (empty when there is nothing rendered to compare)."""
    if preview.claims is None:
        return []
    old = ""
    if live is not None and live.id != version.id:
        before = preview_template(_rt(request), session, name, live.source)
        old = before.claims.text if before.claims is not None else ""
    elif live is not None:
        old = preview.claims.text  # the live version itself: nothing changed
    flags = [(f.sentence.start, f.sentence.end, f.status) for f in preview.claims.findings
             if f.status in ("new", "refused")]
    return word_diff(old, preview.claims.text, flags)


def open_claims(preview: Preview) -> list[str]:
    """The sentences that stop approval: new claims and refused wording (or, if the claims could
    not be checked at all, that fact)."""
    if preview.claims is None:
        return ["the medical claims could not be checked"] if (preview.html or preview.text) else []
    return [f.sentence.text for f in (*preview.claims.new, *preview.claims.refused)]


@router.post("/templates/approve/{name:path}")
def template_approve(request: Request, name: str, user: ApprovingClinician, session: SessionDep, now: NowDep,
                     version: Annotated[int, Form()]) -> Response:
    row = _version(session, name, version)
    if row is None:
        return _missing(request, user)
    preview = preview_template(_rt(request), session, name, row.source)
    if not preview.ok:
        return _review_error(request, user, session, name, version,
                             "This version has problems (listed below) and cannot go live. Reject it instead.")
    try:
        approve(session, row, now, user.actor, clinician=user.clinician, open_claims=open_claims(preview))
    except TemplateStoreError as exc:
        session.rollback()
        return _review_error(request, user, session, name, version, _sentence(str(exc)))
    session.commit()
    rt = _rt(request)
    # Render with it in this process at once (workers pick it up on their next tick).
    rt.refresh_templates()
    return redirect(f"/admin/templates/review/{name}?v={version}", "approved")


@router.post("/templates/reject/{name:path}")
def template_reject(request: Request, name: str, user: ApprovingClinician, session: SessionDep, now: NowDep,
                    version: Annotated[int, Form()], reason: Annotated[str, Form(max_length=500)] = "") -> Response:
    row = _version(session, name, version)
    if row is None:
        return _missing(request, user)
    try:
        reject(session, row, now, user.actor, reason, clinician=user.clinician)
    except TemplateStoreError as exc:
        session.rollback()
        return _review_error(request, user, session, name, version, _sentence(str(exc)), 422)
    session.commit()
    return redirect(f"/admin/templates/review/{name}?v={version}", "rejected")


@router.post("/templates/rollback/{name:path}")
def template_rollback(request: Request, name: str, user: MarketingUser, session: SessionDep, now: NowDep,
                      version: Annotated[int, Form()]) -> Response:
    try:
        draft = rollback_draft(session, name, version, now, user.actor)
    except TemplateStoreError as exc:
        session.rollback()
        return _review_error(request, user, session, name, None, _sentence(str(exc)), 404)
    session.commit()
    return redirect(f"/admin/templates/review/{name}?v={draft.version}", "rolled_back")


def _review_error(request: Request, user: CurrentUser, session: Session, name: str, version: int | None,
                  message: str, status_code: int = 409) -> HTMLResponse:
    return _review_page(request, user, session, name, version, message, status_code)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
