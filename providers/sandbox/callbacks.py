"""`CallbackPoster`: the sandbox calling back like the real services, on the server's event loop.

Owns each accepted message's lifecycle (Twilio: sent -> delivered / undelivered / failed, with a
signed status callback per step; SendGrid: the events of its outcome, signed and posted to the
event webhook), inbound SMS posted to the app as a patient would text (and the TwiML reply
recorded), and the HTTP posting itself with its log entry. Never blocks an API request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from urllib.parse import urlencode

import httpx

from .config import is_loopback_url
from .records import new_twilio_sid, rfc2822, sendgrid_events, sms_segments, twilio_record, utcnow
from .signing import twilio_signature
from .state import SandboxState
from .wire import TWILIO_API_VERSION

T = TypeVar("T")


class CallbackPoster:
    """Delivers status callbacks and event webhooks without ever blocking an API request.

    Each accepted message gets one task (sent -> delivered, or processed -> delivered ...) with
    small delays; tasks beyond `max_pending_callbacks` are not started (the message jumps to its
    final status and ``callbacks_dropped`` is counted). Concurrent HTTP calls are bounded by a
    semaphore.
    """

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.loop = asyncio.get_running_loop()
        config = state.config
        self.client = httpx.AsyncClient(timeout=config.callback_timeout_s)
        self.semaphore = asyncio.Semaphore(config.callback_concurrency)
        self.tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        """Cancel pending lifecycles and close the HTTP client (at server shutdown)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> bool:
        """Start `coro` as a background task; False (and `coro` closed) when too many are pending."""
        if len(self.tasks) >= self.state.config.max_pending_callbacks:
            coro.close()
            self.state.count("callbacks_dropped")
            return False
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def run_threadsafe(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the server loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _delay(self, factor: float = 1.0) -> None:
        await asyncio.sleep(self.state.config.callback_delay_ms * factor / 1000)

    # Twilio ----------------------------------------------------------------------------------

    def twilio_params(self, record: Mapping[str, Any], status: str, error_code: int | None) -> dict[str, str]:
        """The form Twilio posts to a StatusCallback for `record` reaching `status`."""
        config = self.state.config
        params = {
            "AccountSid": record["account_sid"],
            "ApiVersion": TWILIO_API_VERSION,
            "From": record["from"] or config.twilio_service_number,
            "MessageSid": record["id"],
            "MessageStatus": status,
            "SmsSid": record["id"],
            "SmsStatus": status,
            "To": record["to"],
        }
        if record.get("messaging_service_sid"):
            params["MessagingServiceSid"] = record["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status == "delivered":
            params["RawDlrDoneDate"] = utcnow().strftime("%y%m%d%H%M")
        return params

    async def post_twilio_status(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Sign and POST a status callback for message `sid` (to its StatusCallback or `url`)."""
        record = self.state.get_message(sid)
        if record is None or record["provider"] != "twilio":
            raise LookupError(f"no Twilio message {sid}")
        target = url or record.get("status_callback")
        if not target:
            raise LookupError(f"message {sid} has no StatusCallback")
        params = self.twilio_params(record, status, error_code)
        return await self.post_form("twilio_status", target, params, message_id=sid)

    async def post_form(
        self, kind: str, url: str, params: Mapping[str, str], *, message_id: str | None = None
    ) -> dict[str, Any]:
        """POST `params` form-encoded and Twilio-signed to `url`; return the callback log entry."""
        headers = _twilio_headers(self.state.config.twilio_auth_token, url, params)
        return await self._post(kind, url, urlencode(params).encode(), headers, message_id, params)

    async def push_twilio_status(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Set message `sid` to `status` now and post its signed callback (tests of out-of-order or
        late callbacks); LookupError when the message or a target is missing."""
        self.set_twilio_status(sid, status, error_code)
        return await self.post_twilio_status(sid, status, error_code, url)

    async def twilio_lifecycle(self, sid: str, outcome: str, error_code: int | None) -> None:
        """Take an accepted message to `outcome` step by step, calling back at each step when asked to."""
        steps: list[tuple[str, int | None]] = (
            [("failed", error_code)] if outcome == "failed" else [("sent", None), (outcome, error_code)]
        )
        for status, code in steps:
            await self._delay()
            self.set_twilio_status(sid, status, code)
            record = self.state.get_message(sid)
            if record and record.get("status_callback") and self.state.config.twilio_status_callbacks:
                with contextlib.suppress(LookupError):
                    await self.post_twilio_status(sid, status, code)

    def set_twilio_status(self, sid: str, status: str, error_code: int | None) -> None:
        """Record that message `sid` reached `status` (dates as Twilio keeps them); unknown sids are ignored."""
        now = utcnow()
        fields: dict[str, Any] = {"status": status, "date_updated": rfc2822(now)}
        if status == "sent":
            fields["date_sent"] = rfc2822(now)
            fields["date_sent_ts"] = now.timestamp()
        if error_code is not None:
            fields["error_code"] = error_code
        self.state.update_message(sid, **fields)

    def finish_twilio_now(self, sid: str, outcome: str, error_code: int | None) -> None:
        """Used when callbacks are saturated: record the final status without calling back."""
        if outcome != "failed":
            self.set_twilio_status(sid, "sent", None)
        self.set_twilio_status(sid, outcome, error_code)

    async def post_inbound(self, from_: str, to: str, body: str) -> httpx.Response:
        """POST a signed inbound-SMS webhook to twilio_inbound_url; return the app's answer."""
        config = self.state.config
        url = config.twilio_inbound_url
        if not url:
            raise LookupError("twilio_inbound_url is not configured")
        if not (config.allow_remote_callbacks or is_loopback_url(url)):
            raise LookupError("twilio_inbound_url is not a loopback URL (allow_remote_callbacks is off)")
        sid = new_twilio_sid()
        us = "US" if from_.startswith("+1") else ""
        params = {
            "ToCountry": "US" if to.startswith("+1") else "",
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": body,
            "FromCountry": us,
            "To": to,
            "ToZip": "",
            "NumSegments": str(sms_segments(body)),
            "MessageSid": sid,
            "AccountSid": config.twilio_account_sid,
            "From": from_,
            "ApiVersion": TWILIO_API_VERSION,
        }
        now = utcnow()
        self.state.record(
            twilio_record(
                sid=sid, account_sid=config.twilio_account_sid, to=to, from_=from_, body=body,
                direction="inbound", status="received", service_sid=None, status_callback=None,
                raw={"params": params}, now=now,
            )
        )
        headers = _twilio_headers(config.twilio_auth_token, url, params)
        started = time.monotonic()
        entry: dict[str, Any] = {"kind": "twilio_inbound", "url": url, "message_id": sid, "at": now.isoformat()}
        try:
            async with self.semaphore:
                response = await self.client.post(url, content=urlencode(params).encode(), headers=headers)
        except httpx.HTTPError as exc:
            entry.update(status_code=None, error=f"{type(exc).__name__}: {exc}", elapsed_ms=_ms(started))
            self.state.log_callback(entry)
            raise
        entry.update(status_code=response.status_code, error=None, elapsed_ms=_ms(started))
        self.state.log_callback(entry)
        for reply in _twiml_messages(response.text):
            # Twilio would send a <Message> reply back to the patient: record it like one.
            reply_sid = new_twilio_sid()
            self.state.record(
                twilio_record(
                    sid=reply_sid, account_sid=config.twilio_account_sid, to=from_, from_=to,
                    body=reply, direction="outbound-reply", status="delivered", service_sid=None,
                    status_callback=None, raw={"twiml": response.text[:10_000]}, now=utcnow(),
                )
            )
        return response

    # SendGrid --------------------------------------------------------------------------------

    async def sendgrid_lifecycle(self, record_id: str, outcome: str) -> None:
        """After a short delay, record the events of `outcome` and post them to the event webhook (if set)."""
        await self._delay()
        record = self.state.get_message(record_id)
        if record is None:
            return
        events = sendgrid_events(record, outcome)
        self._set_sendgrid_events(record_id, events)
        if self.state.config.sendgrid_event_url:
            await self.post_sendgrid_events(events)

    def finish_sendgrid_now(self, record: Mapping[str, Any], outcome: str) -> None:
        """Used when callbacks are saturated: record the final events without posting them."""
        self._set_sendgrid_events(record["id"], sendgrid_events(record, outcome))

    def _set_sendgrid_events(self, record_id: str, events: list[dict[str, Any]]) -> None:
        # A SendGrid message's status is its latest event; `events` keeps their names in order.
        self.state.update_message(record_id, status=events[-1]["event"], events=[e["event"] for e in events])

    async def post_sendgrid_events(self, events: list[dict[str, Any]], url: str | None = None) -> dict[str, Any]:
        """Sign and POST `events` (a JSON array) to sendgrid_event_url or `url`."""
        target = url or self.state.config.sendgrid_event_url
        if not target:
            raise LookupError("sendgrid_event_url is not configured")
        # SendGrid's body: compact JSON followed by CRLF (sendgrid-python's own test vector
        # signs exactly that); UTF-8, so webhook handlers must verify the raw bytes.
        payload = (json.dumps(events, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\r\n").encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SendGrid Event API",
            "X-Twilio-Email-Event-Webhook-Signature": self.state.signer.sign(payload, timestamp),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        message_id = str(events[0].get("sg_message_id", "")).split(".")[0] if events else None
        return await self._post("sendgrid_events", target, payload, headers, message_id, events)

    # HTTP ------------------------------------------------------------------------------------

    async def _post(
        self, kind: str, url: str, content: bytes, headers: dict[str, str],
        message_id: str | None, sent: Any,
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": kind, "url": url, "message_id": message_id, "at": utcnow().isoformat(), "sent": sent,
        }
        started = time.monotonic()
        if not (self.state.config.allow_remote_callbacks or is_loopback_url(url)):
            entry.update(
                status_code=None, body=None, elapsed_ms=0,
                error="skipped: not a loopback URL (allow_remote_callbacks is off)",
            )
            self.state.log_callback(entry)
            return entry
        try:
            async with self.semaphore:
                response = await self.client.post(url, content=content, headers=headers)
            entry.update(status_code=response.status_code, error=None, body=response.text[:2000])
        except httpx.HTTPError as exc:
            entry.update(status_code=None, error=f"{type(exc).__name__}: {exc}", body=None)
        entry["elapsed_ms"] = _ms(started)
        self.state.log_callback(entry)
        return entry


def _twilio_headers(auth_token: str, url: str, params: Mapping[str, str]) -> dict[str, str]:
    """The headers Twilio sends with a webhook: its signature over `url` and `params`, and its agent."""
    return {
        "X-Twilio-Signature": twilio_signature(auth_token, url, params),
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
    }


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _twiml_messages(text: str) -> list[str]:
    """Bodies of <Message> verbs in a TwiML reply (empty for anything else)."""
    if "<Message" not in text or len(text) > 100_000:
        return []
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return []
    bodies = []
    for message in root.iter("Message"):
        body = message.find("Body")
        value = body.text if body is not None else message.text
        if value and value.strip():
            bodies.append(value.strip())
    return bodies
