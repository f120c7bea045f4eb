"""SendGrid's v3 mail/send as the sandbox serves it.

``POST /v3/mail/send`` (JSON, Bearer auth) validates the payload the way SendGrid does for the fields
patient-drip sends, records the message and answers 202 with ``X-Message-Id``, or answers with an
injected fault or a recipient rule's rejection in SendGrid's error JSON. `routes` holds the route.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import Fault
from .handlers import callback_poster, hang, pre_request, read_limited, sandbox_state
from .records import b64_id, utcnow
from .state import SandboxState
from .wire import SENDGRID_AUTH_ERROR, SENDGRID_ERROR_HELP, SENDGRID_RECIPIENT_ERROR, retry_headers, sendgrid_error

MAX_SENDGRID_BODY_BYTES = 10 * 1024 * 1024  # SendGrid's own limit is 30 MB; plenty here
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")


async def mail_send(request: Request) -> Response:
    """``POST /v3/mail/send``; never a crash (junk gets SendGrid's 500 shape)."""
    state = sandbox_state(request)
    try:
        return await _send(state, request)
    except Exception as exc:  # never crash on junk
        state.count("sendgrid_internal_errors")
        return sendgrid_error(500, f"Internal Server Error ({type(exc).__name__})")


async def _send(state: SandboxState, request: Request) -> Response:
    """Accept one mail: auth, size, an injected fault, validation and a rule's rejection come first;
    then record it, start its event lifecycle and answer 202 (after hanging, for a timeout fault)."""
    config = state.config
    if not config.accept_any_credentials:
        if request.headers.get("authorization") != f"Bearer {config.sendgrid_api_key}":
            state.count("sendgrid_rejected")
            return sendgrid_error(401, SENDGRID_AUTH_ERROR)
    await pre_request(state, "sendgrid")
    body = await read_limited(request, MAX_SENDGRID_BODY_BYTES)
    if body is None:
        return sendgrid_error(413, "The JSON payload you have included in your request is too large.")
    fault = state.next_fault("sendgrid")
    if fault is not None and not fault.timeout:
        state.count("sendgrid_rejected")
        return _fault_response(fault)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict):
        state.count("sendgrid_rejected")
        return sendgrid_error(400, "Bad Request")
    parsed = _parse_mail(payload)
    if isinstance(parsed, Response):
        state.count("sendgrid_rejected")
        return parsed
    rule = state.rule_for("sendgrid", parsed["to"])
    if rule is not None and rule.outcome is None:
        state.count("sendgrid_rejected")
        return _fault_response(rule.as_fault())

    now = utcnow()
    xmid = b64_id()
    record = {
        "provider": "sendgrid",
        "id": xmid,
        "direction": "outbound-api",
        **parsed,
        "status_callback": None,
        "status": "accepted",
        "events": [],
        "created_ts": now.timestamp(),
        "received_at": now.isoformat(),
        "raw": {"path": request.url.path, "json": payload, "user_agent": request.headers.get("user-agent")},
    }
    state.record(record)
    outcome = rule.outcome if rule and rule.outcome else "delivered"
    poster = callback_poster(request)
    if not poster.spawn(poster.sendgrid_lifecycle(xmid, outcome)):
        poster.finish_sendgrid_now(record, outcome)
    if fault is not None and fault.timeout:
        state.count("sendgrid_hung")
        await hang(state, fault.hang_ms)
    return Response(status_code=202, headers={"X-Message-Id": xmid})


def _fault_response(fault: Fault) -> Response:
    """SendGrid's answer to `fault`: a recipient error or a status with its usual message, and any
    Retry-After / X-RateLimit-* headers."""
    if fault.recipient:
        response = sendgrid_error(
            fault.status or 400, fault.message or SENDGRID_RECIPIENT_ERROR,
            fault.field or "personalizations.0.to.0.email", f"{SENDGRID_ERROR_HELP}#message.personalizations.to",
        )
    else:
        status = fault.status or 500
        fallback = "Bad Request" if status < 500 else "Internal Server Error"
        default = {401: SENDGRID_AUTH_ERROR, 429: "too many requests"}.get(status, fallback)
        response = sendgrid_error(status, fault.message or default, fault.field)
    response.headers.update(retry_headers("sendgrid", fault.retry_after))
    return response

# Control API -----------------------------------------------------------------------------


def _parse_mail(payload: dict[str, Any]) -> dict[str, Any] | Response:
    """Minimal v3 mail/send validation; the fields the sandbox records, or SendGrid's 400."""
    help_ = SENDGRID_ERROR_HELP
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return sendgrid_error(
            400, "The personalizations field is required and must have at least one personalization.",
            "personalizations", f"{help_}#-Personalizations-Errors",
        )
    recipients: list[str] = []
    for i, p in enumerate(personalizations):
        to_list = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to_list, list) or not to_list:
            return sendgrid_error(
                400, "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"personalizations.{i}.to", f"{help_}#message.personalizations.to",
            )
        for j, t in enumerate(to_list):
            address = t.get("email") if isinstance(t, dict) else None
            if not isinstance(address, str) or not _EMAIL.match(address):
                return sendgrid_error(
                    400, SENDGRID_RECIPIENT_ERROR, f"personalizations.{i}.to.{j}.email",
                    f"{help_}#message.personalizations.to",
                )
            recipients.append(address)
    sender = payload.get("from")
    sender_email = sender.get("email") if isinstance(sender, dict) else None
    if not isinstance(sender_email, str) or not _EMAIL.match(sender_email):
        return sendgrid_error(
            400, "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter.",
            "from.email", f"{help_}#message.from",
        )
    first = personalizations[0]
    subject = payload.get("subject") or first.get("subject")
    if not payload.get("template_id") and not (isinstance(subject, str) and subject.strip()):
        return sendgrid_error(400, "The subject is required. You can get around this requirement if you use a "
                               "template with a subject defined or if every personalization has a subject defined.",
                               "subject", f"{help_}#message.subject")
    content = payload.get("content")
    if not payload.get("template_id"):
        well_formed = isinstance(content, list) and all(
            isinstance(c, dict) and isinstance(c.get("type"), str) and isinstance(c.get("value"), str)
            for c in content
        )
        if not content or not well_formed:
            return sendgrid_error(
                400, "Unless a valid template_id is provided, the content parameter is required. There "
                "must be at least one defined content block.", "content", f"{help_}#message.content",
            )
        types = [c["type"] for c in content]
        if "text/plain" in types and types[0] != "text/plain":
            return sendgrid_error(
                400, "If present, text/plain content must be first, followed by text/html, followed by "
                "any other content.", "content", f"{help_}#message.content",
            )
    content = content if isinstance(content, list) else []
    headers = {**_str_dict(payload.get("headers")), **_str_dict(first.get("headers"))}
    custom_args = {**_str_dict(payload.get("custom_args")), **_str_dict(first.get("custom_args"))}
    categories = payload.get("categories")
    return {
        "to": recipients[0],
        "recipients": recipients,
        "from": sender_email,
        "from_name": sender.get("name"),
        "subject": subject,
        "text": next((c["value"] for c in content if c.get("type") == "text/plain"), None),
        "html": next((c["value"] for c in content if c.get("type") == "text/html"), None),
        "content_types": [c.get("type") for c in content],
        "headers": headers,
        "custom_args": custom_args,
        "categories": [str(c) for c in categories] if isinstance(categories, list) else [],
        "tracking_settings": payload.get("tracking_settings"),
    }


def _str_dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


routes = [Route("/v3/mail/send", mail_send, methods=["POST"])]
