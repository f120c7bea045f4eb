"""The claims library in the staff UI: `/admin/claims` (list, add with a source, edit wording =
new version, retire) and `/admin/claims/{key}` (every version, who approved it and when).

Everyone who works on templates may read the library (marketing writes with its wording); only a
clinician (`ApprovingClinician`) changes it. Each change is one call into `content.claim_library`,
which refuses what the rules refuse with a message that says what to change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from patient_drip.content.claim_library import ClaimError, add_claim, claim_versions, current_claims, edit_claim, retire_claim
from patient_drip.content.languages import DEFAULT_LANGUAGE, LANGUAGE_NAMES
from patient_drip.models import ClaimSource
from patient_drip.web.admin.auth import ApprovingClinician, TemplateViewer
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)

SourceKind = Annotated[str, Form(max_length=20)]
Text = Annotated[str, Form(max_length=2000)]
Source = Annotated[str, Form(max_length=500)]


def _page(request: Request, user: CurrentUser, session: ReadSessionDep | SessionDep, *, error: str = "",
          form: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    claims = current_claims(session)
    return render(request, "admin/claims.html", {
        "claims": claims, "error": error, "form": form or {}, "sources": ClaimSource, "languages": LANGUAGE_NAMES,
        "approved": sum(1 for c in claims if c.status == "approved"),
    }, user=user, status_code=status_code)


def _back(return_to: str) -> str:
    # Only a page of ours (a review page sends the clinician back to it): never an outside address.
    return return_to if return_to.startswith("/admin/") and "//" not in return_to and "\\" not in return_to else "/admin/claims"


@router.get("/claims", response_class=HTMLResponse)
def claims_list(request: Request, user: TemplateViewer, session: ReadSessionDep) -> HTMLResponse:
    return _page(request, user, session)


@router.post("/claims", response_class=HTMLResponse)
def claims_add(request: Request, user: ApprovingClinician, session: SessionDep, now: NowDep, text: Text,
               source_kind: SourceKind = "", source: Source = "", note: Source = "",
               return_to: Annotated[str, Form(max_length=300)] = "",
               language: Annotated[str, Form(max_length=5)] = DEFAULT_LANGUAGE) -> Response:
    """Add a claim approved by the signed-in clinician, worded in `language`; back to `return_to`
    (a review page, which sends its template's language) or the list."""
    try:
        add_claim(session, text, source_kind, source, now, user.actor, clinician=user.clinician, note=note,
                  language=language)
    except ClaimError as exc:
        session.rollback()
        return _page(request, user, session, error=_sentence(str(exc)), status_code=422,
                     form={"text": text, "source_kind": source_kind, "source": source, "note": note,
                           "language": language})
    session.commit()
    return redirect(_back(return_to), "claim_added")


@router.get("/claims/{key}", response_class=HTMLResponse)
def claim_history(request: Request, key: str, user: TemplateViewer, session: ReadSessionDep,
                  error: str = "") -> HTMLResponse:
    versions = claim_versions(session, key)
    if not versions:
        return render(request, "admin/not_found.html", {"what": "This claim"}, user=user, status_code=404)
    return render(request, "admin/claim.html", {"key": key, "versions": versions, "current": versions[0],
                                                "sources": ClaimSource, "error": error}, user=user)


def _claim_error(request: Request, user: CurrentUser, session: SessionDep, key: str, message: str) -> HTMLResponse:
    session.rollback()
    versions = claim_versions(session, key)
    if not versions:
        return render(request, "admin/not_found.html", {"what": "This claim"}, user=user, status_code=404)
    return render(request, "admin/claim.html", {"key": key, "versions": versions, "current": versions[0],
                                                "sources": ClaimSource, "error": _sentence(message)},
                  user=user, status_code=422)


@router.post("/claims/{key}/edit", response_class=HTMLResponse)
def claim_edit(request: Request, key: str, user: ApprovingClinician, session: SessionDep, now: NowDep, text: Text,
               source_kind: SourceKind = "", source: Source = "", note: Source = "") -> Response:
    """New wording or source: a new version approved by the signed-in clinician."""
    try:
        edit_claim(session, key, text, source_kind, source, now, user.actor, clinician=user.clinician, note=note)
    except ClaimError as exc:
        return _claim_error(request, user, session, key, str(exc))
    session.commit()
    return redirect(f"/admin/claims/{key}", "claim_edited")


@router.post("/claims/{key}/retire", response_class=HTMLResponse)
def claim_retire(request: Request, key: str, user: ApprovingClinician, session: SessionDep, now: NowDep,
                 reason: Source = "") -> Response:
    try:
        retire_claim(session, key, now, user.actor, reason, clinician=user.clinician)
    except ClaimError as exc:
        return _claim_error(request, user, session, key, str(exc))
    session.commit()
    return redirect(f"/admin/claims/{key}", "claim_retired")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
