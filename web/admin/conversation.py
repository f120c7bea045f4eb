"""One contact's text thread (`/admin/replies/contacts/{id}`): their texts and ours in order, notes,
state, who has it; the reply form (with the rule that applies now: conversational, quiet hours, or
why no text may go); on a possible crisis, the clinic's procedure, tap-to-call links and 988.

The rules are in `contacts.conversations`, `contacts.reply_rules` and `dispatch.staff_reply`; this
module parses the forms and presents the result. New texts appear without a reload: `static/inbox.js`
polls `.../updates` and replaces the thread when its fingerprint changed."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.conversations import (
    STATE_LABELS,
    ConversationError,
    add_note,
    assign,
    inbox_users,
    set_state,
)
from patient_drip.contacts.inbox import crisis_procedure, thread_entries, thread_of
from patient_drip.contacts.read_audit import ReadKind
from patient_drip.contacts.reply_rules import MAX_SEGMENTS, check_reply
from patient_drip.dispatch.staff_reply import ReplyRefused, send_staff_reply
from patient_drip.models import Contact, ConversationState, InboundMessage
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import InboxUser
from patient_drip.web.admin.common import NOTICES, clinic_zone, redirect, render
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, read_session, record_read, templates

router = APIRouter(prefix="/admin", include_in_schema=False)
RESUME = "resume"

NOTICES.update({
    "reply_sent": "Text sent. It shows on the thread; its delivery status follows.",
    "reply_again": "That text was already sent (the form was sent twice); it went once.",
    "note_saved": "Note kept on the thread and the contact's timeline.",
    "thread_open": "Thread open.",
    "thread_waiting": "Thread marked waiting on patient.",
    "thread_done": "Thread done.",
    "thread_done_resumed": "Thread done. The crisis is resolved and the sequences it paused go on.",
    "thread_assigned": "Thread assigned.",
})


def _url(contact_id: int) -> str:
    return f"/admin/replies/contacts/{contact_id}"


def _entries_html(request: Request, session: Session, contact: Contact) -> str:
    rt: Runtime = request.app.state.rt
    return templates.get_template("admin/_thread_entries.html").render(
        {"entries": thread_entries(session, contact.id), "zone": clinic_zone(rt), "contact": contact})


def _fingerprint(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()[:24]


def _page(request: Request, user: CurrentUser, session: Session, contact: Contact, now: Any, *, error: str = "",
          draft: str = "", status_code: int = 200) -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    thread = thread_of(session, contact.id)
    check = check_reply(session, contact, rt.suppression_key, now,
                        window=timedelta(hours=rt.settings.conversation_hours))
    crisis = list(session.scalars(select(InboundMessage).where(
        InboundMessage.contact_id == contact.id, InboundMessage.crisis.is_(True), InboundMessage.handled_at.is_(None))))
    html = _entries_html(request, session, contact)
    context = {
        "contact": contact, "thread": thread, "state": thread.state if thread else ConversationState.OPEN,
        "state_labels": {str(k): v for k, v in STATE_LABELS.items()}, "entries_html": html,
        "fingerprint": _fingerprint(html), "check": check, "crisis": crisis, "users": inbox_users(session),
        "procedure": crisis_procedure(rt.settings.policy_dir), "clinic_phone": rt.settings.clinic_phone,
        "key": secrets.token_urlsafe(24), "error": error, "draft": draft, "max_segments": MAX_SEGMENTS,
        "window_hours": rt.settings.conversation_hours,
    }
    return render(request, "admin/conversation.html", context, user=user, status_code=status_code)


def _contact(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    return None if contact is None or contact.erased_at is not None else contact


def _missing(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "admin/not_found.html", {"what": "This contact"}, user=user, status_code=404)


@router.get("/replies/contacts/{contact_id}", response_class=HTMLResponse)
def thread_page(request: Request, contact_id: int, user: InboxUser, session: ReadSessionDep,
                now: NowDep) -> HTMLResponse:
    contact = _contact(session, contact_id)
    if contact is None:
        return _missing(request, user)
    record_read(request, user, ReadKind.CONVERSATION_VIEWED, now, count=1, contact_id=contact.id)
    return _page(request, user, session, contact, now)


@router.get("/replies/contacts/{contact_id}/updates")
def thread_updates(request: Request, contact_id: int, user: InboxUser, session: ReadSessionDep, now: NowDep,
                   v: str = "") -> JSONResponse:
    """For `static/inbox.js`: the thread again (HTML) when it changed since fingerprint `v`."""
    contact = _contact(session, contact_id)
    if contact is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    html = _entries_html(request, session, contact)
    fingerprint = _fingerprint(html)
    if fingerprint == v[:64]:
        return JSONResponse({"changed": False}, headers={"Cache-Control": "no-store"})
    record_read(request, user, ReadKind.CONVERSATION_VIEWED, now, count=1, contact_id=contact.id,
                what="live update")
    thread = thread_of(session, contact.id)
    state = STATE_LABELS[ConversationState(thread.state)] if thread else STATE_LABELS[ConversationState.OPEN]
    return JSONResponse({"changed": True, "v": fingerprint, "html": html, "state": state},
                        headers={"Cache-Control": "no-store"})


@router.post("/replies/contacts/{contact_id}/reply", response_model=None)
def reply(request: Request, contact_id: int, user: InboxUser, now: NowDep,
          body: Annotated[str, Form(max_length=2000)] = "",
          key: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Text the person (once per form: the hidden `key`); refused with the reason, the draft kept.

    No session is held while sending: the send opens its own short transactions around the
    provider call, and the page (when there is one to show) is read afterwards."""
    rt: Runtime = request.app.state.rt
    try:
        sent = send_staff_reply(rt, contact_id, body, key, user.actor, now)
    except ReplyRefused as exc:
        error, draft, status_code = exc.reason, body, 422
    else:
        if sent.error is None:
            return redirect(_url(contact_id), "reply_again" if sent.duplicate else "reply_sent")
        error, draft, status_code = sent.error, ("" if sent.status == "unknown" else body), 502
    with read_session(rt) as session:
        contact = _contact(session, contact_id)
        if contact is None:
            return _missing(request, user)
        return _page(request, user, session, contact, now, error=error, draft=draft, status_code=status_code)


@router.post("/replies/contacts/{contact_id}/note", response_model=None)
def note(request: Request, contact_id: int, user: InboxUser, session: SessionDep, now: NowDep,
         text: Annotated[str, Form(max_length=2000)] = "") -> Response:
    contact = _contact(session, contact_id)
    if contact is None:
        return _missing(request, user)
    try:
        add_note(session, contact.id, text, user.actor, now)
    except ConversationError as exc:
        session.rollback()
        return _page(request, user, session, contact, now, error=str(exc), status_code=422)
    session.commit()
    return redirect(_url(contact.id), "note_saved")


@router.post("/replies/contacts/{contact_id}/state", response_model=None)
def state(request: Request, contact_id: int, user: InboxUser, session: SessionDep, now: NowDep,
          to: Annotated[str, Form(max_length=20)] = "", sequence: Annotated[str, Form(max_length=20)] = "",
          text: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Open / waiting on patient / done (with an optional note); "done" on a crisis thread resolves
    the crisis, resuming its paused sequences only with `sequence=resume`."""
    contact = _contact(session, contact_id)
    if contact is None:
        return _missing(request, user)
    rt: Runtime = request.app.state.rt
    try:
        resumed = set_state(session, rt.campaigns, contact.id, to, user.actor, now, resume=sequence == RESUME,
                            note=text)
    except ConversationError as exc:
        session.rollback()
        return _page(request, user, session, contact, now, error=str(exc), status_code=422)
    session.commit()
    if resumed is None:
        return redirect(_url(contact.id), "crisis_still_open")
    done = f"thread_{to}" + ("_resumed" if to == ConversationState.DONE and resumed else "")
    return redirect(_url(contact.id), done)


@router.post("/replies/contacts/{contact_id}/assign", response_model=None)
def assign_thread(request: Request, contact_id: int, user: InboxUser, session: SessionDep, now: NowDep,
                  to: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Give the thread to a user (`to`: a user id, "me", or "" for nobody)."""
    contact = _contact(session, contact_id)
    if contact is None:
        return _missing(request, user)
    # A user id is small: a longer number is no user (and must not overflow the database's integer).
    target: int | None = user.id if to == "me" else (int(to) if to.isascii() and to.isdigit() and len(to) <= 9
                                                      else None)
    if to not in ("", "me") and target is None:
        return _page(request, user, session, contact, now, error="Choose someone from the list.", status_code=422)
    try:
        assign(session, contact.id, target, user.actor, now)
    except ConversationError as exc:
        session.rollback()
        return _page(request, user, session, contact, now, error=str(exc), status_code=422)
    session.commit()
    return redirect(_url(contact.id), "thread_assigned")
