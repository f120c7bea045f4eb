"""Contacts for front-desk staff: search, one person's timeline and actions, enroll, edit, export."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import clinic_zone, redirect, render
from patient_drip.web.admin.date_range import parse_range
from patient_drip.web.admin.contact_actions import (
    ActionError,
    create_contact,
    enroll_contact,
    timeline,
    unsubscribe_contact,
)
from patient_drip.web.admin.contact_actions import booked as mark_contact_booked
from patient_drip.web.admin.contact_queries import (
    STATUS_FILTERS,
    enrollments_by_contact,
    find_contacts,
)
from patient_drip.contacts.fields import FieldError
from patient_drip.contacts.changes import ContactNotFound, lookup_contact
from patient_drip.contacts.consent import ConsentGrant, UnknownWording, consent_wording, load_wording, resubscribe
from patient_drip.contacts.contact_state import contact_actions
from patient_drip.contacts.edit import ContactEditErrors, edit_contact, parse_edit
from patient_drip.content.languages import LANGUAGE_NAMES
from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.contacts.enrollment import AlreadyEnrolled, EnrollmentError, set_paused, usable_channels
from patient_drip.contacts.read_audit import ReadKind, audit_read
from patient_drip.models import Channel, ConsentMethod, Contact, Enrollment, EnrollmentStatus
from patient_drip.runtime import Runtime
from patient_drip.content.windows import local_label
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, client_ip, get_now, record_read

router = APIRouter(prefix="/admin", include_in_schema=False)

EXPORT_COLUMNS = ("id", "first_name", "last_name", "email", "phone", "timezone", "source", "email_consent",
                  "sms_consent", "email_blocked", "sms_blocked", "created_at")
SANDBOX_CSP = ("sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
               "font-src https: data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _contact_or_404(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    return contact if contact is not None and contact.erased_at is None else None


def _not_found(request: Request, user: CurrentUser, what: str) -> HTMLResponse:
    return render(request, "admin/not_found.html", {"what": what}, user=user, status_code=404)


@router.get("/contacts", response_class=HTMLResponse)
def contact_list(request: Request, user: StaffUser, session: ReadSessionDep, now: NowDep,
                 q: Annotated[str, Query(max_length=200)] = "", status: Annotated[str, Query(max_length=20)] = "",
                 campaign: Annotated[str, Query(max_length=100)] = "", step: Annotated[str, Query(max_length=100)] = "",
                 added_from: Annotated[str, Query(alias="from", max_length=20)] = "",
                 added_to: Annotated[str, Query(alias="to", max_length=20)] = "",
                 before: int | None = None, after: int | None = None) -> HTMLResponse:
    rt = _rt(request)
    zone = clinic_zone(rt)
    dates = parse_range(added_from, added_to, zone, today=now.astimezone(zone).date())
    if step and not campaign:  # a step names its campaign (the step list groups steps by campaign)
        campaign = next((cid for cid, c in rt.campaigns.items() if any(s.id == step for s in c.message_steps)), "")
    chosen = rt.campaigns.get(campaign)
    step_ids = [s.id for s in chosen.steps] if chosen else []
    # "Now at step X": the enrollment's current step is X (a message it waits to send, or a branch or
    # wait of the journey); a journey has no "step before" to speak of.
    step_index = chosen.step_index(step) if chosen and step in step_ids else None
    page = find_contacts(session, query=q, status=status, before=before, after=after,
                         campaign=campaign if chosen else "", step_index=step_index,
                         added_from=dates.start, added_until=dates.end)
    enrollments = enrollments_by_contact(session, [c.id for c in page.contacts])
    filters = {"q": q, "status": status if status in STATUS_FILTERS else "", "campaign": campaign if chosen else "",
               "step": step if step_index is not None else "", **dates.query()}
    # One audit row for the page (with its count), not one per contact listed.
    record_read(request, user, ReadKind.CONTACTS_LISTED, now, count=len(page.contacts),
                what=" ".join(f"{k}={v}" for k, v in {**filters, "before": before, "after": after}.items()
                              if v not in (None, "")))
    return render(request, "admin/contacts.html", {
        "page": page, "q": q, "status": filters["status"], "statuses": STATUS_FILTERS, "filters": filters,
        "enrollments": enrollments, "campaigns": rt.campaigns, "date_error": dates.error,
        "filtered": any(v for k, v in filters.items()),
    }, user=user)


@router.get("/contacts/export.csv")
def export_contacts(request: Request, user: StaffUser, now: NowDep) -> Response:
    """Every (non-erased) contact as CSV, streamed in id order in chunks; the export is audited."""
    rt = _rt(request)
    with rt.sessions() as session, session.begin():
        # Audited before the first byte leaves, with how many rows the export holds now.
        count = session.scalar(select(func.count()).select_from(Contact).where(Contact.erased_at.is_(None))) or 0
        audit_read(session, user.actor, ReadKind.CONTACTS_EXPORTED, now, count=count, what="contacts.csv")

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv_writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        last = 0
        while True:
            with rt.sessions() as session:
                chunk = list(session.scalars(select(Contact).where(Contact.id > last, Contact.erased_at.is_(None))
                                             .order_by(Contact.id).limit(2000)))
            if not chunk:
                break
            for contact in chunk:
                writer.writerow([contact.id, contact.first_name, contact.last_name, contact.email or "",
                                 contact.phone or "", contact.timezone, contact.source,
                                 "yes" if contact.email_consent else "no", "yes" if contact.sms_consent else "no",
                                 contact.email_blocked or "", contact.sms_blocked or "",
                                 contact.created_at.isoformat()])
            last = chunk[-1].id
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="contacts-{now:%Y%m%d}.csv"', "Cache-Control": "no-store"})


# -- enroll one person --------------------------------------------------------------------------


def _enroll_form(request: Request, user: CurrentUser, values: dict[str, Any], errors: dict[str, str],
                 status_code: int = 200, existing: Contact | None = None) -> HTMLResponse:
    rt = _rt(request)
    return render(request, "admin/enroll.html", {
        "values": values, "errors": errors, "campaigns": rt.campaigns, "wording": consent_wording(rt.settings.policy_dir),
        "clinic_timezone": rt.settings.clinic_timezone, "existing": existing,
    }, user=user, status_code=status_code)


@router.get("/contacts/new", response_class=HTMLResponse)
def enroll_form(request: Request, user: StaffUser) -> HTMLResponse:
    campaigns = list(_rt(request).campaigns)
    return _enroll_form(request, user, {"campaign": campaigns[0] if campaigns else ""}, {})


@router.post("/contacts/new", response_class=HTMLResponse)
def enroll_submit(request: Request, user: StaffUser, now: NowDep,
                  first_name: Annotated[str, Form(max_length=400)] = "",
                  last_name: Annotated[str, Form(max_length=400)] = "",
                  email: Annotated[str, Form(max_length=400)] = "", phone: Annotated[str, Form(max_length=400)] = "",
                  timezone: Annotated[str, Form(max_length=400)] = "",
                  preferred_channel: Annotated[str, Form(max_length=20)] = "",
                  campaign: Annotated[str, Form(max_length=100)] = "",
                  consent_email: Annotated[str, Form(max_length=10)] = "",
                  consent_sms: Annotated[str, Form(max_length=10)] = "") -> Response:
    rt = _rt(request)
    values = {"first_name": first_name, "last_name": last_name, "email": email, "phone": phone,
              "timezone": timezone, "preferred_channel": preferred_channel, "campaign": campaign}
    consent = [channel for channel, given in (("email", consent_email), ("sms", consent_sms)) if given]
    values.update({f"consent_{c}": "yes" for c in consent})
    campaign_id = campaign or None
    errors: dict[str, str] = {}
    try:  # every field's problem at once, by the same rule as the edit page
        parse_edit(values, zone_required=False)
    except ContactEditErrors as exc:
        errors.update(exc.errors)
    if campaign_id and not consent:
        errors["consent"] = "Tick what the person agreed to receive (email, text messages or both)."
    if errors:
        return _enroll_form(request, user, values, errors, 400)
    with rt.sessions() as session:
        try:
            result = create_contact(session, rt, values, consent, campaign_id, ConsentMethod.STAFF, now, user.actor,
                                    source="staff", ip=client_ip(request),
                                    user_agent=request.headers.get("user-agent"))
            session.commit()
        except FieldError as exc:
            session.rollback()
            return _enroll_form(request, user, values, {exc.field: _sentence(exc.message)}, 400)
        except ActionError as exc:
            session.rollback()
            return _enroll_form(request, user, values, {exc.field or "form": _sentence(exc.message)}, 400)
        except AlreadyEnrolled as exc:
            session.rollback()
            try:
                existing = lookup_contact(session, email=email or None, phone=phone or None)
            except (FieldError, ContactNotFound):
                existing = None
            session.rollback()
            return _enroll_form(request, user, values, {"form": str(exc)}, 409, existing=existing)
        except EnrollmentError as exc:
            session.rollback()
            return _enroll_form(request, user, values, {"form": str(exc)}, 400)
    done = "enrolled" if result.created else "enrolled_existing"
    return redirect(f"/admin/contacts/{result.contact.id}", done)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# -- one contact --------------------------------------------------------------------------------


@router.get("/contacts/{contact_id}", response_class=HTMLResponse)
def contact_page(request: Request, contact_id: int, user: StaffUser, session: ReadSessionDep,
                 now: NowDep) -> HTMLResponse:
    if _contact_or_404(session, contact_id) is not None:
        record_read(request, user, ReadKind.CONTACT_VIEWED, now, count=1, contact_id=contact_id)
    return _contact_page(request, user, session, contact_id)


def _their_time(request: Request, contact: Contact) -> dict[str, Any]:
    """The patient's own clock, for staff: their local time now, and a formatter for any moment in it."""
    now = get_now(request)
    return {"their_now": local_label(now, contact.timezone),
            "their_time": lambda moment: local_label(moment, contact.timezone) if moment else ""}


def _contact_page(request: Request, user: CurrentUser, session: Session, contact_id: int, error: str = "",
                  status_code: int = 200) -> HTMLResponse:
    rt = _rt(request)
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id)
                                       .order_by(Enrollment.id)))
    enrolled_in = {e.campaign_id for e in enrollments}
    available = {cid: c for cid, c in rt.campaigns.items() if cid not in enrolled_in}
    return render(request, "admin/contact.html", {
        "contact": contact, "enrollments": enrollments, "campaigns": rt.campaigns,
        "available": available, "timeline": timeline(session, contact.id, campaign_names={cid: c.name for cid, c in rt.campaigns.items()}),
        # The wording in their language: staff read them the text the ledger will record.
        "wording": consent_wording(rt.settings.policy_dir, contact.language), "error": error[:300],
        "language_names": LANGUAGE_NAMES,
        "active": any(e.status in (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED) for e in enrollments),
        "actions": contact_actions(session, contact, enrollments),
        "can_reach": {cid: bool(usable_channels(contact, c)) for cid, c in rt.campaigns.items()},
        **_their_time(request, contact),
    }, user=user, status_code=status_code)


def _contact_error(request: Request, user: CurrentUser, session: Session, contact_id: int, message: str,
                   status_code: int = 400) -> HTMLResponse:
    return _contact_page(request, user, session, contact_id, message, status_code)


@router.post("/contacts/{contact_id}/unsubscribe")
def contact_unsubscribe(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                        channel: Annotated[str, Form()] = "all") -> Response:
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    try:
        changed = unsubscribe_contact(session, _rt(request), contact, channel, ConsentMethod.STAFF, now, user.actor)
    except ActionError as exc:
        session.rollback()
        return _contact_error(request, user, session, contact_id, exc.message)
    session.commit()
    return redirect(f"/admin/contacts/{contact_id}", "unsubscribed" if changed else "already_unsubscribed")


@router.post("/contacts/{contact_id}/resubscribe")
def contact_resubscribe(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                        channel: Annotated[str, Form(max_length=10)] = "",
                        wording_version: Annotated[str, Form(max_length=40)] = "",
                        agreed: Annotated[str, Form(max_length=10)] = "") -> Response:
    """Staff record that the person agreed again, to the wording version the form showed them."""
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    if channel not in (Channel.EMAIL, Channel.SMS):
        return _contact_error(request, user, session, contact_id, "Choose emails or text messages.")
    if not agreed:
        return _contact_error(request, user, session, contact_id,
                              "Tick the box to confirm the person agreed to the wording shown.")
    grant = ConsentGrant(Channel(channel), ConsentMethod.STAFF, wording_version=wording_version or None,
                         ip_address=client_ip(request), user_agent=request.headers.get("user-agent"),
                         note="resubscribed by staff")
    try:
        resubscribe(session, load_wording(_rt(request).settings.policy_dir), contact, grant, now, user.actor)
    except (FieldError, UnknownWording) as exc:
        session.rollback()
        return _contact_error(request, user, session, contact_id, _sentence(exc.message))
    session.commit()
    return redirect(f"/admin/contacts/{contact_id}", f"resubscribed_{channel}")


@router.post("/contacts/{contact_id}/booked")
def contact_booked(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep) -> Response:
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id)))
    if contact_actions(session, contact, enrollments).booked:  # a second click, or a stale page
        return redirect(f"/admin/contacts/{contact_id}", "already_booked")
    mark_contact_booked(session, _rt(request), contact, now, user.actor, source="staff")
    session.commit()
    return redirect(f"/admin/contacts/{contact_id}", "booked")


@router.post("/contacts/{contact_id}/pause")
def contact_pause(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                  enrollment_id: Annotated[int, Form()], action: Annotated[str, Form()] = "pause") -> Response:
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None or enrollment.contact_id != contact_id:
        return _not_found(request, user, "This enrollment")
    if action not in ("pause", "resume"):
        return _contact_error(request, user, session, contact_id, "Choose pause or resume.")
    set_paused(session, _rt(request).campaigns, enrollment, action == "pause", now, user.actor)
    session.commit()
    return redirect(f"/admin/contacts/{contact_id}", "paused" if action == "pause" else "resumed")


@router.post("/contacts/{contact_id}/enroll")
def contact_enroll(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                   campaign: Annotated[str, Form(max_length=100)] = "",
                   consent_email: Annotated[str, Form(max_length=10)] = "",
                   consent_sms: Annotated[str, Form(max_length=10)] = "") -> Response:
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    consent = [channel for channel, given in (("email", consent_email), ("sms", consent_sms)) if given]
    try:
        enroll_contact(session, _rt(request), contact, campaign, consent, ConsentMethod.STAFF, now, user.actor,
                       source="staff", ip=client_ip(request), user_agent=request.headers.get("user-agent"))
    except ActionError as exc:
        session.rollback()
        return _contact_error(request, user, session, contact_id, _sentence(exc.message))
    except EnrollmentError as exc:
        session.rollback()
        return _contact_error(request, user, session, contact_id, str(exc), 409)
    session.commit()
    return redirect(f"/admin/contacts/{contact_id}", "enrolled")


# -- edit one contact ---------------------------------------------------------------------------

EDIT_LABELS = {"first_name": "First name", "last_name": "Last name", "email": "Email", "phone": "Mobile number",
               "timezone": "Time zone", "language": "Language", "interest": "Interest"}
INTEREST_CHOICES = [("", "Not said"), ("depression", "Depression"), ("bipolar", "Bipolar disorder"),
                    ("unsure", "Not sure")]


def _edit_form(request: Request, user: CurrentUser, contact: Contact, values: dict[str, Any],
               errors: dict[str, str], status_code: int = 200) -> HTMLResponse:
    return render(request, "admin/contact_edit.html", {"contact": contact, "values": values, "errors": errors,
                                                       "labels": EDIT_LABELS, "languages": LANGUAGE_NAMES,
                                                       "interests": INTEREST_CHOICES},
                  user=user, status_code=status_code)


@router.get("/contacts/{contact_id}/edit", response_class=HTMLResponse)
def contact_edit_form(request: Request, contact_id: int, user: StaffUser, session: ReadSessionDep,
                      now: NowDep) -> HTMLResponse:
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    record_read(request, user, ReadKind.CONTACT_VIEWED, now, count=1, contact_id=contact_id)
    values = {name: getattr(contact, name) or "" for name in EDIT_LABELS}
    return _edit_form(request, user, contact, values, {})


@router.post("/contacts/{contact_id}/edit", response_class=HTMLResponse)
def contact_edit_submit(request: Request, contact_id: int, user: StaffUser, session: SessionDep, now: NowDep,
                        first_name: Annotated[str, Form(max_length=400)] = "",
                        last_name: Annotated[str, Form(max_length=400)] = "",
                        email: Annotated[str, Form(max_length=400)] = "",
                        phone: Annotated[str, Form(max_length=400)] = "",
                        timezone: Annotated[str, Form(max_length=400)] = "",
                        language: Annotated[str | None, Form(max_length=40)] = None,
                        interest: Annotated[str | None, Form(max_length=40)] = None) -> Response:
    contact = _contact_or_404(session, contact_id)
    if contact is None:
        return _not_found(request, user, "This contact")
    values: dict[str, Any] = {"first_name": first_name, "last_name": last_name, "email": email, "phone": phone,
                              "timezone": timezone, "language": language, "interest": interest}
    rt = _rt(request)
    try:
        result = edit_contact(session, contact, values, campaigns=rt.campaigns, suppression_key=rt.suppression_key,
                              now=now, actor=user.actor)
    except ContactEditErrors as exc:
        session.rollback()
        return _edit_form(request, user, contact, values, exc.errors, 400)
    session.commit()
    if not result.changed:
        return redirect(f"/admin/contacts/{contact_id}", "contact_unchanged")
    number = "phone" in result.changed and any("new number" in note for note in result.notes)
    return redirect(f"/admin/contacts/{contact_id}", "contact_updated_number" if number else "contact_updated")


def sandboxed_html(html: str) -> Response:
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": SANDBOX_CSP, "X-Frame-Options": "SAMEORIGIN", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer"})

