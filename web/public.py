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
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from patient_drip.contacts.journey_events import wake_waiting
from patient_drip.contacts.changes import parse_contact_input
from patient_drip.contacts.consent import ConsentGrant, Offer, consent_offer, consent_wording, grant_consent, load_wording, receives
from patient_drip.contacts.enrollment import unsubscribe
from patient_drip.contacts.intake import (RECEIVED, ChangeStatus, IntakeRequest, change_status, confirm_change,
                                          deliver_notices, describe_request, pending_change, process_received,
                                          record_request, request_language)
from patient_drip.contacts.fields import (
    FieldError,
    ZoneSource,
    check_first_name,
    check_interest,
    check_language,
    check_preferred_channel,
    check_timezone,
    normalize_email,
    normalize_name,
    normalize_phone,
)
from patient_drip.content.booking_links import booking_target
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.contacts.intake_limits import IntakeLimits, Refusal, admit_consultation, check_number_for_texts
from patient_drip.content.tokens import BadToken
from patient_drip.content.windows import first_opening
from patient_drip.models import (
    Channel,
    ConsentMethod,
    Contact,
    EventKind,
    Message,
    add_event,
)
from patient_drip.runtime import Runtime
from patient_drip.web import i18n
from patient_drip.web.deps import NowDep, SessionDep, client_ip, get_runtime, page

log = logging.getLogger("drip.web")

DEFAULT_CAMPAIGN = "ketamine-consult"
FORM_FIELDS = ("first_name", "last_name", "email", "phone", "preferred_channel", "timezone", "language", "interest")
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
    """The public consultation request form, in the language of `?lang=` or else the browser's
    (`Accept-Language`; `web.i18n`), with the consent wording of that language."""
    rt = get_runtime(request)
    language = _request_language(request)
    return page(request, "consult.html", {"values": {}, "errors": {}, "language": language,
                                          "languages": i18n.language_choices(),
                                          "wording": consent_wording(rt.settings.policy_dir, language)})


def _request_language(request: Request, data: dict[str, Any] | None = None) -> str:
    """The language a public page answers in: `?lang=`, the form's (the page it was sent from,
    else the language chosen), else `Accept-Language`."""
    data = data or {}
    return i18n.page_language(query=request.query_params.get("lang"),
                              form=str(data.get("wording_language") or data.get("language") or ""),
                              accept_language=request.headers.get("accept-language"))


@router.post("/api/consultations", tags=["public"])
async def submit_consultation(request: Request, now: NowDep) -> Response:
    """Accept a consultation request: check every field, pass the intake limits
    (`contacts.intake_limits`), record it (`contacts.intake.record_request`) and act on it after
    answering (`contacts.intake.process_received`): a new person is created and asked to confirm
    texts by text; a known one changes only after confirming from the address on file.

    The answer is the same whoever it names: 202 `{"status": "received"}` (or the thank-you page).
    Refusals: 400/422 with every field's problem at once (JSON: `{"errors": [{"field", "message"}]}`;
    the form page shows them all); 429 with Retry-After when a limit refuses (the error names the
    `limit`). A refused request stores nothing."""
    rt = get_runtime(request)
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    try:
        data, wants_json = await _read_submission(request)
    except FieldError as exc:
        return JSONResponse({"errors": _error_list({exc.field: exc.message})}, status_code=400)
    if str(data.get("website") or "").strip():  # honeypot: people never see this field
        log.info("honeypot field filled; request dropped")
        return _received(request, wants_json)
    errors, recorded, refusal, intake = await run_in_threadpool(_accept_consultation, rt, request, data, now)
    language = _request_language(request, data)
    if refusal is not None:
        return _refused(request, rt, data, refusal, wants_json)
    if errors:
        errors = _errors_in(language, errors)
        if wants_json:
            return JSONResponse({"errors": _error_list(errors)}, status_code=422)
        return _form_page(request, rt, data, errors, 400)
    answer = _received(request, wants_json, _first_message(rt, intake, now, language), language)
    # Acted on after the answer has gone, so the answer and its timing are the same whether the
    # request names a new person (contact created, the double opt-in text) or a known one (held,
    # a link to the address on file).
    answer.background = BackgroundTask(process_received, rt, recorded, now)
    return answer


def _received(request: Request, wants_json: bool, first_message: dict[str, str] | None = None,
              language: str | None = None) -> Response:
    """The one answer to an accepted request, whoever it names (a patient, a stranger, a bot).
    `first_message` (`_first_message`): when the thank-you page says the first message will come;
    `language`: the page's (the form's), never the language on file of anyone it names."""
    if wants_json:
        return JSONResponse({"status": RECEIVED}, status_code=202)
    return page(request, "thanks.html", {"first_message": first_message,
                                         "language": language or _request_language(request)})


def _first_message(rt: Runtime, intake: IntakeRequest | None, now: datetime,
                   language: str = DEFAULT_LANGUAGE) -> dict[str, str] | None:
    """Outside the send window: when to expect the first message, in the person's local time.

    Computed from what was submitted only -- the zone (the browser's, or the number's) and the
    number's texting law -- and the campaign's window, never from what we hold about that person:
    the page must read the same whether or not the request names someone we know (issue 11)."""
    if intake is None:
        return None
    campaign = rt.campaigns.get(intake.campaign_id)
    channels = {name for name, asked in ((Channel.EMAIL, intake.consent_email), (Channel.SMS, intake.consent_sms))
                if asked}
    zone = intake.contact.timezone
    opening = first_opening(campaign, channels, zone, intake.contact.phone, now) if campaign else None
    if opening is None:
        return None
    local = opening.at.astimezone(ZoneInfo(zone))
    return {"when": i18n.local_when(local, language), "zone": zone,
            "hours": f"{opening.window.start:%H:%M}–{opening.window.end:%H:%M}"}


def _error_list(errors: dict[str, str]) -> list[dict[str, str]]:
    """Field errors as the JSON list the form's API answers, in the form's field order."""
    order = {name: index for index, name in enumerate(("body", "form", *FORM_FIELDS))}
    return [{"field": field, "message": message}
            for field, message in sorted(errors.items(), key=lambda item: order.get(item[0], len(order)))]


def _form_page(request: Request, rt: Runtime, data: dict[str, Any], errors: dict[str, str],
               status_code: int) -> HTMLResponse:
    """The form again, with what was typed and every problem (a summary on top, each field's own),
    in the language it was sent in."""
    language = _request_language(request, data)
    return page(request, "consult.html", {"values": data, "errors": errors, "error_list": _error_list(errors),
                                          "language": language, "languages": i18n.language_choices(),
                                          "wording": consent_wording(rt.settings.policy_dir, language)}, status_code)


# Said in the form's language when the catalog has no translation of a field's own message (those
# that quote what was typed): the field is still named, in the summary and next to the field.
_FIELD_PROBLEMS = {
    "first_name": "Please check your first name.", "last_name": "Please check your last name.",
    "email": "Please check the email address.", "phone": "Please check the mobile number.",
    "timezone": "Please check the time zone.", "preferred_channel": "Please choose how we should contact you.",
    "language": "Please choose English or Spanish.", "interest": "Please choose one of the topics, or none.",
    "body": "The form could not be read. Please try again.", "form": "Please try again later.",
}


def _errors_in(language: str, errors: dict[str, str]) -> dict[str, str]:
    """Each field's problem in `language` (`web.i18n`): its own message where the catalog has it,
    else the field's general one (`_FIELD_PROBLEMS`). English: unchanged."""
    if language == DEFAULT_LANGUAGE:
        return errors
    return {field: i18n.gettext(language, message) if i18n.has_translation(language, message)
            else i18n.gettext(language, _FIELD_PROBLEMS.get(field, "Please check this field."))
            for field, message in errors.items()}


def _refused(request: Request, rt: Runtime, data: dict[str, Any], refusal: Refusal, wants_json: bool) -> Response:
    """429 naming the limit, with Retry-After (seconds)."""
    field = "phone" if refusal.limit == "number" else "form"
    headers = {"Retry-After": str(refusal.retry_after)}
    if wants_json:
        return JSONResponse({"errors": [{"field": field, "message": refusal.message, "limit": str(refusal.limit)}]},
                            status_code=429, headers=headers)
    response = _form_page(request, rt, data, _errors_in(_request_language(request, data), {field: refusal.message}),
                          429)
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
        current = wording.wording(channel, language=contact.language)  # what the page showed them
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


@router.get("/confirm/{token}", response_class=HTMLResponse, tags=["public"])
def confirm_page(token: str, request: Request, session: SessionDep, now: NowDep) -> HTMLResponse:
    """What a request for a known contact asked, with a button that confirms it. Opening the link
    changes nothing (mail scanners open links); only the button's POST does."""
    rt = get_runtime(request)
    pending = pending_change(session, rt.tokens, token)
    contact = session.get(Contact, pending.contact_id) if pending is not None and pending.contact_id else None
    refused = change_status(pending, contact, now)
    if refused == ChangeStatus.NOT_FOUND or pending is None:
        return page(request, "not_found.html", {"what": "This confirmation link"}, 404)
    language = request_language(pending, contact)
    return page(request, "confirm_change.html", {"status": refused, "token": token, "language": language,
                                                 "asked": describe_request(pending, language)},
                410 if refused == ChangeStatus.EXPIRED else 200)


@router.post("/confirm/{token}", tags=["public"])
def confirm_post(token: str, request: Request, session: SessionDep, now: NowDep) -> Response:
    """Apply a confirmed request (`contacts.intake.confirm_change`): once, before it expires."""
    rt = get_runtime(request)
    pending = pending_change(session, rt.tokens, token)
    contact = session.get(Contact, pending.contact_id) if pending is not None and pending.contact_id else None
    language = request_language(pending, contact) if pending is not None else _request_language(request)
    result = confirm_change(session, rt, pending, now,
                            ip_address=client_ip(request), user_agent=request.headers.get("user-agent"))
    if result.status == ChangeStatus.NOT_FOUND:
        return page(request, "not_found.html", {"what": "This confirmation link"}, 404)
    session.commit()
    answer = page(request, "confirm_change.html", {"status": result.status, "applied": result.applied, "token": token,
                                                   "language": language},
                  {ChangeStatus.EXPIRED: 410, ChangeStatus.USED: 409}.get(result.status, 200))
    answer.background = BackgroundTask(deliver_notices, rt, result.notices, now)
    return answer


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
    wake_waiting(session, rt.campaigns, message.contact_id, "clicked", now)  # a journey waiting for this click
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
        shown = wording.wording(channel, language=contact.language)
        return {"has_address": bool(contact.email if channel == Channel.EMAIL else contact.phone),
                "subscribed": receives(contact, channel), "offer": consent_offer(session, contact, channel),
                "wording_version": shown.version, "wording_text": shown.text}

    # The page is in the language on file: the wording shown, and recorded, is that language's.
    return {"token": token, "email": state(Channel.EMAIL), "sms": state(Channel.SMS), "notice": notice,
            "sms_confirm_notice": SMS_CONFIRM_NOTICE, "language": contact.language}


def _accept_consultation(rt: Runtime, request: Request, data: dict[str, Any], now: datetime
                         ) -> tuple[dict[str, str], int | None, Refusal | None, IntakeRequest | None]:
    """Validate a request, pass the intake limits and record it (`contacts.intake.record_request`).
    Returns (field errors, the recorded request's id, refusal by a limit, the parsed request). Nothing
    here depends on who is already a contact: the errors, the work and so the time taken are the
    same for everyone."""
    errors: dict[str, str] = {}
    raw = {name: (str(data.get(name)) if data.get(name) is not None else "") for name in FORM_FIELDS}
    consent_email, consent_sms = _truthy(data.get("consent_email")), _truthy(data.get("consent_sms"))
    limits = IntakeLimits.from_settings(rt.settings, rt.suppression_key)

    def check_phone(value: str) -> None:  # a number we would text (or, without texts, call back)
        check_number_for_texts(normalize_phone(value), limits.countries, landline_ok=not consent_sms)

    checks: dict[str, Callable[[str], object]] = {
        "email": normalize_email, "phone": check_phone, "first_name": check_first_name,
        "last_name": lambda v: normalize_name(v, "last_name"), "timezone": check_timezone,
        "preferred_channel": check_preferred_channel, "language": check_language, "interest": check_interest,
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
        return errors, None, None, None
    ip = client_ip(request)
    campaign_id = DEFAULT_CAMPAIGN if DEFAULT_CAMPAIGN in rt.campaigns else next(iter(rt.campaigns))
    intake = IntakeRequest(contact_input, consent_email, consent_sms, campaign_id, ip_address=ip,
                           user_agent=request.headers.get("user-agent"),
                           wording_language=_request_language(request, data))
    with rt.sessions() as session, session.begin():
        # SMS pumping protection: the limits, before anything is stored (a refusal commits only the
        # staff alert, if any). The form cannot prove control of a number, so a text it may cause
        # (the one "Reply YES" confirmation) counts as a text to an unconfirmed number.
        refusal = admit_consultation(session, limits, ip=ip, text_to=contact_input.phone if consent_sms else None,
                                     now=now)
        if refusal is not None:
            return {}, None, refusal, None
        recorded = record_request(session, rt.settings.policy_dir, rt.settings.confirmation_hours, intake, now)
        return {}, recorded.id, None, intake
