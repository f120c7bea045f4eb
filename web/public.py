"""The public pages: health, the consultation form and its API, the preference/unsubscribe page
(`/u/{token}`), booking links (`/b/{token}`) and the local booking placeholder.

Anyone may call these routes; they parse the request and present the result, and every rule they
apply (contact changes, consent, unsubscribing, enrolling) is a call into `contacts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, Offer, consent_offer, consent_wording, grant_consent, load_wording, receives
from patient_drip.contacts.enrollment import AlreadyEnrolled, EnrollmentError, enroll, unsubscribe, usable_channels
from patient_drip.contacts.fields import (
    FieldError,
    ZoneSource,
    check_first_name,
    check_preferred_channel,
    check_timezone,
    normalize_email,
    normalize_name,
    normalize_phone,
)
from patient_drip.content.booking_links import booking_target
from patient_drip.contacts.intake_limits import IntakeLimits, Refusal, admit_consultation, check_number_for_texts
from patient_drip.content.tokens import BadToken
from patient_drip.models import (
    Channel,
    ConsentMethod,
    Contact,
    EventKind,
    Message,
    add_event,
)
from patient_drip.runtime import Runtime
from patient_drip.web.deps import NowDep, SessionDep, client_ip, get_runtime, page

log = logging.getLogger("drip.web")

DEFAULT_CAMPAIGN = "ketamine-consult"
FORM_FIELDS = ("first_name", "last_name", "email", "phone", "preferred_channel", "timezone")
MAX_BODY_BYTES = 64 * 1024

router = APIRouter()


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"yes", "on", "true", "1", "y"}


async def _read_submission(request: Request) -> tuple[dict[str, Any], bool]:
    """The posted fields and whether the client wants JSON back."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise FieldError("body", f"is larger than {MAX_BODY_BYTES // 1024} KB")
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…" nested too deep
            raise FieldError("body", "is not valid JSON") from None
        if not isinstance(data, dict):
            raise FieldError("body", "must be a JSON object")
        return data, True
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}, False


@router.get("/healthz", tags=["public"])
def healthz(request: Request, session: SessionDep) -> dict[str, str]:
    """Liveness: the process answers and the database is reachable."""
    rt = get_runtime(request)
    session.execute(text("SELECT 1"))
    return {"status": "ok", "delivery": rt.delivery}


@router.get("/consult", response_class=HTMLResponse, tags=["public"])
def consult_form(request: Request) -> HTMLResponse:
    """The public consultation request form."""
    rt = get_runtime(request)
    return page(request, "consult.html", {"values": {}, "errors": {}, "wording": consent_wording(rt.settings.policy_dir)})


@router.post("/api/consultations", tags=["public"])
async def submit_consultation(request: Request, now: NowDep) -> Response:
    """Create or update the contact, record consent with its proof, enroll once.

    Refusals: 400/422 with every field's problem at once (JSON: `{"errors": [{"field", "message"}]}`;
    the form page shows them all); 429 with Retry-After when a limit of `contacts.intake_limits`
    refuses (JSON: the error also names the `limit`). A refused request stores nothing."""
    rt = get_runtime(request)
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    try:
        data, wants_json = await _read_submission(request)
    except FieldError as exc:
        return JSONResponse({"errors": _error_list({exc.field: exc.message})}, status_code=400)
    if str(data.get("website") or "").strip():  # honeypot: people never see this field
        log.info("honeypot field filled; request dropped")
        return JSONResponse({"status": "received"}) if wants_json else page(request, "thanks.html", {})
    errors, result, refusal = await run_in_threadpool(_accept_consultation, rt, request, data, now)
    if refusal is not None:
        return _refused(request, rt, data, refusal, wants_json)
    if errors:
        if wants_json:
            return JSONResponse({"errors": _error_list(errors)}, status_code=422)
        return _form_page(request, rt, data, errors, 400)
    if wants_json:
        return JSONResponse({"status": result}, status_code=201 if result == "enrolled" else 200)
    return page(request, "thanks.html", {"status": result})


def _error_list(errors: dict[str, str]) -> list[dict[str, str]]:
    """Field errors as the JSON list the form's API answers, in the form's field order."""
    order = {name: index for index, name in enumerate(("body", "form", *FORM_FIELDS))}
    return [{"field": field, "message": message}
            for field, message in sorted(errors.items(), key=lambda item: order.get(item[0], len(order)))]


def _form_page(request: Request, rt: Runtime, data: dict[str, Any], errors: dict[str, str],
               status_code: int) -> HTMLResponse:
    """The form again, with what was typed and every problem (a summary on top, each field's own)."""
    return page(request, "consult.html", {"values": data, "errors": errors, "error_list": _error_list(errors),
                                          "wording": consent_wording(rt.settings.policy_dir)}, status_code)


def _refused(request: Request, rt: Runtime, data: dict[str, Any], refusal: Refusal, wants_json: bool) -> Response:
    """429 naming the limit, with Retry-After (seconds)."""
    field = "phone" if refusal.limit == "number" else "form"
    headers = {"Retry-After": str(refusal.retry_after)}
    if wants_json:
        return JSONResponse({"errors": [{"field": field, "message": refusal.message, "limit": str(refusal.limit)}]},
                            status_code=429, headers=headers)
    response = _form_page(request, rt, data, {field: refusal.message}, 429)
    response.headers.update(headers)
    return response


@router.get("/u/{token}", response_class=HTMLResponse, tags=["public"])
def preferences(token: str, request: Request, session: SessionDep) -> HTMLResponse:
    """The preference page: unsubscribe per channel or from everything; start a channel again
    where the person had consented to it, or start emails with the consent wording shown."""
    rt = get_runtime(request)
    contact = _contact_for_token(rt, session, token)
    if contact is None:
        return page(request, "not_found.html", {"what": "This link"}, 404)
    return page(request, "preferences.html", _preferences_context(rt, session, contact, token, None))


@router.post("/u/{token}", tags=["public"])
def preferences_post(
    token: str, request: Request, session: SessionDep, now: NowDep,
    list_unsubscribe: Annotated[str | None, Form(alias="List-Unsubscribe", max_length=40)] = None,
    action: Annotated[str | None, Form(max_length=40)] = None,
    wording_version: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    """One-click unsubscribe (RFC 8058: body `List-Unsubscribe=One-Click`) or a preference change.

    Starting a channel (`resubscribe_email`, `resubscribe_sms`, `start_email`) records consent with
    the wording version the page showed (`wording_version`), refused (409, nothing recorded) when it
    is not the current one. `resubscribe_*` needs an earlier grant in the ledger; `start_email` needs
    none; a number that never consented is never started here (texts need a confirmation by text)."""
    rt = get_runtime(request)
    contact = _contact_for_token(rt, session, token)
    if contact is None:
        return page(request, "not_found.html", {"what": "This link"}, 404)

    def answer(notice: str, status_code: int = 200) -> HTMLResponse:
        return page(request, "preferences.html", _preferences_context(rt, session, contact, token, notice), status_code)

    if list_unsubscribe == "One-Click":
        unsubscribe(session, rt.campaigns, contact, [Channel.EMAIL], ConsentMethod.ONE_CLICK, now, "patient:one-click",
                    ip_address=client_ip(request), user_agent=request.headers.get("user-agent"))
        session.commit()
        return PlainTextResponse("You are unsubscribed from our emails.")
    action = action or ""
    channels = {"email": [Channel.EMAIL], "sms": [Channel.SMS], "all": [Channel.EMAIL, Channel.SMS]}
    starts = {"resubscribe_email": (Channel.EMAIL, Offer.RESTART), "resubscribe_sms": (Channel.SMS, Offer.RESTART),
              "start_email": (Channel.EMAIL, Offer.START), "start_sms": (Channel.SMS, Offer.CONFIRM_BY_TEXT)}
    if action in channels:
        unsubscribe(session, rt.campaigns, contact, channels[action], ConsentMethod.UNSUBSCRIBE_PAGE, now,
                    "patient:preferences", ip_address=client_ip(request), user_agent=request.headers.get("user-agent"))
        done = {"email": "You will get no more emails from us.", "sms": "You will get no more text messages from us.",
                "all": "You will get no more messages from us."}[action]
    elif action in starts:
        channel, wanted = starts[action]
        offer = consent_offer(session, contact, channel)
        if offer == Offer.CONFIRM_BY_TEXT:
            return answer(SMS_CONFIRM_NOTICE, 400)
        if offer != wanted:
            return answer("That is not possible for this contact method.", 400)
        wording = load_wording(rt.settings.policy_dir)
        current = wording.wording(channel)
        if wording_version != current.version:
            return answer("The consent wording has changed since this page was opened. Please read the wording "
                          "below and choose again; nothing was changed.", 409)
        note = "restarted on the preference page" if offer == Offer.RESTART else "started on the preference page"
        grant_consent(session, wording, contact,
                      ConsentGrant(channel, ConsentMethod.UNSUBSCRIBE_PAGE, wording_version=current.version,
                                   ip_address=client_ip(request), user_agent=request.headers.get("user-agent"),
                                   note=note), now, "patient:preferences")
        done = "Welcome back. You are subscribed again." if offer == Offer.RESTART else "You will get our emails."
    else:
        return answer("Please choose an option.", 400)
    session.commit()
    return answer(done)


@router.get("/b/{token}", tags=["public"])
def booking_link(token: str, request: Request, session: SessionDep, now: NowDep) -> Response:
    """Record the click and send the person on to the booking page, tagged for analytics."""
    rt = get_runtime(request)
    try:
        message_id = rt.tokens.read_booking(token)
    except BadToken:
        return page(request, "not_found.html", {"what": "This booking link"}, 404)
    message = session.get(Message, message_id)
    if message is None:
        return page(request, "not_found.html", {"what": "This booking link"}, 404)
    if message.clicked_at is None:
        message.clicked_at = now
    add_event(session, EventKind.CLICKED, now, contact_id=message.contact_id, message_id=message.id, step=message.step_id,
              channel=message.channel)
    session.commit()
    contact = session.get(Contact, message.contact_id)
    known = contact is not None and contact.erased_at is None
    target = booking_target(rt.settings.effective_booking_url, rt.settings.booking_provider, tracking=token,
                            channel=message.channel, campaign_id=message.campaign_id, step_id=message.step_id,
                            name=f"{contact.first_name} {contact.last_name}".strip() if known else "",
                            email=contact.email if known else None)
    # The prefilled name and email must not leak on to third parties from the scheduler's page.
    return RedirectResponse(target, status_code=302, headers={"Referrer-Policy": "no-referrer",
                                                              "Cache-Control": "no-store"})


@router.get("/book-placeholder", response_class=HTMLResponse, include_in_schema=False)
def booking_placeholder(request: Request) -> HTMLResponse:
    """The booking page when DRIP_BOOKING_URL is not set: shows the tags a booking link carried."""
    return page(request, "booking_placeholder.html", {"params": dict(request.query_params)})


def _contact_for_token(rt: Runtime, session: Session, token: str) -> Contact | None:
    try:
        contact_id, _message_id = rt.tokens.read_unsubscribe(token)
    except BadToken:
        return None
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        return None
    return contact


SMS_CONFIRM_NOTICE = ("Text messages start only after you confirm by text message from your phone; "
                      "they cannot be started from this page.")


def _preferences_context(rt: Runtime, session: Session, contact: Contact, token: str,
                         notice: str | None) -> dict[str, Any]:
    wording = load_wording(rt.settings.policy_dir)

    def state(channel: Channel) -> dict[str, Any]:
        shown = wording.wording(channel)
        return {"has_address": bool(contact.email if channel == Channel.EMAIL else contact.phone),
                "subscribed": receives(contact, channel), "offer": consent_offer(session, contact, channel),
                "wording_version": shown.version, "wording_text": shown.text}

    return {"token": token, "email": state(Channel.EMAIL), "sms": state(Channel.SMS), "notice": notice,
            "sms_confirm_notice": SMS_CONFIRM_NOTICE}


def _accept_consultation(rt: Runtime, request: Request, data: dict[str, Any],
                         now: datetime) -> tuple[dict[str, str], str, Refusal | None]:
    """Validate and store a request. Returns (field errors, status, refusal by a limit)."""
    errors: dict[str, str] = {}
    raw = {name: (str(data.get(name)) if data.get(name) is not None else "") for name in FORM_FIELDS}
    consent_email, consent_sms = _truthy(data.get("consent_email")), _truthy(data.get("consent_sms"))
    limits = IntakeLimits.from_settings(rt.settings, rt.suppression_key)

    def check_phone(value: str) -> None:  # a number we would text (or, without texts, call back)
        check_number_for_texts(normalize_phone(value), limits.countries, landline_ok=not consent_sms)

    checks: dict[str, Callable[[str], object]] = {
        "email": normalize_email, "phone": check_phone, "first_name": check_first_name,
        "last_name": lambda v: normalize_name(v, "last_name"), "timezone": check_timezone,
        "preferred_channel": check_preferred_channel,
    }
    for name, check in checks.items():  # every field's problem at once, not just the first
        if raw[name].strip():
            try:
                check(raw[name])
            except FieldError as exc:
                errors[name] = exc.message
    if not raw["first_name"].strip():
        errors.setdefault("first_name", "Please tell us your first name.")
    if not raw["email"].strip() and not raw["phone"].strip():
        errors.setdefault("email", "Please give an email address or a mobile number.")
    if consent_sms and not raw["phone"].strip():
        errors.setdefault("phone", "Add a mobile number to get text messages, or untick the text message box.")
    if consent_email and not raw["email"].strip():
        errors.setdefault("email", "Add an email address to get emails, or untick the email box.")
    try:
        contact_input = parse_contact_input(raw, rt.settings.clinic_timezone, zone_source=ZoneSource.BROWSER,
                                            source="web_form")
    except FieldError as exc:  # what the field checks above do not cover (preferred_channel)
        errors.setdefault(exc.field, exc.message)
    if errors:
        return errors, "", None
    wording = load_wording(rt.settings.policy_dir)
    ip, agent = client_ip(request), request.headers.get("user-agent")
    campaign = rt.campaign(DEFAULT_CAMPAIGN) if DEFAULT_CAMPAIGN in rt.campaigns else next(iter(rt.campaigns.values()))
    with rt.sessions() as session, session.begin():
        # SMS pumping protection: the limits, before anything is stored (a refusal commits only
        # the staff alert, if any). Every number that gets here is unconfirmed: the form cannot
        # prove control of a number, so texts it causes count as texts to an unconfirmed number.
        refusal = admit_consultation(session, limits, ip=ip, text_to=contact_input.phone if consent_sms else None,
                                     now=now)
        if refusal is not None:
            return {}, "", refusal
        try:
            contact, _created = upsert_contact(session, rt.suppression_key, contact_input, now, "patient:web_form")
        except FieldError as exc:
            return {exc.field: "We could not use this; please call us." if exc.field == "phone" else exc.message}, "", None
        add_event(session, EventKind.CONSULTATION_REQUESTED, now, contact_id=contact.id, ip=ip)
        for channel, given in ((Channel.EMAIL, consent_email), (Channel.SMS, consent_sms)):
            if given:
                grant_consent(session, wording, contact, ConsentGrant(channel, ConsentMethod.WEB_FORM, ip_address=ip,
                                                                      user_agent=agent), now, "patient:web_form")
        if not usable_channels(contact, campaign):
            return {}, "received", None
        try:
            enroll(session, contact, campaign, now, "patient:web_form", source="web_form")
        except AlreadyEnrolled:
            return {}, "already_enrolled", None
        except EnrollmentError:
            return {}, "received", None
    return {}, "enrolled", None
