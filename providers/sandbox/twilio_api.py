"""The Twilio Messages API as the sandbox serves it (the slice patient-drip's SDK calls use).

``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form-encoded, Basic auth) validates and records a
message, or answers with an injected fault or a recipient rule's rejection, in Twilio's error JSON;
``GET`` the same path lists recorded messages (``To``, ``From``, ``DateSent>``/``DateSent<``/``DateSent``,
paging) and ``GET …/Messages/{sid}.json`` fetches one. `routes` holds the routes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Fault, is_http_url
from .handlers import callback_poster, hang, pre_request, read_limited, sandbox_state
from .records import new_twilio_sid, twilio_message_json, twilio_record, utcnow
from .state import SandboxState
from .wire import STATUS_TO_TWILIO_CODE, TWILIO_API_VERSION, retry_headers, twilio_error

MAX_TWILIO_BODY_BYTES = 256 * 1024
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _denied(state: SandboxState, request: Request, sid: str) -> Response | None:
    """Twilio's 401 for wrong credentials, its 404 for another account's path; None when allowed."""
    config = state.config
    if config.accept_any_credentials:
        return None
    creds = _basic_auth(request.headers.get("authorization"))
    if creds != (config.twilio_account_sid, config.twilio_auth_token):
        return twilio_error(20003)
    if sid != config.twilio_account_sid:
        return twilio_error(20404, path=request.url.path)
    return None


async def messages(request: Request) -> Response:
    """``GET``/``POST …/Messages.json``: list or create, behind Basic auth; never a crash."""
    state = sandbox_state(request)
    sid = request.path_params["sid"]
    try:
        denied = _denied(state, request, sid)
        if denied is not None:
            state.count("twilio_rejected")
            return denied
        if request.method == "GET":
            return _list(state, request, sid)
        return await _create(state, request, sid)
    except Exception as exc:  # never crash on junk: answer like Twilio's 500
        state.count("twilio_internal_errors")
        return twilio_error(20500, message=f"Internal Server Error ({type(exc).__name__})")


async def _create(state: SandboxState, request: Request, account_sid: str) -> Response:
    """Create a message: an injected fault, a validation error or a rule's rejection answer first;
    otherwise record it, start its lifecycle and answer 201 (after hanging, for a timeout fault)."""
    await pre_request(state, "twilio")
    body = await read_limited(request, MAX_TWILIO_BODY_BYTES)
    if body is None:
        return twilio_error(21617, status=413, message="Request entity too large")
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        form = {}
    to, from_ = form.get("To", "").strip(), form.get("From", "").strip() or None
    text, service = form.get("Body", ""), form.get("MessagingServiceSid", "").strip() or None
    callback = form.get("StatusCallback", "").strip() or None

    fault = state.next_fault("twilio")
    if fault is not None and not fault.timeout:
        state.count("twilio_rejected")
        return _fault_response(fault, to=to, from_=from_ or "", service=service or "")
    problem = _validate(to, from_, service, text, callback)
    if problem is not None:
        state.count("twilio_rejected")
        return twilio_error(problem, to=to, from_=from_ or "", service=service or "")
    rule = state.rule_for("twilio", to)
    if rule is not None and rule.outcome is None:
        state.count("twilio_rejected")
        return _fault_response(rule.as_fault(), to=to, from_=from_ or "")

    now = utcnow()
    record = twilio_record(
        sid=new_twilio_sid(), account_sid=account_sid, to=to, from_=from_, body=text,
        direction="outbound-api", status="accepted" if service else "queued",
        service_sid=service, status_callback=callback,
        raw={"path": request.url.path, "params": form, "user_agent": request.headers.get("user-agent")},
        now=now,
    )
    state.record(record)
    outcome = rule.outcome if rule else "delivered"
    error_code = rule.error_code if rule else None
    poster = callback_poster(request)
    if not poster.spawn(poster.twilio_lifecycle(record["id"], outcome, error_code)):
        poster.finish_twilio_now(record["id"], outcome, error_code)
    if fault is not None and fault.timeout:
        state.count("twilio_hung")
        await hang(state, fault.hang_ms)
    return JSONResponse(twilio_message_json(record), status_code=201)


def _list(state: SandboxState, request: Request, account_sid: str) -> Response:
    """One page of the account's messages, newest first, filtered as Twilio filters them."""
    state.count("twilio_requests")
    q = request.query_params
    try:
        page = max(0, int(q.get("Page", "0")))
        page_size = min(1000, max(1, int(q.get("PageSize", "50"))))
    except ValueError:
        return twilio_error(20001, status=400, message="Invalid paging parameter")
    bounds: list[tuple[str, datetime]] = []
    for key in ("DateSent>", "DateSent<", "DateSent"):
        if key in q:
            parsed = _parse_date(q[key])
            if parsed is None:
                return twilio_error(20001, status=400, message=f"Invalid {key}")
            bounds.append((key, parsed))
    to, from_ = q.get("To"), q.get("From")

    def keep(m: Mapping[str, Any]) -> bool:
        if m["provider"] != "twilio" or m["account_sid"] != account_sid:
            return False
        if (to and m["to"] != to) or (from_ and m["from"] != from_):
            return False
        sent = m.get("date_sent_ts")
        for key, bound in bounds:
            # Twilio filters on date_sent: a message still queued has none and is not listed.
            if sent is None:
                return False
            moment = datetime.fromtimestamp(sent, UTC)
            if key == "DateSent>" and moment < bound:
                return False
            # A bare date in DateSent< means "up to the end of that day".
            day = timedelta(days=1) if len(q[key]) == 10 else timedelta()
            if key == "DateSent<" and moment > bound + day:
                return False
            if key == "DateSent" and moment.date() != bound.date():
                return False
        return True

    found = [m for m in reversed(state.messages("twilio")) if keep(m)]  # newest first
    chunk = found[page * page_size : (page + 1) * page_size]
    base = f"/{TWILIO_API_VERSION}/Accounts/{account_sid}/Messages.json"
    filters = [(k, v) for k, v in q.multi_items() if k not in ("Page", "PageSize", "PageToken")]

    def page_uri(n: int) -> str:
        return f"{base}?{urlencode([*filters, ('PageSize', page_size), ('Page', n)])}"

    has_next = (page + 1) * page_size < len(found)
    return JSONResponse({
        "end": page * page_size + max(len(chunk) - 1, 0),
        "first_page_uri": page_uri(0),
        "messages": [twilio_message_json(m) for m in chunk],
        "next_page_uri": page_uri(page + 1) + f"&PageToken=PASM{page + 1}" if has_next else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        "start": page * page_size,
        "uri": page_uri(page),
    })


async def message(request: Request) -> Response:
    """``GET …/Messages/{message_sid}.json``: one recorded message, or Twilio's 404."""
    state = sandbox_state(request)
    sid, message_sid = request.path_params["sid"], request.path_params["message_sid"]
    denied = _denied(state, request, sid)
    if denied is not None:
        return denied
    record = state.get_message(message_sid)
    if record is None or record["provider"] != "twilio":
        return twilio_error(20404, path=request.url.path)
    return JSONResponse(twilio_message_json(record))


def _fault_response(fault: Fault, **fmt: str) -> Response:
    """Twilio's answer to `fault`: its code (or the one its status implies) and any Retry-After."""
    code = fault.code or STATUS_TO_TWILIO_CODE.get(fault.status or 500, (fault.status or 500) * 100)
    response = twilio_error(code, fault.status, fault.message, **fmt)
    response.headers.update(retry_headers("twilio", fault.retry_after))
    return response


def _validate(
    to: str, from_: str | None, service: str | None, body: str, callback: str | None
) -> int | None:
    """The Twilio error code for an invalid create request, or None."""
    if not to:
        return 21604
    if not _E164.match(to):
        return 21211
    if not from_ and not service:
        return 21603
    if service and not _MESSAGING_SERVICE_SID.match(service):
        return 21705
    if from_ and not service and not (_E164.match(from_) or _ALPHA_SENDER.match(from_)):
        return 21212
    if not body.strip():
        return 21602
    if len(body) > 1600:
        return 21617
    if callback and not is_http_url(callback):
        return 21609
    return None


def _parse_date(value: str) -> datetime | None:
    """A ``DateSent`` filter value (ISO date or date-time, UTC unless it says otherwise), or None."""
    value = value.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    """(user, password) from a Basic ``Authorization`` header, or None when absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


_BASE = f"/{TWILIO_API_VERSION}/Accounts/{{sid}}"
routes = [
    Route(f"{_BASE}/Messages.json", messages, methods=["GET", "POST"]),
    Route(f"{_BASE}/Messages/{{message_sid}}.json", message, methods=["GET"]),
]
