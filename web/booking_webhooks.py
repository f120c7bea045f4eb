"""The scheduling tools' webhooks, each verified the way its vendor documents, before anything is read:

- `/webhooks/calendly`: `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex>`, HMAC-SHA256 with
  the subscription's signing key over `"{t}.{body}"`; a `t` more than 3 minutes from our clock is
  refused (Calendly's own advice against replays). Events `invitee.created`, `invitee.canceled`
  (a reschedule is a cancel with `rescheduled: true` plus a create naming the old invitee) and
  `invitee_no_show.created`.
- `/webhooks/calcom`: `X-Cal-Signature-256: <hex>`, HMAC-SHA256 with the webhook's secret over the
  body. Cal.com signs no timestamp, so the body's `createdAt` must be within 5 minutes of our clock
  (a replay after that is refused) and the booking's uid makes a replay inside it harmless.
  Triggers `BOOKING_CREATED`, `BOOKING_RESCHEDULED`, `BOOKING_CANCELLED`, `BOOKING_NO_SHOW_UPDATED`.
- `/webhooks/booking`: any other tool: `X-Drip-Timestamp` (unix seconds, at most 5 minutes off) and
  `X-Drip-Signature: sha256=<hex>`, HMAC-SHA256 of `"{timestamp}.{body}"` with a shared secret;
  `event` is booked (default), cancelled, rescheduled or no_show.

No secret configured: 403 for everything. Bad or missing signature: 403; stale or missing time:
401. The parsed notice goes to `contacts.bookings.record_booking`, the one rule; unknown people are
recorded for staff, not dropped, and the scheduler gets 200 either way (so it does not retry).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from patient_drip.contacts.bookings import BookingNotice, record_booking
from patient_drip.models import BookingKind
from patient_drip.web.deps import get_now, get_runtime

log = logging.getLogger("drip.webhooks")
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

MAX_BOOKING_BYTES = 256 * 1024  # Cal.com bodies carry the whole booking; still far below this
BOOKING_MAX_SKEW_SECONDS = 300  # generic and Cal.com calls further than this from our clock are refused
CALENDLY_MAX_SKEW_SECONDS = 180  # Calendly's own recommendation

CALENDLY_KINDS = {"invitee.created": BookingKind.BOOKED, "invitee.canceled": BookingKind.CANCELLED,
                  "invitee_no_show.created": BookingKind.NO_SHOW}
CALCOM_KINDS = {"BOOKING_CREATED": BookingKind.BOOKED, "BOOKING_RESCHEDULED": BookingKind.RESCHEDULED,
                "BOOKING_CANCELLED": BookingKind.CANCELLED, "BOOKING_NO_SHOW_UPDATED": BookingKind.NO_SHOW}
GENERIC_KINDS = {"booked": BookingKind.BOOKED, "cancelled": BookingKind.CANCELLED,
                 "rescheduled": BookingKind.RESCHEDULED, "no_show": BookingKind.NO_SHOW}


class Refusal(Exception):
    """Why a call is refused, with its status code (401 time, 403 signature, 400/413 body)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why

    def response(self) -> JSONResponse:
        log.warning("booking webhook refused: %s", self.why)
        label = {401: "unauthorized", 403: "forbidden"}.get(self.status, "refused")
        return JSONResponse({"error": f"{label}: {self.why}"}, status_code=self.status)


# -- signatures --------------------------------------------------------------------------------------


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def booking_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Drip-Signature of the generic webhook: ``sha256=`` + hex HMAC-SHA256 of
    ``f"{timestamp}.{body}"`` (the timestamp is X-Drip-Timestamp, unix seconds)."""
    return "sha256=" + hex_hmac(secret, timestamp.encode() + b"." + body)


def _unix_seconds(value: str, name: str, now: datetime, max_skew: int) -> None:
    """Refuse (401) a missing, malformed, stale or future unix-seconds timestamp."""
    if not value:
        raise Refusal(401, f"missing {name}")
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise Refusal(401, f"{name} must be unix seconds")
    try:
        moment = datetime.fromtimestamp(int(value), timezone.utc)
    except (ValueError, OverflowError, OSError):  # year 33658: no real call is signed then
        raise Refusal(401, f"{name} is not a time we can read") from None
    _within(moment, name, now, max_skew)


def _within(moment: datetime, name: str, now: datetime, max_skew: int) -> None:
    skew = (moment - now).total_seconds()
    if skew < -max_skew:
        raise Refusal(401, f"{name} is more than {max_skew // 60} minutes old (replay?)")
    if skew > max_skew:
        raise Refusal(401, f"{name} is more than {max_skew // 60} minutes in the future")


def _same(given: str, expected: str, header: str) -> None:
    if not given:
        raise Refusal(403, f"missing {header}")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Refusal(403, f"bad {header}")


def verify_calendly(secret: str, header: str, body: bytes, now: datetime) -> None:
    """Calendly-Webhook-Signature: `t=<seconds>,v1=<hex HMAC of "t.body">`."""
    if not header:
        raise Refusal(403, "missing Calendly-Webhook-Signature")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    _unix_seconds(parts.get("t", "").strip(), "the signature's t", now, CALENDLY_MAX_SKEW_SECONDS)
    _same(parts.get("v1", ""), hex_hmac(secret, parts["t"].strip().encode() + b"." + body),
          "Calendly-Webhook-Signature")


def verify_calcom(secret: str, header: str, body: bytes) -> None:
    """X-Cal-Signature-256: hex HMAC-SHA256 of the body."""
    _same(header, hex_hmac(secret, body), "X-Cal-Signature-256")


def verify_generic(secret: str, timestamp: str, signature: str, body: bytes, now: datetime) -> None:
    if not signature:
        raise Refusal(403, "missing X-Drip-Signature")
    _unix_seconds(timestamp, "X-Drip-Timestamp", now, BOOKING_MAX_SKEW_SECONDS)
    _same(signature, booking_signature(secret, timestamp, body), "X-Drip-Signature")


# -- the vendors' payloads ---------------------------------------------------------------------------


def _text(value: object, limit: int = 320) -> str | None:
    """A string field from outside, made storable (no NUL, no lone surrogates), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    cleaned = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    return cleaned[:limit] or None


def _when(value: object) -> datetime | None:
    text = _text(value, 40)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def calendly_notice(data: Mapping[str, Any]) -> BookingNotice | None:
    """The notice in a Calendly webhook (None for an event we do not act on)."""
    kind = CALENDLY_KINDS.get(str(data.get("event")))
    payload = _mapping(data.get("payload"))
    if kind is None:
        return None
    invitee = payload
    if kind == BookingKind.NO_SHOW:  # the no-show payload names the invitee by uri and carries no email
        invitee = _mapping(payload.get("invitee")) or payload
    if kind == BookingKind.CANCELLED and payload.get("rescheduled") is True:
        kind = BookingKind.RESCHEDULED
    if kind == BookingKind.BOOKED and payload.get("old_invitee"):
        kind = BookingKind.RESCHEDULED  # the new half of a reschedule: still the same booking
    tracking = _mapping(invitee.get("tracking"))
    return BookingNotice(
        provider="calendly", kind=kind, external_id=_text(invitee.get("uri") or payload.get("uri"), 300),
        email=_text(invitee.get("email")), phone=_text(invitee.get("text_reminder_number"), 40),
        name=_text(invitee.get("name"), 200) or "", tracking=_text(tracking.get("utm_term"), 200),
        starts_at=_when(_mapping(invitee.get("scheduled_event")).get("start_time")))


def calcom_notice(data: Mapping[str, Any]) -> BookingNotice | None:
    """The notice in a Cal.com webhook (None for a trigger we do not act on, such as PING)."""
    kind = CALCOM_KINDS.get(str(data.get("triggerEvent")))
    if kind is None:
        return None
    payload = _mapping(data.get("payload"))
    attendees = payload.get("attendees")
    attendee = _mapping(attendees[0]) if isinstance(attendees, list) and attendees else {}
    responses = _mapping(payload.get("responses"))
    email = attendee.get("email") or _mapping(responses.get("email")).get("value")
    phone = attendee.get("phoneNumber") or _mapping(responses.get("attendeePhoneNumber")).get("value")
    return BookingNotice(
        provider="calcom", kind=kind, external_id=_text(payload.get("uid"), 300), email=_text(email),
        phone=_text(phone, 40), name=_text(attendee.get("name"), 200) or "",
        tracking=_text(_mapping(payload.get("metadata")).get("drip"), 200), starts_at=_when(payload.get("startTime")))


def generic_notice(data: Mapping[str, Any]) -> BookingNotice:
    """The notice in a generic booking call: email and/or phone (or our tracking token), `event`."""
    event = str(data.get("event") or "booked")
    kind = GENERIC_KINDS.get(event)
    if kind is None:
        raise Refusal(400, f"event must be one of {', '.join(GENERIC_KINDS)}, not {event[:40]!r}")
    notice = BookingNotice(
        provider="generic", kind=kind, external_id=_text(data.get("id"), 300), email=_text(data.get("email")),
        phone=_text(data.get("phone"), 40), name=_text(data.get("name"), 200) or "",
        tracking=_text(data.get("tracking"), 200), starts_at=_when(data.get("starts_at")))
    if not (notice.email or notice.phone or notice.tracking):
        raise Refusal(400, "give the person's email or phone (or the tracking value from the booking link)")
    return notice


# -- routes ------------------------------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BOOKING_BYTES:
        raise Refusal(413, "body too large")
    raw = await request.body()
    if len(raw) > MAX_BOOKING_BYTES:
        raise Refusal(413, "body too large")
    return raw


def _json(raw: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refusal(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise Refusal(400, "body must be a JSON object")
    return data


async def _apply(request: Request, notice: BookingNotice | None, actor: str) -> Response:
    if notice is None:
        return JSONResponse({"status": "ignored"})
    rt, now = get_runtime(request), get_now(request)

    def apply() -> Response:  # database work runs off the event loop
        with rt.sessions() as session, session.begin():
            result = record_booking(session, rt.tokens, rt.campaigns, notice, now, actor)
        changed = {BookingKind.BOOKED: "enrollments_ended", BookingKind.CANCELLED: "enrollments_reopened"}
        answer: dict[str, object] = {"status": result.status, "matched": result.contact_id is not None}
        if notice.kind in changed:
            answer[changed[notice.kind]] = result.enrollments_changed
        return JSONResponse(answer)

    return await run_in_threadpool(apply)


async def _handle(request: Request, secret: str, setting: str, verify: Callable[[bytes, datetime], None],
                  parse: Callable[[Mapping[str, Any]], BookingNotice | None], actor: str) -> Response:
    try:
        if not secret:
            raise Refusal(403, f"{setting} is not configured")
        raw = await _body(request)
        verify(raw, get_now(request))
        notice = parse(_json(raw))
    except Refusal as refusal:
        return refusal.response()
    return await _apply(request, notice, actor)


@router.post("/calendly", summary="Calendly: invitee created / canceled / no-show (Calendly-Webhook-Signature)")
async def calendly(request: Request) -> Response:
    settings = get_runtime(request).settings
    header = request.headers.get("calendly-webhook-signature", "")
    return await _handle(request, settings.calendly_signing_key.get_secret_value(), "DRIP_CALENDLY_SIGNING_KEY",
                         lambda raw, now: verify_calendly(settings.calendly_signing_key.get_secret_value(), header,
                                                          raw, now),
                         calendly_notice, "webhook:calendly")


def _calcom_parse(data: Mapping[str, Any], now: datetime) -> BookingNotice | None:
    created = _when(data.get("createdAt"))
    if created is None:
        raise Refusal(401, "missing createdAt")
    _within(created, "createdAt", now, BOOKING_MAX_SKEW_SECONDS)
    return calcom_notice(data)


@router.post("/calcom", summary="Cal.com: booking created / rescheduled / cancelled / no-show (X-Cal-Signature-256)")
async def calcom(request: Request) -> Response:
    settings = get_runtime(request).settings
    header = request.headers.get("x-cal-signature-256", "")
    now = get_now(request)
    return await _handle(request, settings.calcom_webhook_secret.get_secret_value(), "DRIP_CALCOM_WEBHOOK_SECRET",
                         lambda raw, _now: verify_calcom(settings.calcom_webhook_secret.get_secret_value(), header,
                                                         raw),
                         lambda data: _calcom_parse(data, now), "webhook:calcom")


@router.post("/booking", summary="Any scheduler: booked / cancelled / rescheduled / no_show "
                                 "(X-Drip-Signature: HMAC-SHA256 of X-Drip-Timestamp + '.' + body)")
async def booking(request: Request) -> Response:
    settings = get_runtime(request).settings
    timestamp = request.headers.get("x-drip-timestamp", "").strip()
    signature = request.headers.get("x-drip-signature", "")
    return await _handle(request, settings.booking_webhook_secret.get_secret_value(), "DRIP_BOOKING_WEBHOOK_SECRET",
                         lambda raw, now: verify_generic(settings.booking_webhook_secret.get_secret_value(),
                                                         timestamp, signature, raw, now),
                         generic_notice, "webhook:booking")
