"""The inbox: patients' text threads, one per contact, possible crises pinned first with the clinic's
crisis procedure; texts from numbers that are no contact below. Staff, admins and clinicians work it.

Each thread opens on its own page (`admin.conversation`). New texts appear without a reload:
`static/inbox.js` polls `/admin/replies/updates`, which answers with the list again only when it
changed (a fingerprint of what it shows). Handling one text from an unknown number (and, kept for
older links, any single text) goes through `contacts.enrollment.mark_reply_handled`; a crisis text
then also resolves the crisis: staff choose to resume the sequences it paused or keep them paused."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session

from patient_drip.contacts.conversations import add_note
from patient_drip.contacts.enrollment import mark_reply_handled
from patient_drip.contacts.inbox import SHOWS, crisis_procedure, list_threads, tab_counts, unknown_number_texts
from patient_drip.contacts.read_audit import ReadKind
from patient_drip.models import InboundMessage
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import InboxUser
from patient_drip.web.admin.common import clinic_zone, redirect, render
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, record_read, templates

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE = 50
RESUME = "resume"  # the "resolve and resume the sequence" button; anything else keeps them paused


def tel(number: str | None) -> str:
    """A `tel:` URI for a phone number as written ("+1 217 555 0100" -> "tel:+12175550100")."""
    digits = "".join(ch for ch in (number or "") if ch.isdigit() or ch == "+")
    return f"tel:{digits}" if digits else ""


templates.env.filters["tel"] = tel


def _show(value: str) -> str:
    return value if value in SHOWS else ("done" if value == "handled" else "open")


def _list_context(request: Request, user: CurrentUser, session: Session, show: str) -> dict[str, Any]:
    rt: Runtime = request.app.state.rt
    threads = list_threads(session, show, user.id, PAGE)
    unknown = unknown_number_texts(session, PAGE) if show == "open" else []
    return {"threads": threads, "unknown": unknown, "show": show, "counts": tab_counts(session, user.id),
            "procedure": crisis_procedure(rt.settings.policy_dir), "clinic_phone": rt.settings.clinic_phone,
            "zone": clinic_zone(rt), "csrf": user.csrf}


def _fingerprint(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()[:24]


@router.get("/replies", response_class=HTMLResponse)
def replies(request: Request, user: InboxUser, session: ReadSessionDep, now: NowDep, show: str = "open") -> HTMLResponse:
    """The inbox tab `show`: open (crises first, then who has waited longest), waiting on patient,
    done, or mine (given to the signed-in user)."""
    show = _show(show)
    context = _list_context(request, user, session, show)
    fragment = templates.get_template("admin/_threads.html").render(context)
    # Patients' own words: one audit row for the page, with how many threads it shows.
    record_read(request, user, ReadKind.REPLIES_VIEWED, now, count=len(context["threads"]) + len(context["unknown"]),
                what=f"show={show}")
    return render(request, "admin/replies.html", {**context, "fingerprint": _fingerprint(fragment)}, user=user)


@router.get("/replies/updates")
def replies_updates(request: Request, user: InboxUser, session: ReadSessionDep, now: NowDep, show: str = "open",
                    v: str = "") -> JSONResponse:
    """For `static/inbox.js`: `{"changed": false}` while the tab shows what the page has (fingerprint
    `v`), else the tab's list again as HTML with its new fingerprint (and that read is audited)."""
    show = _show(show)
    context = _list_context(request, user, session, show)
    html = templates.get_template("admin/_threads.html").render(context)
    fingerprint = _fingerprint(html)
    if fingerprint == v[:64]:
        return JSONResponse({"changed": False}, headers={"Cache-Control": "no-store"})
    record_read(request, user, ReadKind.REPLIES_VIEWED, now, count=len(context["threads"]) + len(context["unknown"]),
                what=f"show={show} (live update)")
    return JSONResponse({"changed": True, "v": fingerprint, "html": html, "crisis": context["counts"]["crisis"]},
                        headers={"Cache-Control": "no-store"})


@router.post("/replies/{reply_id}/handled")
def reply_handled(request: Request, reply_id: int, user: InboxUser, session: SessionDep, now: NowDep,
                  note: Annotated[str, Form(max_length=400)] = "",
                  sequence: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Mark one text handled (once). For a crisis text of a known contact this also resolves the
    crisis: `sequence=resume` resumes the sequences it paused, anything else keeps them paused."""
    reply = session.get(InboundMessage, reply_id)
    if reply is None:
        return render(request, "admin/not_found.html", {"what": "This reply"}, user=user, status_code=404)
    rt: Runtime = request.app.state.rt
    resumed = mark_reply_handled(session, rt.campaigns, reply, sequence == RESUME, note, now, user.actor)
    if note.strip() and reply.contact_id is not None:
        add_note(session, reply.contact_id, note, user.actor, now)  # kept on the thread, not only in the audit
    session.commit()
    back = f"/admin/replies/contacts/{reply.contact_id}" if reply.contact_id is not None else "/admin/replies"
    if resumed is None:  # asked to resume, but another crisis reply of this person is still open
        return redirect(back, "crisis_still_open")
    return redirect(back, "resumed" if resumed else "handled")
