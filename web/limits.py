"""Request body limits, enforced while the body streams in: nobody can make the server hold a
large body in memory before a route gets to look at its size.

`BodyLimit` is a plain ASGI middleware. It picks the limit for the path (`body_limit_for`): the
public pages, the provider and booking webhooks, the staff UI and API, and the staff CSV import
each have a setting. A `Content-Length` over the limit is refused before a byte of the body is
read; a chunked (or understated) body is counted as uvicorn hands it over, and the request is
refused as soon as the count passes the limit. uvicorn reads the socket only as fast as the app
asks for the body (it pauses reading past 64 KiB), so at most one limit plus one read buffer is
ever in memory. The refusal is 413 with `Connection: close` and a message that names the limit
and its setting; nothing was stored, because no route got the body.

Hand-written rather than Starlette's `RequestBodyLimitMiddleware` (Starlette ≥ 1.x): ours picks a
limit per path and names it in the refusal, and it works with every FastAPI version the project
accepts. Imports only `settings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patient_drip.settings import Settings

# Room for the multipart framing around an uploaded CSV file (boundaries, part headers, the
# campaign field); the file itself is limited to DRIP_MAX_IMPORT_BYTES.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# SendGrid batches up to about 768 KB of events per post; its endpoint has always allowed 4×
# the webhook limit, so a busy day's batch is never refused.
SENDGRID_EVENTS_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Limit:
    """The most bytes a request body may have on some routes, and the setting that says so."""

    max_bytes: int
    setting: str


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the body passes its limit. An HTTPException, so that FastAPI's
    body parsing lets it through and the app's handler answers 413 (never "error parsing the body")."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(413, detail=refusal_text(limit), headers={"Connection": "close"})


def refusal_text(limit: Limit) -> str:
    return (f"request body larger than {limit.max_bytes} bytes ({_human(limit.max_bytes)}), the most this route "
            f"accepts (set by {limit.setting})")


def _human(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB" if size >= 1024 * 1024 else f"{size / 1024:g} KiB"


def body_limit_for(settings: Settings, path: str) -> Limit:
    """The body limit of a request to `path`."""
    if path.startswith("/webhooks/"):
        if path == "/webhooks/sendgrid/events":
            return Limit(settings.max_body_webhook * SENDGRID_EVENTS_FACTOR, "DRIP_MAX_BODY_WEBHOOK (×4 for SendGrid)")
        return Limit(settings.max_body_webhook, "DRIP_MAX_BODY_WEBHOOK")
    if path == "/admin/import":
        return Limit(settings.max_import_bytes + MULTIPART_OVERHEAD_BYTES, "DRIP_MAX_IMPORT_BYTES")
    if path.startswith(("/admin/", "/api/v1/")) or path in ("/admin", "/api/v1"):
        return Limit(settings.max_body_staff, "DRIP_MAX_BODY_STAFF")
    return Limit(settings.max_body_public, "DRIP_MAX_BODY_PUBLIC")


class BodyLimit:
    """ASGI middleware: refuse (413) any request whose body passes the limit for its path."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(self.settings, scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await _refuse(send, limit)  # before reading a byte of the body
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # Normally the app's exception handler has answered already; a route that let the
            # exception escape (or a raw ASGI app) gets the same answer here.
            if started:
                raise
            await _refuse(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn refuses a malformed Content-Length itself
    return None


async def _refuse(send: Send, limit: Limit) -> None:
    body = json.dumps({"detail": refusal_text(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
