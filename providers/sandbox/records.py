"""What the sandbox records and how each provider shows it back.

Owns the shape of a recorded message (one plain JSON-ready dict per message, both providers),
Twilio's Messages-resource JSON for it, the events SendGrid would post for it, ids in each
provider's style, and SMS segment counting.
"""

from __future__ import annotations

import base64
import math
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from .wire import TWILIO_API_VERSION


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def rfc2822(moment: datetime | None) -> str | None:
    """`moment` as Twilio writes dates (``Mon, 01 Jan 2024 12:00:00 +0000``); None stays None."""
    return format_datetime(moment.astimezone(UTC)) if moment else None


def b64_id(nbytes: int = 16) -> str:
    """A random URL-safe id in SendGrid's style (X-Message-Id, sg_event_id)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=")


def new_twilio_sid(prefix: str = "SM") -> str:
    """A random Twilio-style sid: `prefix` and 32 hex digits."""
    return prefix + uuid.uuid4().hex


_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(body: str) -> int:
    """Segments Twilio would bill: GSM-7 (160/153 septets) unless one character forces UCS-2
    (70/67 UTF-16 units) -- a single curly quote or non-breaking space doubles the cost."""
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENDED for c in body):
        septets = sum(2 if c in _GSM7_EXTENDED else 1 for c in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def twilio_record(
    *, sid: str, account_sid: str, to: str, from_: str | None, body: str, direction: str,
    status: str, service_sid: str | None, status_callback: str | None, raw: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The record of one Twilio message (outbound, inbound or a TwiML reply) received at `now`."""
    return {
        "provider": "twilio",
        "id": sid,
        "direction": direction,
        "to": to,
        "from": from_,
        "subject": None,
        "text": body,
        "html": None,
        "headers": {},
        "custom_args": {},
        "categories": [],
        "tracking_settings": None,
        "status_callback": status_callback,
        "status": status,
        "error_code": None,
        "account_sid": account_sid,
        "messaging_service_sid": service_sid,
        "num_segments": sms_segments(body),
        "date_created": rfc2822(now),
        "date_updated": rfc2822(now),
        "date_sent": rfc2822(now) if direction != "outbound-api" else None,
        "date_sent_ts": now.timestamp() if direction != "outbound-api" else None,
        "created_ts": now.timestamp(),
        "received_at": now.isoformat(),
        "raw": raw,
    }


def twilio_message_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded Twilio message as the Messages resource represents it."""
    uri = f"/{TWILIO_API_VERSION}/Accounts/{record['account_sid']}/Messages/{record['id']}.json"
    service = record.get("messaging_service_sid")
    queued_via_service = service and record["status"] == "accepted"
    return {
        "account_sid": record["account_sid"],
        "api_version": TWILIO_API_VERSION,
        "body": record["text"],
        "date_created": record["date_created"],
        "date_sent": record.get("date_sent"),
        "date_updated": record["date_updated"],
        "direction": record.get("direction", "outbound-api"),
        "error_code": record.get("error_code"),
        "error_message": None,
        "from": record["from"],
        "messaging_service_sid": service,
        "num_media": "0",
        # Twilio reports 0 segments until a Messaging Service has picked a sender.
        "num_segments": "0" if queued_via_service else str(record["num_segments"]),
        "price": None,
        "price_unit": "USD",
        "sid": record["id"],
        "status": record["status"],
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": record["to"],
        "uri": uri,
    }


def sendgrid_events(record: Mapping[str, Any], outcome: str) -> list[dict[str, Any]]:
    """The events SendGrid would post for `record` ending in `outcome`."""
    xmid = record["id"]
    categories = record.get("categories") or []
    ts = int(time.time())
    base: dict[str, Any] = dict(record.get("custom_args") or {})  # flattened, as SendGrid does
    base.update(
        {
            "email": record["to"],
            "timestamp": ts,
            "smtp-id": f"<{xmid}@ismtpd0001p1lon1.sendgrid.net>",
            "sg_message_id": f"{xmid}.filterdrecv-5bd6c5d4-sandbox-1-{ts:X}-0.0",
        }
    )
    if categories:
        base["category"] = categories[0] if len(categories) == 1 else list(categories)

    def event(name: str, **extra: Any) -> dict[str, Any]:
        return {**base, "event": name, "sg_event_id": b64_id(), **extra}

    processed = event("processed", send_at=0)
    delivered = event("delivered", response="250 2.0.0 OK", tls=1, ip="127.0.0.1")
    if outcome == "bounce":
        return [processed, event(
            "bounce", type="bounce", status="5.1.1", bounce_classification="Invalid Address", tls=1,
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
        )]
    if outcome == "blocked":
        return [processed, event(
            "bounce", type="blocked", status="5.7.1", bounce_classification="Reputation", tls=1,
            reason="550 5.7.1 Message rejected due to local policy",
        )]
    if outcome == "dropped":
        return [processed, event("dropped", reason="Bounced Address", status="5.0.0")]
    if outcome == "deferred":
        return [processed, event("deferred", response="451 4.3.2 try again later", attempt="1"), delivered]
    if outcome == "spamreport":
        return [processed, delivered, event("spamreport")]
    if outcome == "unsubscribe":
        return [processed, delivered, event("unsubscribe")]
    return [processed, delivered]


def fill_events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Caller-given SendGrid events with ``timestamp`` (now) and ``sg_event_id`` filled in where missing."""
    now_ts = int(time.time())
    return [{"timestamp": now_ts, "sg_event_id": b64_id(), **e} for e in events]
