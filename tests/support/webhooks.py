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
