"""The two providers' HTTP vocabulary as the sandbox speaks it: names, error codes and error bodies.

Owns the Twilio error table (code -> HTTP status and message), SendGrid's error messages, the
outcomes a message can end in, and the functions that build each provider's error JSON. Imports
nothing else of the sandbox, so every other module can use it.
"""

from __future__ import annotations

import math
import time
from typing import Literal

from starlette.responses import JSONResponse

Provider = Literal["twilio", "sendgrid"]
PROVIDERS: tuple[Provider, ...] = ("twilio", "sendgrid")

TWILIO_API_VERSION = "2010-04-01"

# Twilio error codes the sandbox can produce: code -> (HTTP status, message template).
TWILIO_ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "Invalid 'To' Phone Number: {to}"),
    21212: (400, "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by "
                 "the 'To' number: {to}."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (400, "The 'From' phone number provided is not a valid message-capable Twilio phone "
                 "number for this destination/account."),
    21609: (400, "Invalid StatusCallback url"),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (400, "The 'To' phone number: {to}, is not currently reachable using the 'From' "
                 "phone number via SMS."),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21705: (400, "The Messaging Service Sid {service} is invalid."),
}
STATUS_TO_TWILIO_CODE = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}

SENDGRID_AUTH_ERROR = "The provided authorization grant is invalid, expired, or revoked"
SENDGRID_RECIPIENT_ERROR = "Does not contain a valid address."
SENDGRID_ERROR_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

TWILIO_OUTCOMES = ("delivered", "undelivered", "failed")
SENDGRID_OUTCOMES = ("delivered", "bounce", "blocked", "dropped", "deferred", "spamreport", "unsubscribe")


def twilio_error(code: int, status: int | None = None, message: str | None = None, **fmt: str) -> JSONResponse:
    """Twilio's error JSON for `code`: its usual HTTP status unless `status` is given, and its
    message template filled from `fmt` (``to``, ``from_``, ``path``, ``service``) unless `message` is."""
    default_status, template = TWILIO_ERRORS.get(code, (status or 400, "Error"))
    safe = {"to": "", "from_": "", "path": "", "service": "", **fmt}
    body = {
        "code": code,
        "message": message or template.format(**safe),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status or default_status,
    }
    if code == 20003:
        body["detail"] = "Your AccountSid or AuthToken was incorrect."
    return JSONResponse(body, status_code=status or default_status)


def sendgrid_error(status: int, message: str, field: str | None = None, help_: str | None = None) -> JSONResponse:
    """SendGrid v3's error body: one entry in ``errors`` with message, field and help link."""
    return JSONResponse({"errors": [{"message": message, "field": field, "help": help_}]}, status_code=status)


def retry_headers(provider: Provider, retry_after: float | None) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) plus SendGrid's ``X-RateLimit-*``; none without `retry_after`."""
    if retry_after is None:
        return {}
    seconds = max(0, math.ceil(retry_after))
    headers = {"Retry-After": str(seconds)}
    if provider == "sendgrid":
        headers.update({
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + seconds),
        })
    return headers
