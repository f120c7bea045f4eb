"""Everything the providers and the booking tool send back, signature-checked before anything changes.

- `/webhooks/twilio/status`: delivery receipts; status only moves forward (callbacks arrive out of
  order); permanent failure codes stop SMS to that number.
- `/webhooks/twilio/sms`: patient replies — carrier keywords (YES confirms a number: double
  opt-in), crisis messages, free-text opt-outs, everything else kept for staff (and acknowledged
  once a day: `contacts.acknowledge`); a STOP from a number that is no contact is suppressed.
- `/webhooks/sendgrid/events`: delivered, bounce, spam report, unsubscribe... (ECDSA-signed; with
  no `SENDGRID_WEBHOOK_PUBLIC_KEY` the endpoint refuses everything, in every delivery mode).

The scheduling tools' webhooks (`/webhooks/booking`, `/webhooks/calendly`, `/webhooks/calcom`) are in
`web/booking_webhooks.py`. A forged or unsigned request gets 403 and changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from patient_drip.contacts.journey_events import pause_on_reply, wake_waiting
from patient_drip.contacts.blocks import BlockReason, block_channel, block_text, suppress
from patient_drip.contacts.changes import find_contact
from patient_drip.contacts.acknowledge import acknowledge_question, acknowledgement_text
from patient_drip.contacts.auto_replies import (crisis_reply, help_reply, reply_language, request_confirmed_reply,
                                                restarted_reply, stopped_reply)
from patient_drip.contacts.consent import load_wording
from patient_drip.contacts.conversations import inbound_arrived
from patient_drip.contacts.double_opt_in import (TextConfirmation, confirm_by_text, confirmed_reply,
                                                 remember_stranger_stop)
from patient_drip.contacts.enrollment import pause_for_crisis, unsubscribe
from patient_drip.contacts.intake import confirm_change_by_text
from patient_drip.contacts.fields import FieldError, normalize_phone
from patient_drip.dispatch.outcome import move_status_forward
from patient_drip.models import EventKind, add_event
from patient_drip.models import (
    Channel,
    ConsentMethod,
    Contact,
    InboundMessage,
    Message,
    MessageStatus,
)
from patient_drip.contacts.replies import (SPANISH_KEYWORDS, YES_WORDS, ReplyKind, classify_reply, keyword_language,
                                           load_phrase_lists)
from patient_drip.runtime import Runtime
from patient_drip.providers.twilio import TWILIO_PERMANENT_CODES
from patient_drip.providers.types import OutgoingMessage, SendError

# The kinds whose `Classification.matched` is a keyword (the whole message), not a phrase line.
KEYWORD_KINDS = frozenset({ReplyKind.OPT_OUT, ReplyKind.OPT_IN, ReplyKind.HELP})

log = logging.getLogger("drip.webhooks")
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAX_WEBHOOK_BYTES = 1024 * 1024
SENDGRID_MAX_AGE_SECONDS = 600  # a signed batch older than this is a replay
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

TWILIO_STATUS_MAP = {
    "accepted": MessageStatus.SENT, "queued": MessageStatus.SENT, "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT, "delivered": MessageStatus.DELIVERED, "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.FAILED, "failed": MessageStatus.FAILED,
}


_DB_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit() is True, int("²") fails


def _db_id(value: object) -> int | None:
    """Our message id as a provider echoes it back, or None for anything that cannot be one
    (a 40-digit number would overflow the database's integer, not just miss)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 2**63 else None
    if isinstance(value, str) and _DB_ID.fullmatch(value):
        return int(value)
    return None


def _clean(value: str) -> str:
    """Text from outside made storable: no NUL (PostgreSQL refuses it in text) and no lone
    surrogates (not encodable as UTF-8, so no database can store them)."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _clean_json(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if depth > 20:
        return None
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    return value


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _now(request: Request) -> datetime:
    return request.app.state.clock()  # type: ignore[no-any-return]


def _forbidden(why: str) -> JSONResponse:
    log.warning("webhook refused: %s", why)
    return JSONResponse({"error": f"forbidden: {why}"}, status_code=403)


def _public_url(rt: Runtime, request: Request) -> str:
    """The URL the provider signed: our public base + the path and query it requested."""
    query = request.url.query
    return f"{rt.settings.public_url}{request.url.path}" + (f"?{query}" if query else "")


async def _twilio_params(request: Request, rt: Runtime) -> dict[str, str] | JSONResponse:
    """The form fields, if and only if X-Twilio-Signature matches (else a 403 response)."""
    token = rt.settings.twilio_auth_token.get_secret_value()
    signature = request.headers.get("x-twilio-signature", "")
    if not token:
        return _forbidden("TWILIO_AUTH_TOKEN is not configured, so no Twilio webhook can be trusted")
    if not signature:
        return _forbidden("missing X-Twilio-Signature")
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return JSONResponse({"error": "body too large"}, status_code=413)
    form = await request.form()
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    if not RequestValidator(token).validate(_public_url(rt, request), params, signature):
        return _forbidden("bad X-Twilio-Signature")
    return {key: _clean(value) for key, value in params.items()}


def twiml(message: str | None) -> Response:
    body = TWIML_EMPTY if not message else (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(message)}</Message></Response>'
    )
    return Response(body, media_type="application/xml")


# -- Twilio status callbacks -----------------------------------------------------------------------


@router.post("/twilio/status", summary="Twilio SMS status callback (signed)")
async def twilio_status(request: Request) -> Response:
    rt = _rt(request)
    params = await _twilio_params(request, rt)
    if isinstance(params, JSONResponse):
        return params
    now = _now(request)
    status_name = params.get("MessageStatus", "").lower()
    new_status = TWILIO_STATUS_MAP.get(status_name)
    if new_status is None:
        return JSONResponse({"error": f"unknown MessageStatus {status_name[:40]!r}"}, status_code=400)

    def apply() -> Response:  # database work runs off the event loop
        with rt.sessions() as session, session.begin():
            message = _message_for_twilio(session, request.query_params.get("m"), params.get("MessageSid", ""))
            if message is None:
                log.info("status callback for an unknown message (sid not ours)")
                return Response(status_code=204)
            error_code = params.get("ErrorCode") or None
            moved = move_status_forward(message, new_status, now)
            if message.provider_message_id is None and params.get("MessageSid"):
                message.provider_message_id = params["MessageSid"][:100]
            if moved:
                if new_status == MessageStatus.DELIVERED:
                    message.delivered_at = now
                if new_status in (MessageStatus.SENT, MessageStatus.DELIVERED) and message.sent_at is None:
                    message.sent_at = now
                if new_status == MessageStatus.FAILED:
                    message.error_code = error_code
                    message.last_error = f"Twilio {status_name}" + (f" (error {error_code})" if error_code else "")
            add_event(session, f"sms_{status_name}", now, contact_id=message.contact_id, message_id=message.id,
                      error_code=error_code)
            if new_status == MessageStatus.FAILED and error_code and _is_permanent_twilio(error_code):
                contact = session.get(Contact, message.contact_id)
                if contact is not None:
                    reason = TWILIO_PERMANENT_CODES.get(int(error_code), "permanent failure")
                    block_channel(session, contact, Channel.SMS, BlockReason.FAILED, f"{reason} (code {error_code})",
                                  now, "webhook:twilio")
                    if int(error_code) == 21610 and contact.phone:  # the number replied STOP at the carrier
                        suppress(session, rt.suppression_key, Channel.SMS, contact.phone, "carrier opt-out (21610)",
                                 now)
        return Response(status_code=204)

    return await run_in_threadpool(apply)


def _is_permanent_twilio(code: str) -> bool:
    return _DB_ID.fullmatch(code) is not None and int(code) in TWILIO_PERMANENT_CODES


def _message_for_twilio(session: Session, our_id: str | None, sid: str) -> Message | None:
    message_id = _db_id(our_id)
    if message_id is not None:
        message = session.get(Message, message_id)
        if message is not None and message.channel == Channel.SMS:
            return message
    if sid:
        return session.scalar(select(Message).where(Message.provider_message_id == sid[:100]))
    return None


# -- Twilio inbound SMS ----------------------------------------------------------------------------


@router.post("/twilio/sms", summary="Inbound SMS from a patient (signed)")
async def twilio_inbound(request: Request) -> Response:
    rt = _rt(request)
    params = await _twilio_params(request, rt)
    if isinstance(params, JSONResponse):
        return params
    now = _now(request)
    body = params.get("Body", "")[:2000]
    sid = params.get("MessageSid", "")[:100] or None
    try:
        from_number = normalize_phone(params.get("From", ""), field="From")
    except FieldError:
        from_number = params.get("From", "")[:20] or None
    settings = rt.settings
    classification = classify_reply(body, load_phrase_lists(settings.policy_dir))
    kind = classification.kind

    def apply() -> Response:  # database work runs off the event loop
        reply: str | None = None
        with rt.sessions() as session, session.begin():
            if sid and session.scalar(select(InboundMessage.id).where(InboundMessage.provider_message_id == sid)):
                return twiml(None)  # Twilio retried a webhook we already handled
            contact = find_contact(session, phone=from_number) if from_number else None
            inbound = InboundMessage(
                contact_id=contact.id if contact else None, from_number=from_number, body=body, provider_message_id=sid,
                classification=kind, crisis=kind == ReplyKind.CRISIS, received_at=now,
            )
            session.add(inbound)
            session.flush()
            if contact is not None:
                add_event(session, EventKind.SMS_REPLY, now, contact_id=contact.id, inbound_id=inbound.id, reply_kind=kind)
                wake_waiting(session, rt.campaigns, contact.id, "replied", now)  # a journey waiting for a reply
            # Answered in the contact's language; a number we do not know, in its keyword's.
            language = reply_language(contact.language if contact else None,
                                      keyword_language(classification.matched if kind in KEYWORD_KINDS else None))
            spanish_keyword = classification.matched in SPANISH_KEYWORDS and kind in KEYWORD_KINDS
            if kind in (ReplyKind.OPT_OUT, ReplyKind.OPT_OUT_TEXT):
                changed = False
                if contact is not None:
                    method = ConsentMethod.SMS_KEYWORD if kind == ReplyKind.OPT_OUT else ConsentMethod.SMS_TEXT
                    changed = bool(unsubscribe(session, rt.campaigns, contact, [Channel.SMS], method, now,
                                               "patient:sms"))
                elif from_number and from_number.startswith("+"):  # a number we could normalise
                    remember_stranger_stop(session, rt.suppression_key, from_number, now)
                inbound.handled_at = now
                inbound.handled_by = "automatic: opt-out"
                # Twilio answers the exact English keywords itself; a free-text opt-out we confirm,
                # once, and a Spanish keyword (ALTO, PARAR…) every time, as Twilio does for STOP.
                if (kind == ReplyKind.OPT_OUT_TEXT and changed) or spanish_keyword:
                    reply = stopped_reply(settings.sms_brand, language)
            elif kind == ReplyKind.OPT_IN and contact is not None and classification.matched in YES_WORDS and (
                    changed_by_text := confirm_change_by_text(session, rt, contact, inbound.id, now)) is not None:
                # A YES / SI to "confirm your request": the held change applies (its texts, if asked,
                # keep their own double opt-in).
                reply = request_confirmed_reply(settings.sms_brand, language)
                inbound.handled_at = now
                inbound.handled_by = "automatic: request confirmed"
            elif kind == ReplyKind.OPT_IN:
                if contact is not None:
                    confirmed = confirm_by_text(session, rt.campaigns, load_wording(settings.policy_dir),
                                                rt.suppression_key, contact, classification.matched or "", inbound.id,
                                                now)
                    if confirmed == TextConfirmation.CONFIRMED:
                        reply = confirmed_reply(settings.policy_dir, settings.sms_brand, language)
                    elif confirmed == TextConfirmation.RESTARTED and spanish_keyword:
                        reply = restarted_reply(settings.sms_brand, language)  # Twilio answers START, not COMENZAR
                inbound.handled_at = now
                inbound.handled_by = "automatic: opt-in keyword"
            elif kind == ReplyKind.HELP:
                reply = help_reply(settings.sms_brand, settings.clinic_phone, language)
                inbound.handled_at = now
                inbound.handled_by = "automatic: help reply"
            elif kind == ReplyKind.CRISIS:
                stopped = _act_on_crisis(session, rt, contact, inbound, classification.opt_out, now)
                reply = crisis_reply(settings.sms_brand, settings.clinic_phone, stopped, language)
            elif kind == ReplyKind.OTHER and contact is not None:
                # A question pauses the journeys that pause on reply, with a task for staff.
                pause_on_reply(session, rt.campaigns, contact.id, inbound.id, now)
                # Stays open in the staff inbox; the person hears that it did not go unseen.
                if acknowledge_question(session, contact, inbound.id, now):
                    reply = acknowledgement_text(settings.sms_brand, settings.clinic_hours, settings.clinic_phone,
                                                 language)
            inbound_arrived(session, inbound, now)  # the person's thread: reopened if the text waits for staff
            inbound_id = inbound.id
        if kind == ReplyKind.CRISIS:
            _alert_staff(rt, inbound_id)
        return twiml(reply)

    return await run_in_threadpool(apply)


def _act_on_crisis(session: Session, rt: Runtime, contact: Contact | None, inbound: InboundMessage,
                   opt_out: str | None, now: datetime) -> bool:
    """A possible crisis: flag it for staff, carry out the opt-out it also asked for (through the one
    consent service), and pause the contact's sequences until staff resolve it. The reply stays open
    in the inbox. Returns whether texting was stopped just now."""
    contact_id = contact.id if contact else None
    add_event(session, EventKind.CRISIS_FLAGGED, now, contact_id=contact_id, inbound_id=inbound.id,
              opt_out=opt_out)
    log.warning("crisis reply flagged for staff (inbound %s, contact %s)", inbound.id, contact_id or "unknown")
    if contact is None:
        return False
    stopped = opt_out is not None and bool(
        unsubscribe(session, rt.campaigns, contact, [Channel.SMS], ConsentMethod.SMS_TEXT, now, "patient:sms"))
    pause_for_crisis(session, rt.campaigns, contact.id, inbound.id, now, "system:crisis")
    return stopped


def _alert_staff(rt: Runtime, inbound_id: int) -> None:
    """E-mail the staff alert address (no patient data in it: just a link to the inbox)."""
    address = rt.settings.staff_alert_email
    sender = rt.senders.get(Channel.EMAIL)
    if not address or sender is None:
        return
    link = f"{rt.settings.public_url}/admin/replies?highlight={inbound_id}"
    text = (f"A patient's text message was flagged as a possible crisis. They were sent the 988 Lifeline "
            f"and the clinic's number automatically.\n\nPlease review it now: {link}\n")
    try:
        sender.send(OutgoingMessage(message_id=0, channel=Channel.EMAIL, to=address, text=text,  # type: ignore[arg-type]
                                    subject="Urgent: a patient reply needs review", html=None,
                                    categories=("staff-alert",)))
    except SendError as exc:
        log.error("could not e-mail the staff crisis alert for inbound %s: %s", inbound_id, exc)


# -- SendGrid event webhook ------------------------------------------------------------------------


@router.post("/sendgrid/events", summary="SendGrid event webhook (ECDSA-signed; refused without a configured key)")
async def sendgrid_events(request: Request) -> Response:
    rt = _rt(request)
    key = rt.settings.sendgrid_webhook_public_key
    if not key:
        # Unsigned events can suppress a patient for good (one spamreport), so without the key
        # nothing is accepted, whatever the delivery mode.
        return _forbidden("SENDGRID_WEBHOOK_PUBLIC_KEY is not configured, so no SendGrid event can be trusted")
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES * 4:
        return JSONResponse({"error": "body too large"}, status_code=413)
    refused = _sendgrid_refusal(key, raw, request.headers.get("x-twilio-email-event-webhook-signature", ""),
                                request.headers.get("x-twilio-email-event-webhook-timestamp", ""))
    if refused:
        return _forbidden(refused)
    try:
        events = _clean_json(json.loads(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return JSONResponse({"error": "body is not JSON"}, status_code=400)
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        return JSONResponse({"error": "body must be a JSON array of event objects"}, status_code=400)
    now = _now(request)

    def apply() -> Response:  # database work runs off the event loop
        applied = 0
        with rt.sessions() as session, session.begin():
            for event in events[:5000]:
                applied += _apply_sendgrid_event(session, rt, event, now)
        return JSONResponse({"received": len(events), "applied": applied})

    return await run_in_threadpool(apply)


def _sendgrid_refusal(key: str, raw: bytes, signature: str, timestamp: str) -> str | None:
    """Why this batch is not SendGrid's (None when the ECDSA signature over timestamp + body
    verifies with `key` and the timestamp is within SENDGRID_MAX_AGE_SECONDS of the wall clock).

    The wall clock, not the app's: SendGrid stamps with real time whatever our clock says."""
    if not signature or not timestamp:
        return "missing SendGrid signature headers"
    # ASCII digits, bounded: `isdigit` alone admits "²" and 5,000-digit numbers, on which int() raises.
    if (not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12)
            or abs(time.time() - int(timestamp)) > SENDGRID_MAX_AGE_SECONDS):
        return "stale or malformed SendGrid timestamp (replay?)"
    try:
        webhook = EventWebhook()
        ok = webhook.verify_signature(raw.decode("utf-8"), signature, timestamp,
                                      webhook.convert_public_key_to_ecdsa(key))
    except Exception:  # malformed signature or key: not verified
        ok = False
    return None if ok else "bad SendGrid signature"


def _message_for_sendgrid(session: Session, event: dict[str, Any]) -> Message | None:
    our_id = _db_id(event.get("drip_message_id"))
    if our_id is not None:
        message = session.get(Message, our_id)
        if message is not None and message.channel == Channel.EMAIL:
            return message
    sg_id = event.get("sg_message_id")
    if isinstance(sg_id, str) and sg_id:
        return session.scalar(select(Message).where(Message.provider_message_id == sg_id.split(".", 1)[0][:100]))
    return None


def _apply_sendgrid_event(session: Session, rt: Runtime, event: dict[str, Any], now: datetime) -> int:
    kind = str(event.get("event", ""))[:40]
    message = _message_for_sendgrid(session, event)
    if message is None:
        return 0
    contact = session.get(Contact, message.contact_id)
    detail = {k: str(event[k])[:200] for k in ("type", "reason", "status", "response") if k in event}
    add_event(session, f"email_{kind}", now, contact_id=message.contact_id, message_id=message.id, **detail)
    if kind == "open":
        wake_waiting(session, rt.campaigns, message.contact_id, "opened", now)  # a journey waiting for an open
    if kind == "processed":
        move_status_forward(message, MessageStatus.SENT, now)
        message.sent_at = message.sent_at or now
    elif kind == "delivered":
        if move_status_forward(message, MessageStatus.DELIVERED, now):
            message.delivered_at = now
        message.sent_at = message.sent_at or now
    elif kind == "click":
        message.clicked_at = message.clicked_at or now
    elif kind == "bounce":
        if str(event.get("type", "bounce")) == "bounce":  # hard bounce; "blocked" is a soft one
            move_status_forward(message, MessageStatus.BOUNCED, now)
            message.last_error = f"bounced: {detail.get('reason', '')}"[:500]
            _stop_email(session, rt, contact, BlockReason.BOUNCED, "", now, suppress_it=True)
    elif kind == "dropped":
        move_status_forward(message, MessageStatus.FAILED, now)
        reason = str(event.get("reason", ""))
        message.last_error = f"dropped: {reason}"[:500]
        if any(word in reason.lower() for word in ("bounce", "unsubscribe", "spam", "invalid")):
            _stop_email(session, rt, contact, BlockReason.DROPPED, reason, now, suppress_it=False)
    elif kind == "spamreport":
        _stop_email(session, rt, contact, BlockReason.COMPLAINED, "", now, suppress_it=True)
    elif kind in ("unsubscribe", "group_unsubscribe"):
        if contact is not None:
            unsubscribe(session, rt.campaigns, contact, [Channel.EMAIL], ConsentMethod.PROVIDER, now,
                        "patient:sendgrid")
    return 1


def _stop_email(session: Session, rt: Runtime, contact: Contact | None, reason: BlockReason, detail: str,
                now: datetime, *, suppress_it: bool) -> None:
    if contact is None:
        return
    block_channel(session, contact, Channel.EMAIL, reason, detail, now, "webhook:sendgrid")
    if suppress_it and contact.email:
        suppress(session, rt.suppression_key, Channel.EMAIL, contact.email, block_text(reason, detail), now)
