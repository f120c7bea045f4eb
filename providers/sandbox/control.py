"""The sandbox's own control and inspection routes (``/_sandbox/...``) and its inbox page (``GET /``).

Tests, the demo and people use these to read what was recorded (messages, callbacks, counters),
change configuration, inject faults, and make the sandbox call back on demand (an inbound SMS, a
status callback, SendGrid events). All JSON; errors are ``{"error": ...}``. `routes` holds them.
"""

from __future__ import annotations

import html
import json
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .handlers import callback_poster, read_limited, sandbox_state
from .records import fill_events
from .state import SandboxState
from .wire import PROVIDERS

MAX_CONTROL_BODY_BYTES = 1024 * 1024


async def _read_json(request: Request) -> Any:
    """The JSON body (``{}`` when empty); ValueError when too large or not JSON."""
    body = await read_limited(request, MAX_CONTROL_BODY_BYTES)
    if body is None:
        raise ValueError("body too large")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def config(request: Request) -> Response:
    """``GET`` the configuration (and the event-signing public key); ``POST`` changes to it first."""
    state = sandbox_state(request)
    if request.method == "POST":
        try:
            data = await _read_json(request)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            state.update_config(**data)
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
    return JSONResponse({**state.config.public_dict(), "sendgrid_public_key": state.public_key})


async def messages(request: Request) -> Response:
    """``GET`` recorded messages (``?provider=&to=&direction=&limit=``, the last 10,000 by default);
    ``DELETE`` forgets them with the callback log and counters."""
    state = sandbox_state(request)
    if request.method == "DELETE":
        state.reset_messages()
        return JSONResponse({"deleted": True})
    q = request.query_params
    try:
        # Bounded by default: a benchmark may have recorded hundreds of thousands.
        limit = max(1, int(q.get("limit", "10000")))
    except ValueError:
        return _bad("limit must be an integer")
    found = state.messages(q.get("provider"), q.get("to"), None, q.get("direction"))
    shown = found[-limit:]
    return JSONResponse({"count": len(shown), "total": len(found), "messages": shown})


async def faults(request: Request) -> Response:
    """``GET`` faults, latencies and rules; ``POST`` adds to them; ``DELETE`` clears them."""
    state = sandbox_state(request)
    if request.method == "DELETE":
        state.clear_faults()
    elif request.method == "POST":
        try:
            state.apply_faults_json(await _read_json(request))
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
    return JSONResponse(state.faults_snapshot())


async def public_key(request: Request) -> Response:
    """The key that verifies the sandbox's SendGrid event signatures."""
    return JSONResponse({"public_key": sandbox_state(request).public_key})


async def inbound(request: Request) -> Response:
    """Text the app as a patient would (``{"from", "to", "body"}``); answer with the app's own reply."""
    state = sandbox_state(request)
    try:
        data = await _read_json(request)
        from_, to, text = (str(data[k]) for k in ("from", "to", "body"))
    except (ValueError, KeyError, TypeError):
        return _bad('expected {"from": "+1...", "to": "+1...", "body": "..."}')
    to = to or state.config.twilio_service_number
    try:
        response = await callback_poster(request).post_inbound(from_, to, text)
    except LookupError as exc:
        return _bad(str(exc), 409)
    except httpx.HTTPError as exc:
        return _bad(f"inbound webhook failed: {type(exc).__name__}: {exc}", 502)
    return Response(
        response.content,
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "text/plain"),
    )


async def twilio_status(request: Request) -> Response:
    """Post a signed status callback now (``{"sid", "status", "error_code"?, "url"?}``); its log entry."""
    try:
        data = await _read_json(request)
        sid, status = str(data["sid"]), str(data["status"])
        error_code = int(data["error_code"]) if data.get("error_code") is not None else None
        url = data.get("url")
    except (ValueError, KeyError, TypeError):
        return _bad('expected {"sid": "SM...", "status": "delivered", "error_code": null}')
    try:
        result = await callback_poster(request).push_twilio_status(sid, status, error_code, url)
    except LookupError as exc:
        return _bad(str(exc), 404)
    return JSONResponse(result)


async def sendgrid_events(request: Request) -> Response:
    """Sign and post the given events now (a list, or ``{"events": [...], "url": ...}``); its log entry."""
    try:
        data = await _read_json(request)
        url = None
        if isinstance(data, dict):
            url, data = data.get("url"), data.get("events")
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data) or not data:
            raise ValueError
    except ValueError:
        return _bad('expected a non-empty JSON array of event objects (or {"events": [...], "url": ...})')
    try:
        result = await callback_poster(request).post_sendgrid_events(fill_events(data), url)
    except LookupError as exc:
        return _bad(str(exc), 409)
    return JSONResponse(result)


async def callbacks(request: Request) -> Response:
    """The log of callbacks attempted (``?kind=`` twilio_status, twilio_inbound, sendgrid_events)."""
    return JSONResponse({"callbacks": sandbox_state(request).callbacks(request.query_params.get("kind"))})


async def stats(request: Request) -> Response:
    """Every counter, and how many message lifecycles are still pending."""
    poster = request.app.state.callbacks
    pending = len(poster.tasks) if poster else 0
    return JSONResponse({**sandbox_state(request).stats_snapshot(), "pending_callbacks": pending})


async def inbox(request: Request) -> Response:
    """``GET /``: the last 200 messages as a page for people (``?provider=&to=``)."""
    state = sandbox_state(request)
    q = request.query_params
    provider = q.get("provider") if q.get("provider") in PROVIDERS else None
    messages = state.messages(provider, q.get("to") or None, limit=200)
    return HTMLResponse(
        _inbox_html(messages, state),
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"},
    )


def _inbox_html(messages: list[dict[str, Any]], state: SandboxState) -> str:
    e = html.escape
    rows = []
    for m in reversed(messages):
        meta = [
            f"<b>{e(m['provider'])}</b> · {e(str(m.get('direction', '')))} · {e(str(m.get('status', '')))}",
            f"to <code>{e(str(m['to']))}</code> from <code>{e(str(m.get('from') or ''))}</code>",
            f"<small>{e(m['received_at'])} · id {e(m['id'])}</small>",
        ]
        if m.get("categories"):
            meta.append(f"<small>categories: {e(', '.join(m['categories']))}</small>")
        subject = f"<h3>{e(m['subject'])}</h3>" if m.get("subject") else ""
        text = f"<pre>{e((m.get('text') or '')[:5000])}</pre>"
        extra = ""
        if m.get("headers"):
            header_lines = "".join(f"<li><code>{e(k)}: {e(v)}</code></li>" for k, v in m["headers"].items())
            extra += f"<details><summary>headers</summary><ul>{header_lines}</ul></details>"
        if m.get("html"):
            # sandbox="" gives the email no scripts, forms or same-origin access.
            extra += (
                "<details><summary>HTML part</summary>"
                f'<iframe sandbox="" srcdoc="{e(m["html"], quote=True)}"></iframe></details>'
            )
        rows.append(f"<article><div class=meta>{'<br>'.join(meta)}</div>{subject}{text}{extra}</article>")
    body = "".join(rows) or "<p>Nothing received yet.</p>"
    config = state.config
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>patient-drip sandbox inbox</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#222}}
article{{border:1px solid #ccc;border-radius:6px;padding:.75rem;margin:.75rem 0}}
.meta{{color:#555;font-size:.9rem}} pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}}
iframe{{width:100%;height:30rem;border:1px solid #ddd;background:#fff}} h3{{margin:.5rem 0}}
</style></head><body>
<h1>Sandbox inbox</h1>
<p>What patients would have received ({len(messages)} shown, newest first).
<a href="/">all</a> · <a href="/?provider=sendgrid">email</a> · <a href="/?provider=twilio">SMS</a></p>
<p><small>Twilio account <code>{e(config.twilio_account_sid)}</code> ·
SendGrid event key <code>{e(state.public_key[:24])}…</code></small></p>
{body}
</body></html>"""


routes = [
    Route("/_sandbox/config", config, methods=["GET", "POST"]),
    Route("/_sandbox/messages", messages, methods=["GET", "DELETE"]),
    Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
    Route("/_sandbox/sendgrid-public-key", public_key, methods=["GET"]),
    Route("/_sandbox/twilio/inbound", inbound, methods=["POST"]),
    Route("/_sandbox/twilio/status", twilio_status, methods=["POST"]),
    Route("/_sandbox/sendgrid/events", sendgrid_events, methods=["POST"]),
    Route("/_sandbox/callbacks", callbacks, methods=["GET"]),
    Route("/_sandbox/stats", stats, methods=["GET"]),
    Route("/", inbox, methods=["GET"]),
]
