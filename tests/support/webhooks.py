"""Signed webhook calls as the outside services make them: the booking tool's timestamped HMAC
and SendGrid's ECDSA-signed event batches. Computed here independently of `web/webhooks.py`, so a
test signs the way the documented scheme says, not the way the code under test happens to."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

from patient_drip.providers.sandbox import SendGridSigner


def booking_headers(secret: str, body: bytes, at: datetime | int) -> dict[str, str]:
    """Headers for `POST /webhooks/booking`: X-Drip-Timestamp (unix seconds of `at`, the app's
    clock in tests) and X-Drip-Signature ``sha256=HMAC-SHA256(secret, f"{timestamp}.{body}")``."""
    timestamp = str(at if isinstance(at, int) else int(at.timestamp()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Drip-Timestamp": timestamp, "X-Drip-Signature": f"sha256={digest}",
            "Content-Type": "application/json"}


def sendgrid_headers(signer: SendGridSigner, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers for `POST /webhooks/sendgrid/events` signed by `signer` at `timestamp` (default: the
    wall clock, which is what SendGrid stamps and what the endpoint checks)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            "X-Twilio-Email-Event-Webhook-Signature": signer.sign(body, stamp)}


def calendly_headers(signing_key: str, body: bytes, at: datetime | int) -> dict[str, str]:
    """`Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, f"{t}.{body}")>`, as
    Calendly's webhook-signature documentation describes."""
    t = str(at if isinstance(at, int) else int(at.timestamp()))
    v1 = hmac.new(signing_key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Calendly-Webhook-Signature": f"t={t},v1={v1}", "Content-Type": "application/json"}


def calcom_headers(secret: str, body: bytes) -> dict[str, str]:
    """`X-Cal-Signature-256: <hex HMAC-SHA256(secret, body)>`, as Cal.com signs webhook deliveries."""
    return {"X-Cal-Signature-256": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def calendly_event(event: str, *, email: str, name: str, uri: str, utm_term: str | None = None,
                   rescheduled: bool = False, old_invitee: str | None = None, at: datetime) -> bytes:
    """A Calendly v2 webhook body shaped like the vendor's (invitee.created / invitee.canceled)."""
    import json

    payload = {
        "uri": uri, "email": email, "name": name, "first_name": name.split()[0], "status":
        "canceled" if event == "invitee.canceled" else "active", "rescheduled": rescheduled,
        "old_invitee": old_invitee, "new_invitee": None, "text_reminder_number": None, "timezone": "America/Chicago",
        "created_at": at.isoformat().replace("+00:00", "Z"), "updated_at": at.isoformat().replace("+00:00", "Z"),
        "cancel_url": "https://calendly.com/cancellations/X", "reschedule_url": "https://calendly.com/reschedulings/X",
        "questions_and_answers": [], "tracking": {"utm_campaign": None, "utm_source": "patient-drip",
                                                  "utm_medium": None, "utm_content": None, "utm_term": utm_term,
                                                  "salesforce_uuid": None},
        "scheduled_event": {"uri": "https://api.calendly.com/scheduled_events/EV1", "name": "Consultation",
                            "start_time": "2026-03-05T16:00:00.000000Z", "end_time": "2026-03-05T16:15:00.000000Z"},
    }
    if event == "invitee.canceled":
        payload["cancellation"] = {"canceled_by": name, "reason": "", "canceler_type": "invitee"}
    return json.dumps({"created_at": at.isoformat().replace("+00:00", "Z"),
                       "created_by": "https://api.calendly.com/users/U1", "event": event, "payload": payload}).encode()


def calcom_event(trigger: str, *, uid: str, email: str, name: str, drip: str | None = None,
                 at: datetime) -> bytes:
    """A Cal.com webhook body shaped like the vendor's (BOOKING_CREATED / _RESCHEDULED / _CANCELLED)."""
    import json

    return json.dumps({"triggerEvent": trigger, "createdAt": at.isoformat().replace("+00:00", "Z"), "payload": {
        "type": "consultation", "title": "Consultation", "uid": uid, "bookingId": 17,
        "startTime": "2026-03-05T16:00:00Z", "endTime": "2026-03-05T16:15:00Z", "status": "ACCEPTED",
        "organizer": {"email": "desk@clinic.test", "name": "Front desk", "timeZone": "America/Chicago"},
        "attendees": [{"email": email, "name": name, "timeZone": "America/Chicago", "language": {"locale": "en"}}],
        "responses": {"email": {"label": "Email", "value": email}, "name": {"label": "Name", "value": name}},
        "metadata": {"drip": drip} if drip else {},
    }}).encode()
