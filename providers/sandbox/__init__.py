"""`drip sandbox`: a local stand-in for the slice of Twilio and SendGrid that patient-drip uses.

It speaks the providers' own HTTP APIs, so the official SDKs talk to it unchanged (only their
base URL differs):

* Twilio: ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form-encoded, Basic auth),
  ``GET`` the same path (list with ``To``, ``From``, ``DateSent>``/``DateSent<``/``DateSent``,
  paging) and ``GET …/Messages/{sid}.json``; Twilio's JSON and error shapes.
* SendGrid: ``POST /v3/mail/send`` (JSON, Bearer auth) answering 202 with ``X-Message-Id``.

It records everything it accepted (``GET /_sandbox/messages``, and ``GET /`` for a person),
injects latency and faults (``/_sandbox/faults`` or the Python API), and calls back like the
real services: Twilio status callbacks signed with ``X-Twilio-Signature`` and SendGrid event
webhooks signed with ECDSA P-256 -- byte-for-byte what the SDKs' validators expect.

Control API (JSON):

==========================================  ======================================================
``GET/POST /_sandbox/config``                read / change credentials, callback targets, delays
``GET/DELETE /_sandbox/messages``            recorded messages (``?provider=&to=&limit=``) / reset
``GET/POST/DELETE /_sandbox/faults``         fault queue, latency, per-recipient rules, random
                                             faults (``{"random": {"twilio": {"rate": 0.3,
                                             "faults": [{"status": 503}], "seed": 1}}}``)
``GET /_sandbox/sendgrid-public-key``        ``{"public_key": <base64 DER SubjectPublicKeyInfo>}``
``POST /_sandbox/twilio/inbound``            ``{"from","to","body"}``: act as a patient texting in
``POST /_sandbox/twilio/status``             ``{"sid","status","error_code"?}``: a status callback
``POST /_sandbox/sendgrid/events``           ``[{event…}]``: sign and post arbitrary events
``GET /_sandbox/callbacks``, ``/_sandbox/stats``  what was called back, counters
==========================================  ======================================================

Built-in recipient rules (Twilio's magic test numbers plus sandbox conventions):

=====================  ========================================================================
``+15005550001``        400, code 21211 (invalid number)
``+15005550002``        400, code 21612 (not reachable by SMS)
``+15005550003``        400, code 21408 (region not enabled)
``+15005550004``        400, code 21610 (recipient replied STOP)
``+15005550009``        400, code 21614 (not a mobile number)
``+15005550030``        accepted, then ``undelivered`` with ErrorCode 30003
``+15005550007``        accepted, then ``failed`` with ErrorCode 30007 (carrier filtered)
``bounce@…``            accepted, then events processed + bounce (type=bounce)
``blocked@…``           accepted, then processed + bounce (type=blocked)
``dropped@…``           accepted, then processed + dropped
``deferred@…``          accepted, then processed + deferred + delivered
``spam@…``              accepted, then processed + delivered + spamreport
``invalid@…``           400 "Does not contain a valid address." on the recipient
=====================  ========================================================================
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fnmatch
import html
import ipaddress
import json
import math
import random
import re
import secrets
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

__all__ = [
    "DEFAULT_RULES",
    "Fault",
    "RecipientRule",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "SendGridSigner",
    "create_app",
    "run_sandbox",
    "twilio_signature",
]

Provider = Literal["twilio", "sendgrid"]
PROVIDERS: tuple[Provider, ...] = ("twilio", "sendgrid")
T = TypeVar("T")

TWILIO_API_VERSION = "2010-04-01"
MAX_TWILIO_BODY_BYTES = 256 * 1024
MAX_SENDGRID_BODY_BYTES = 10 * 1024 * 1024  # SendGrid's own limit is 30 MB; plenty here
MAX_CONTROL_BODY_BYTES = 1024 * 1024
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_EMAIL = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+$")

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
_STATUS_TO_TWILIO_CODE = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}

SENDGRID_AUTH_ERROR = "The provided authorization grant is invalid, expired, or revoked"
SENDGRID_RECIPIENT_ERROR = "Does not contain a valid address."
SENDGRID_ERROR_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

TWILIO_OUTCOMES = ("delivered", "undelivered", "failed")
SENDGRID_OUTCOMES = ("delivered", "bounce", "blocked", "dropped", "deferred", "spamreport", "unsubscribe")


# --------------------------------------------------------------------------------------------
# Configuration, faults, rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything that can be set by constructor kwargs, run_sandbox kwargs or /_sandbox/config."""

    twilio_account_sid: str = "AC" + "0" * 32
    twilio_auth_token: str = "sandbox-twilio-auth-token"
    sendgrid_api_key: str = "SG.sandbox-api-key"
    accept_any_credentials: bool = False
    # Where callbacks go. Twilio status callbacks go to each message's StatusCallback.
    twilio_inbound_url: str | None = None
    sendgrid_event_url: str | None = None
    twilio_status_callbacks: bool = True
    # The number Twilio "picks" from a Messaging Service (shown as From in callbacks).
    twilio_service_number: str = "+15005550006"
    callback_delay_ms: int = 50
    # Callbacks only go to loopback hosts unless this is set: a sandbox must not reach out to
    # whatever host a test or a misconfigured StatusCallback names.
    allow_remote_callbacks: bool = False
    callback_timeout_s: float = 10.0
    callback_concurrency: int = 32
    max_pending_callbacks: int = 10_000
    max_messages: int = 500_000
    max_callback_log: int = 2_000
    default_rules: bool = True
    # PEM (PKCS#8) EC P-256 private key for signing events; generated at start when None.
    sendgrid_private_key_pem: str | None = None

    def __post_init__(self) -> None:
        if self.callback_delay_ms < 0 or self.callback_timeout_s <= 0:
            raise ValueError("callback_delay_ms must be >= 0 and callback_timeout_s > 0")
        if self.callback_concurrency < 1 or self.max_pending_callbacks < 1:
            raise ValueError("callback_concurrency and max_pending_callbacks must be >= 1")
        if self.max_messages < 1 or self.max_callback_log < 1:
            raise ValueError("max_messages and max_callback_log must be >= 1")
        for name in ("twilio_inbound_url", "sendgrid_event_url"):
            value = getattr(self, name)
            if value is not None and not _is_http_url(value):
                raise ValueError(f"{name} must be an http(s) URL, got {value!r}")

    def public_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("sendgrid_private_key_pem")
        return data

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SandboxConfig:
        """CLI-friendly construction: ``None`` means "keep the default", and the short names
        ``account_sid`` / ``auth_token`` / ``api_key`` are accepted for the credential fields."""
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            name = _CONFIG_ALIASES.get(key, key)
            if value is not None:
                values[name] = value
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown sandbox setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


_CONFIG_ALIASES = {
    "account_sid": "twilio_account_sid",
    "auth_token": "twilio_auth_token",
    "api_key": "sendgrid_api_key",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected response for the next request to a provider.

    * `status` / `code`: answer with this error (Twilio: `code` alone picks its usual status,
      e.g. 21211 -> 400, 20003 -> 401; SendGrid: `status` with an optional `field`/`message`,
      or `recipient=True` for the 400 "Does not contain a valid address.").
    * `retry_after`: add ``Retry-After`` (and SendGrid's ``X-RateLimit-*``) headers.
    * `timeout`: accept and record the message, then hang `hang_ms` before answering -- longer
      than the client's timeout, so the client sees a read timeout (the ambiguous case).
    * `times`: how many consecutive requests get this fault.
    """

    status: int | None = None
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    timeout: bool = False
    hang_ms: int = 30_000
    field: str | None = None
    recipient: bool = False
    times: int = 1

    def __post_init__(self) -> None:
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("fault status must be a 4xx or 5xx HTTP status")
        if self.code is not None and self.code not in TWILIO_ERRORS and self.status is None:
            raise ValueError(f"unknown Twilio code {self.code}: give its HTTP status too")
        if not (self.timeout or self.status or self.code or self.recipient):
            raise ValueError("a fault needs status, code, recipient or timeout")
        if self.times < 1 or self.hang_ms < 0:
            raise ValueError("times must be >= 1 and hang_ms >= 0")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True, slots=True)
class RecipientRule:
    """What happens to messages for recipients matching `to` (exact, or a glob like ``bounce@*``).

    With `outcome` the message is accepted and ends that way later (Twilio: ``undelivered`` /
    ``failed`` with `error_code`; SendGrid: ``bounce``, ``blocked``, ``dropped``, ``deferred``,
    ``spamreport``, ``unsubscribe``). Without it, `status`/`code`/`recipient` reject the request
    synchronously like a `Fault`.
    """

    provider: Provider
    to: str
    status: int | None = None
    code: int | None = None
    message: str | None = None
    recipient: bool = False
    outcome: str | None = None
    error_code: int | None = None

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}")
        allowed = TWILIO_OUTCOMES if self.provider == "twilio" else SENDGRID_OUTCOMES
        if self.outcome is not None and self.outcome not in allowed:
            raise ValueError(f"{self.provider} outcome must be one of {allowed}")
        if self.outcome is None and not (self.status or self.code or self.recipient):
            raise ValueError("a rule needs an outcome, or a status/code/recipient rejection")

    def matches(self, to: str) -> bool:
        return fnmatch.fnmatchcase(to.lower(), self.to.lower())

    def as_fault(self) -> Fault:
        return Fault(status=self.status, code=self.code, message=self.message, recipient=self.recipient)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecipientRule:
        return cls(**_known_fields(cls, data))


DEFAULT_RULES: tuple[RecipientRule, ...] = (
    RecipientRule("twilio", "+15005550001", code=21211),
    RecipientRule("twilio", "+15005550002", code=21612),
    RecipientRule("twilio", "+15005550003", code=21408),
    RecipientRule("twilio", "+15005550004", code=21610),
    RecipientRule("twilio", "+15005550009", code=21614),
    RecipientRule("twilio", "+15005550030", outcome="undelivered", error_code=30003),
    RecipientRule("twilio", "+15005550007", outcome="failed", error_code=30007),
    RecipientRule("sendgrid", "bounce@*", outcome="bounce"),
    RecipientRule("sendgrid", "blocked@*", outcome="blocked"),
    RecipientRule("sendgrid", "dropped@*", outcome="dropped"),
    RecipientRule("sendgrid", "deferred@*", outcome="deferred"),
    RecipientRule("sendgrid", "spam@*", outcome="spamreport"),
    RecipientRule("sendgrid", "invalid@*", status=400, recipient=True),
)


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return dict(data)


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_loopback_url(value: str) -> bool:
    host = (urlsplit(value).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the full URL + sorted POST params.

    Computed by the SDK's own RequestValidator so it cannot drift from what apps validate.
    """
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


class SendGridSigner:
    """Signs event-webhook payloads the way SendGrid's Signed Event Webhook does.

    ECDSA P-256 / SHA-256 over ``timestamp + payload`` (the raw body), DER-encoded and base64'd
    into ``X-Twilio-Email-Event-Webhook-Signature``; the public key is shown as base64 DER
    SubjectPublicKeyInfo (the PEM body without its armour), as in SendGrid's settings page.
    """

    def __init__(self, private_key_pem: str | None = None) -> None:
        if private_key_pem:
            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("sendgrid_private_key_pem must be an EC P-256 private key")
            self._key = key
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def private_key_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def sign(self, payload: bytes, timestamp: str) -> str:
        signature = self._key.sign(timestamp.encode("utf-8") + payload, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment.astimezone(UTC)) if moment else None


def _b64_id(nbytes: int = 16) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=")


def new_twilio_sid(prefix: str = "SM") -> str:
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


class SandboxState:
    """Thread-safe store of what the sandbox received, its faults and its configuration.

    Shared by the HTTP app (event-loop thread) and in-process tests (any thread). Records are
    plain JSON-ready dicts; readers get shallow copies.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._lock = threading.RLock()
        self._config = config or SandboxConfig()
        self.signer = SendGridSigner(self._config.sendgrid_private_key_pem)
        self._messages: list[dict[str, Any]] = []
        self._by_id: dict[str, dict[str, Any]] = {}
        self._faults: dict[Provider, deque[list[Any]]] = {p: deque() for p in PROVIDERS}
        # provider -> (rate, faults to pick from, rng): "fail this share of requests at random".
        self._random_faults: dict[Provider, tuple[float, tuple[Fault, ...], random.Random]] = {}
        self._latency_ms: dict[Provider, int] = {p: 0 for p in PROVIDERS}
        self._rules: list[RecipientRule] = []
        self._callbacks: deque[dict[str, Any]] = deque(maxlen=self._config.max_callback_log)
        self._changed = threading.Condition(self._lock)
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.callbacks_runner: _Callbacks | None = None

    # configuration ---------------------------------------------------------------------------

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @property
    def public_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo of the event-signing key (SENDGRID_WEBHOOK_PUBLIC_KEY)."""
        return self.signer.public_key

    def update_config(self, **changes: Any) -> SandboxConfig:
        """Change configuration; unknown keys or bad values raise ValueError."""
        with self._lock:
            config = dataclasses.replace(self._config, **_known_fields(SandboxConfig, changes))
            if "sendgrid_private_key_pem" in changes:
                self.signer = SendGridSigner(config.sendgrid_private_key_pem)
            if config.max_callback_log != self._callbacks.maxlen:
                self._callbacks = deque(self._callbacks, maxlen=config.max_callback_log)
            self._config = config
            return config

    # messages --------------------------------------------------------------------------------

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._messages.append(record)
            self._by_id[record["id"]] = record
            self.stats[f"{record['provider']}_accepted"] += 1
            overflow = len(self._messages) - self._config.max_messages
            if overflow > 0:
                # Trim a tenth at once so a long benchmark does not pay O(n) per message.
                cut = max(overflow, self._config.max_messages // 10)
                for old in self._messages[:cut]:
                    self._by_id.pop(old["id"], None)
                del self._messages[:cut]
            self._changed.notify_all()
            return dict(record)

    def update_message(self, message_id: str, **fields: Any) -> dict[str, Any] | None:
        with self._lock:
            record = self._by_id.get(message_id)
            if record is None:
                return None
            record.update(fields)
            self._changed.notify_all()
            return dict(record)

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._by_id.get(message_id)
            return dict(record) if record is not None else None

    def messages(
        self,
        provider: str | None = None,
        to: str | None = None,
        limit: int | None = None,
        direction: str | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded messages, oldest first (the last `limit` when given)."""
        with self._lock:
            found = [
                dict(m)
                for m in self._messages
                if (provider is None or m["provider"] == provider)
                and (to is None or m["to"] == to)
                and (direction is None or m.get("direction") == direction)
            ]
        return found[-limit:] if limit else found

    def reset_messages(self) -> None:
        with self._lock:
            self._messages.clear()
            self._by_id.clear()
            self._callbacks.clear()
            self.stats.clear()

    def wait_for(self, predicate: Callable[[SandboxState], T], timeout: float = 5.0) -> T:
        """Block until `predicate(state)` is truthy and return it; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("sandbox condition not met in time")
            with self._changed:
                self._changed.wait(min(remaining, 0.05))

    # faults ----------------------------------------------------------------------------------

    def add_fault(self, provider: Provider, fault: Fault) -> None:
        _check_provider(provider)
        with self._lock:
            self._faults[provider].append([fault, fault.times])

    def set_random_faults(self, provider: Provider, rate: float, faults: Iterable[Fault],
                          seed: int | None = None) -> None:
        """Answer about `rate` (0..1) of the requests to `provider` that no queued fault takes with a
        fault picked at random from `faults` (seeded, so a test is repeatable). Rate 0 turns it off."""
        _check_provider(provider)
        choices = tuple(faults)
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if rate and not choices:
            raise ValueError("give at least one fault to pick from")
        with self._lock:
            if rate:
                self._random_faults[provider] = (rate, choices, random.Random(seed))
            else:
                self._random_faults.pop(provider, None)

    def set_latency(self, provider: Provider, latency_ms: int) -> None:
        _check_provider(provider)
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        with self._lock:
            self._latency_ms[provider] = int(latency_ms)

    def add_rule(self, rule: RecipientRule) -> None:
        with self._lock:
            self._rules.insert(0, rule)  # newest rule wins

    def clear_faults(self) -> None:
        """Drop queued faults, latencies and added rules (built-in rules stay unless disabled)."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()
            self._random_faults.clear()
            self._latency_ms = {p: 0 for p in PROVIDERS}
            self._rules.clear()

    def next_fault(self, provider: Provider) -> Fault | None:
        with self._lock:
            queue = self._faults[provider]
            if not queue:
                chance = self._random_faults.get(provider)
                if chance is not None and chance[2].random() < chance[0]:
                    self.stats[f"{provider}_random_faults"] += 1
                    return chance[2].choice(chance[1])
                return None
            entry = queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                queue.popleft()
            return entry[0]

    def latency_ms(self, provider: Provider) -> int:
        with self._lock:
            return self._latency_ms[provider]

    def rule_for(self, provider: Provider, to: str) -> RecipientRule | None:
        with self._lock:
            rules = list(self._rules)
            if self._config.default_rules:
                rules += DEFAULT_RULES
        return next((r for r in rules if r.provider == provider and r.matches(to)), None)

    def faults_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": dict(self._latency_ms),
                **{p: [dict(dataclasses.asdict(f), remaining=n) for f, n in q] for p, q in self._faults.items()},
                "rules": [dataclasses.asdict(r) for r in self._rules],
                "random": {p: {"rate": rate, "faults": [dataclasses.asdict(f) for f in faults]}
                           for p, (rate, faults, _rng) in self._random_faults.items()},
                "default_rules": [dataclasses.asdict(r) for r in DEFAULT_RULES]
                if self._config.default_rules
                else [],
            }

    def apply_faults_json(self, data: Any) -> None:
        """Apply a POST /_sandbox/faults body (validated before anything changes)."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = set(data) - {"latency_ms", "twilio", "sendgrid", "rules", "random"}
        if unknown:
            raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
        latency = data.get("latency_ms") or {}
        if not isinstance(latency, dict) or any(p not in PROVIDERS for p in latency):
            raise ValueError('latency_ms must look like {"twilio": 200, "sendgrid": 0}')
        latencies = {p: int(v) for p, v in latency.items()}
        queued: list[tuple[Provider, Fault]] = []
        for provider in PROVIDERS:
            items = data.get(provider) or []
            if not isinstance(items, list):
                raise ValueError(f"{provider} must be a list of faults")
            queued += [(provider, Fault.from_json(item)) for item in items]
        rules_json = data.get("rules") or []
        if not isinstance(rules_json, list):
            raise ValueError("rules must be a list")
        rules = [RecipientRule.from_json(r) for r in rules_json]
        random_json = data.get("random") or {}
        if not isinstance(random_json, dict) or any(p not in PROVIDERS for p in random_json):
            raise ValueError('random must look like {"twilio": {"rate": 0.3, "faults": [...], "seed": 1}}')
        randoms: list[tuple[Provider, float, list[Fault], int | None]] = []
        for provider, spec in random_json.items():
            if not isinstance(spec, dict) or set(spec) - {"rate", "faults", "seed"}:
                raise ValueError(f"random.{provider} must have rate, faults and optionally seed")
            randoms.append((provider, float(spec.get("rate", 0)), [Fault.from_json(f) for f in spec.get("faults") or []],
                            spec.get("seed")))
        for provider, ms in latencies.items():
            self.set_latency(provider, ms)
        for provider, fault in queued:
            self.add_fault(provider, fault)
        for rule in rules:
            self.add_rule(rule)
        for provider, rate, faults, seed in randoms:
            self.set_random_faults(provider, rate, faults, seed)

    # callbacks log ---------------------------------------------------------------------------

    def log_callback(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._callbacks.append(entry)
            self.stats[f"callbacks_{entry['kind']}"] += 1
            if entry.get("error") or not (200 <= (entry.get("status_code") or 0) < 300):
                self.stats["callbacks_failed"] += 1
            self._changed.notify_all()

    def callbacks(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._callbacks if kind is None or c["kind"] == kind]

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


# --------------------------------------------------------------------------------------------
# Callbacks (run on the server's event loop)
# --------------------------------------------------------------------------------------------


class _Callbacks:
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
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> bool:
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
            params["RawDlrDoneDate"] = _now().strftime("%y%m%d%H%M")
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
        headers = {
            "X-Twilio-Signature": twilio_signature(self.state.config.twilio_auth_token, url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        return await self._post(kind, url, urlencode(params).encode(), headers, message_id, params)

    async def twilio_lifecycle(self, sid: str, outcome: str, error_code: int | None) -> None:
        steps: list[tuple[str, int | None]] = (
            [("failed", error_code)] if outcome == "failed" else [("sent", None), (outcome, error_code)]
        )
        for status, code in steps:
            await self._delay()
            self._set_twilio_status(sid, status, code)
            record = self.state.get_message(sid)
            if record and record.get("status_callback") and self.state.config.twilio_status_callbacks:
                with contextlib.suppress(LookupError):
                    await self.post_twilio_status(sid, status, code)

    def _set_twilio_status(self, sid: str, status: str, error_code: int | None) -> None:
        now = _now()
        fields: dict[str, Any] = {"status": status, "date_updated": _rfc2822(now)}
        if status == "sent":
            fields["date_sent"] = _rfc2822(now)
            fields["date_sent_ts"] = now.timestamp()
        if error_code is not None:
            fields["error_code"] = error_code
        self.state.update_message(sid, **fields)

    def finish_twilio_now(self, sid: str, outcome: str, error_code: int | None) -> None:
        """Used when callbacks are saturated: record the final status without calling back."""
        if outcome != "failed":
            self._set_twilio_status(sid, "sent", None)
        self._set_twilio_status(sid, outcome, error_code)

    async def post_inbound(self, from_: str, to: str, body: str) -> httpx.Response:
        """POST a signed inbound-SMS webhook to twilio_inbound_url; return the app's answer."""
        config = self.state.config
        url = config.twilio_inbound_url
        if not url:
            raise LookupError("twilio_inbound_url is not configured")
        if not (config.allow_remote_callbacks or _is_loopback_url(url)):
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
        now = _now()
        self.state.record(
            _twilio_record(
                sid=sid, account_sid=config.twilio_account_sid, to=to, from_=from_, body=body,
                direction="inbound", status="received", service_sid=None, status_callback=None,
                raw={"params": params}, now=now,
            )
        )
        headers = {
            "X-Twilio-Signature": twilio_signature(config.twilio_auth_token, url, params),
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
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
                _twilio_record(
                    sid=reply_sid, account_sid=config.twilio_account_sid, to=from_, from_=to,
                    body=reply, direction="outbound-reply", status="delivered", service_sid=None,
                    status_callback=None, raw={"twiml": response.text[:10_000]}, now=_now(),
                )
            )
        return response

    # SendGrid --------------------------------------------------------------------------------

    async def sendgrid_lifecycle(self, record_id: str, outcome: str) -> None:
        await self._delay()
        record = self.state.get_message(record_id)
        if record is None:
            return
        events = sendgrid_events(record, outcome)
        self.state.update_message(record_id, status=events[-1]["event"], events=[e["event"] for e in events])
        if self.state.config.sendgrid_event_url:
            await self.post_sendgrid_events(events)

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
            "kind": kind, "url": url, "message_id": message_id, "at": _now().isoformat(), "sent": sent,
        }
        started = time.monotonic()
        if not (self.state.config.allow_remote_callbacks or _is_loopback_url(url)):
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
        return {**base, "event": name, "sg_event_id": _b64_id(), **extra}

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


# --------------------------------------------------------------------------------------------
# HTTP app
# --------------------------------------------------------------------------------------------


def _twilio_error(code: int, status: int | None = None, message: str | None = None, **fmt: str) -> JSONResponse:
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


def _sendgrid_error(status: int, message: str, field: str | None = None, help_: str | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "field": field, "help": help_}]}, status_code=status)


def _retry_headers(provider: Provider, retry_after: float | None) -> dict[str, str]:
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


def _fault_response(provider: Provider, fault: Fault | RecipientRule, **fmt: str) -> Response:
    retry = _retry_headers(provider, getattr(fault, "retry_after", None))
    if provider == "twilio":
        code = fault.code or _STATUS_TO_TWILIO_CODE.get(fault.status or 500, (fault.status or 500) * 100)
        response = _twilio_error(code, fault.status, fault.message, **fmt)
    elif fault.recipient:
        response = _sendgrid_error(
            fault.status or 400, fault.message or SENDGRID_RECIPIENT_ERROR,
            fault.field or "personalizations.0.to.0.email", f"{SENDGRID_ERROR_HELP}#message.personalizations.to",
        )
    else:
        status = fault.status or 500
        fallback = "Bad Request" if status < 500 else "Internal Server Error"
        default = {401: SENDGRID_AUTH_ERROR, 429: "too many requests"}.get(status, fallback)
        response = _sendgrid_error(status, fault.message or default, fault.field)
    response.headers.update(retry)
    return response


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = await request.body()
    return body if len(body) <= limit else None


async def _hang(state: SandboxState, ms: int) -> None:
    """Sleep `ms`, but return early when the server is stopping (so shutdown stays quick)."""
    deadline = time.monotonic() + ms / 1000
    while not state.stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, 0.05))


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _twilio_record(
    *, sid: str, account_sid: str, to: str, from_: str | None, body: str, direction: str,
    status: str, service_sid: str | None, status_callback: str | None, raw: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
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
        "date_created": _rfc2822(now),
        "date_updated": _rfc2822(now),
        "date_sent": _rfc2822(now) if direction != "outbound-api" else None,
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


def _parse_twilio_date(value: str) -> datetime | None:
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


def create_app(state: SandboxState) -> Starlette:
    """The sandbox's ASGI app over `state` (callback delivery starts with the app's lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner = _Callbacks(state)
        state.callbacks_runner = runner
        try:
            yield
        finally:
            state.stopping.set()
            state.callbacks_runner = None
            await runner.close()

    def runner() -> _Callbacks:
        if state.callbacks_runner is None:
            raise RuntimeError("sandbox app is not running (lifespan not started)")
        return state.callbacks_runner

    async def pre_request(provider: Provider) -> None:
        state.count(f"{provider}_requests")
        latency = state.latency_ms(provider)
        if latency:
            await _hang(state, latency)

    # Twilio ----------------------------------------------------------------------------------

    def twilio_auth(request: Request, sid: str) -> Response | None:
        config = state.config
        if config.accept_any_credentials:
            return None
        creds = _basic_auth(request.headers.get("authorization"))
        if creds != (config.twilio_account_sid, config.twilio_auth_token):
            return _twilio_error(20003)
        if sid != config.twilio_account_sid:
            return _twilio_error(20404, path=request.url.path)
        return None

    async def twilio_messages(request: Request) -> Response:
        sid = request.path_params["sid"]
        try:
            denied = twilio_auth(request, sid)
            if denied is not None:
                state.count("twilio_rejected")
                return denied
            if request.method == "GET":
                return twilio_list(request, sid)
            return await twilio_create(request, sid)
        except Exception as exc:  # never crash on junk: answer like Twilio's 500
            state.count("twilio_internal_errors")
            return _twilio_error(20500, message=f"Internal Server Error ({type(exc).__name__})")

    async def twilio_create(request: Request, account_sid: str) -> Response:
        await pre_request("twilio")
        body = await _read_limited(request, MAX_TWILIO_BODY_BYTES)
        if body is None:
            return _twilio_error(21617, status=413, message="Request entity too large")
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
            return _fault_response("twilio", fault, to=to, from_=from_ or "", service=service or "")
        problem = _validate_twilio(to, from_, service, text, callback)
        if problem is not None:
            state.count("twilio_rejected")
            return _twilio_error(problem, to=to, from_=from_ or "", service=service or "")
        rule = state.rule_for("twilio", to)
        if rule is not None and rule.outcome is None:
            state.count("twilio_rejected")
            return _fault_response("twilio", rule.as_fault(), to=to, from_=from_ or "")

        now = _now()
        record = _twilio_record(
            sid=new_twilio_sid(), account_sid=account_sid, to=to, from_=from_, body=text,
            direction="outbound-api", status="accepted" if service else "queued",
            service_sid=service, status_callback=callback,
            raw={"path": request.url.path, "params": form, "user_agent": request.headers.get("user-agent")},
            now=now,
        )
        state.record(record)
        outcome = rule.outcome if rule else "delivered"
        error_code = rule.error_code if rule else None
        if not runner().spawn(runner().twilio_lifecycle(record["id"], outcome, error_code)):
            runner().finish_twilio_now(record["id"], outcome, error_code)
        if fault is not None and fault.timeout:
            state.count("twilio_hung")
            await _hang(state, fault.hang_ms)
        return JSONResponse(twilio_message_json(record), status_code=201)

    def twilio_list(request: Request, account_sid: str) -> Response:
        state.count("twilio_requests")
        q = request.query_params
        try:
            page = max(0, int(q.get("Page", "0")))
            page_size = min(1000, max(1, int(q.get("PageSize", "50"))))
        except ValueError:
            return _twilio_error(20001, status=400, message="Invalid paging parameter")
        bounds: list[tuple[str, datetime]] = []
        for key in ("DateSent>", "DateSent<", "DateSent"):
            if key in q:
                parsed = _parse_twilio_date(q[key])
                if parsed is None:
                    return _twilio_error(20001, status=400, message=f"Invalid {key}")
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

    async def twilio_message(request: Request) -> Response:
        sid, message_sid = request.path_params["sid"], request.path_params["message_sid"]
        denied = twilio_auth(request, sid)
        if denied is not None:
            return denied
        record = state.get_message(message_sid)
        if record is None or record["provider"] != "twilio":
            return _twilio_error(20404, path=request.url.path)
        return JSONResponse(twilio_message_json(record))

    # SendGrid --------------------------------------------------------------------------------

    async def sendgrid_send(request: Request) -> Response:
        try:
            return await sendgrid_send_inner(request)
        except Exception as exc:  # never crash on junk
            state.count("sendgrid_internal_errors")
            return _sendgrid_error(500, f"Internal Server Error ({type(exc).__name__})")

    async def sendgrid_send_inner(request: Request) -> Response:
        config = state.config
        if not config.accept_any_credentials:
            if request.headers.get("authorization") != f"Bearer {config.sendgrid_api_key}":
                state.count("sendgrid_rejected")
                return _sendgrid_error(401, SENDGRID_AUTH_ERROR)
        await pre_request("sendgrid")
        body = await _read_limited(request, MAX_SENDGRID_BODY_BYTES)
        if body is None:
            return _sendgrid_error(413, "The JSON payload you have included in your request is too large.")
        fault = state.next_fault("sendgrid")
        if fault is not None and not fault.timeout:
            state.count("sendgrid_rejected")
            return _fault_response("sendgrid", fault)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            state.count("sendgrid_rejected")
            return _sendgrid_error(400, "Bad Request")
        parsed = _parse_mail(payload)
        if isinstance(parsed, Response):
            state.count("sendgrid_rejected")
            return parsed
        rule = state.rule_for("sendgrid", parsed["to"])
        if rule is not None and rule.outcome is None:
            state.count("sendgrid_rejected")
            return _fault_response("sendgrid", rule.as_fault())

        now = _now()
        xmid = _b64_id()
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
        if not runner().spawn(runner().sendgrid_lifecycle(xmid, outcome)):
            events = sendgrid_events(record, outcome)
            state.update_message(xmid, status=events[-1]["event"], events=[e["event"] for e in events])
        if fault is not None and fault.timeout:
            state.count("sendgrid_hung")
            await _hang(state, fault.hang_ms)
        return Response(status_code=202, headers={"X-Message-Id": xmid})

    # Control API -----------------------------------------------------------------------------

    async def read_json(request: Request) -> Any:
        body = await _read_limited(request, MAX_CONTROL_BODY_BYTES)
        if body is None:
            raise ValueError("body too large")
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"invalid JSON: {exc}") from None

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def control_config(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await read_json(request)
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                state.update_config(**data)
            except (TypeError, ValueError) as exc:
                return bad(str(exc))
        return JSONResponse({**state.config.public_dict(), "sendgrid_public_key": state.public_key})

    async def control_messages(request: Request) -> Response:
        if request.method == "DELETE":
            state.reset_messages()
            return JSONResponse({"deleted": True})
        q = request.query_params
        try:
            # Bounded by default: a benchmark may have recorded hundreds of thousands.
            limit = max(1, int(q.get("limit", "10000")))
        except ValueError:
            return bad("limit must be an integer")
        found = state.messages(q.get("provider"), q.get("to"), None, q.get("direction"))
        shown = found[-limit:]
        return JSONResponse({"count": len(shown), "total": len(found), "messages": shown})

    async def control_faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear_faults()
        elif request.method == "POST":
            try:
                state.apply_faults_json(await read_json(request))
            except (TypeError, ValueError) as exc:
                return bad(str(exc))
        return JSONResponse(state.faults_snapshot())

    async def control_public_key(request: Request) -> Response:
        return JSONResponse({"public_key": state.public_key})

    async def control_inbound(request: Request) -> Response:
        try:
            data = await read_json(request)
            from_, to, text = (str(data[k]) for k in ("from", "to", "body"))
        except (ValueError, KeyError, TypeError):
            return bad('expected {"from": "+1...", "to": "+1...", "body": "..."}')
        to = to or state.config.twilio_service_number
        try:
            response = await runner().post_inbound(from_, to, text)
        except LookupError as exc:
            return bad(str(exc), 409)
        except httpx.HTTPError as exc:
            return bad(f"inbound webhook failed: {type(exc).__name__}: {exc}", 502)
        return Response(
            response.content,
            status_code=response.status_code,
            media_type=response.headers.get("content-type", "text/plain"),
        )

    async def control_twilio_status(request: Request) -> Response:
        try:
            data = await read_json(request)
            sid, status = str(data["sid"]), str(data["status"])
            error_code = int(data["error_code"]) if data.get("error_code") is not None else None
            url = data.get("url")
        except (ValueError, KeyError, TypeError):
            return bad('expected {"sid": "SM...", "status": "delivered", "error_code": null}')
        if state.get_message(sid) is not None:
            runner()._set_twilio_status(sid, status, error_code)
        try:
            result = await runner().post_twilio_status(sid, status, error_code, url)
        except LookupError as exc:
            return bad(str(exc), 404)
        return JSONResponse(result)

    async def control_sendgrid_events(request: Request) -> Response:
        try:
            data = await read_json(request)
            url = None
            if isinstance(data, dict):
                url, data = data.get("url"), data.get("events")
            if not isinstance(data, list) or not all(isinstance(e, dict) for e in data) or not data:
                raise ValueError
        except ValueError:
            return bad('expected a non-empty JSON array of event objects (or {"events": [...], "url": ...})')
        now = int(time.time())
        events = [{"timestamp": now, "sg_event_id": _b64_id(), **e} for e in data]
        try:
            result = await runner().post_sendgrid_events(events, url)
        except LookupError as exc:
            return bad(str(exc), 409)
        return JSONResponse(result)

    async def control_callbacks(request: Request) -> Response:
        return JSONResponse({"callbacks": state.callbacks(request.query_params.get("kind"))})

    async def control_stats(request: Request) -> Response:
        with state._lock:
            stats = dict(state.stats)
        pending = len(state.callbacks_runner.tasks) if state.callbacks_runner else 0
        return JSONResponse({**stats, "pending_callbacks": pending})

    async def inbox(request: Request) -> Response:
        q = request.query_params
        provider = q.get("provider") if q.get("provider") in PROVIDERS else None
        messages = state.messages(provider, q.get("to") or None, limit=200)
        return HTMLResponse(
            _inbox_html(messages, state),
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"},
        )

    async def not_found(request: Request) -> Response:
        path = request.url.path
        if path.startswith(f"/{TWILIO_API_VERSION}/"):
            return _twilio_error(20404, path=path)
        if path.startswith("/v3/"):
            return JSONResponse({"errors": [{"field": None, "message": "resource not found"}]}, status_code=404)
        return bad("not found", 404)

    twilio_base = f"/{TWILIO_API_VERSION}/Accounts/{{sid}}"
    routes = [
        Route(f"{twilio_base}/Messages.json", twilio_messages, methods=["GET", "POST"]),
        Route(f"{twilio_base}/Messages/{{message_sid}}.json", twilio_message, methods=["GET"]),
        Route("/v3/mail/send", sendgrid_send, methods=["POST"]),
        Route("/_sandbox/config", control_config, methods=["GET", "POST"]),
        Route("/_sandbox/messages", control_messages, methods=["GET", "DELETE"]),
        Route("/_sandbox/faults", control_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/sendgrid-public-key", control_public_key, methods=["GET"]),
        Route("/_sandbox/twilio/inbound", control_inbound, methods=["POST"]),
        Route("/_sandbox/twilio/status", control_twilio_status, methods=["POST"]),
        Route("/_sandbox/sendgrid/events", control_sendgrid_events, methods=["POST"]),
        Route("/_sandbox/callbacks", control_callbacks, methods=["GET"]),
        Route("/_sandbox/stats", control_stats, methods=["GET"]),
        Route("/", inbox, methods=["GET"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = state
    return app


def _validate_twilio(
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
    if callback and not _is_http_url(callback):
        return 21609
    return None


def _parse_mail(payload: dict[str, Any]) -> dict[str, Any] | Response:
    """Minimal v3 mail/send validation; the fields the sandbox records, or SendGrid's 400."""
    help_ = SENDGRID_ERROR_HELP
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return _sendgrid_error(
            400, "The personalizations field is required and must have at least one personalization.",
            "personalizations", f"{help_}#-Personalizations-Errors",
        )
    recipients: list[str] = []
    for i, p in enumerate(personalizations):
        to_list = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to_list, list) or not to_list:
            return _sendgrid_error(
                400, "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"personalizations.{i}.to", f"{help_}#message.personalizations.to",
            )
        for j, t in enumerate(to_list):
            address = t.get("email") if isinstance(t, dict) else None
            if not isinstance(address, str) or not _EMAIL.match(address):
                return _sendgrid_error(
                    400, SENDGRID_RECIPIENT_ERROR, f"personalizations.{i}.to.{j}.email",
                    f"{help_}#message.personalizations.to",
                )
            recipients.append(address)
    sender = payload.get("from")
    sender_email = sender.get("email") if isinstance(sender, dict) else None
    if not isinstance(sender_email, str) or not _EMAIL.match(sender_email):
        return _sendgrid_error(
            400, "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter.",
            "from.email", f"{help_}#message.from",
        )
    first = personalizations[0]
    subject = payload.get("subject") or first.get("subject")
    if not payload.get("template_id") and not (isinstance(subject, str) and subject.strip()):
        return _sendgrid_error(400, "The subject is required. You can get around this requirement if you use a "
                               "template with a subject defined or if every personalization has a subject defined.",
                               "subject", f"{help_}#message.subject")
    content = payload.get("content")
    if not payload.get("template_id"):
        well_formed = isinstance(content, list) and all(
            isinstance(c, dict) and isinstance(c.get("type"), str) and isinstance(c.get("value"), str)
            for c in content
        )
        if not content or not well_formed:
            return _sendgrid_error(
                400, "Unless a valid template_id is provided, the content parameter is required. There "
                "must be at least one defined content block.", "content", f"{help_}#message.content",
            )
        types = [c["type"] for c in content]
        if "text/plain" in types and types[0] != "text/plain":
            return _sendgrid_error(
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


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------


class SandboxServer:
    """The sandbox on a background thread (uvicorn), for tests, demos and benchmarks.

    ``port=0`` picks a free port. Use as a context manager, or `start()` / `stop()`.
    `url` is the base URL for both SDKs (Twilio's and SendGrid's paths do not overlap).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.host = host
        self.state = SandboxState(SandboxConfig.from_kwargs(**config))
        self.app = create_app(self.state)
        self._requested_port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SandboxServer:
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when
        # the listening socket says so; with proto 0 every keep-alive response waits ~40 ms for
        # a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=1, timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="drip-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self._server.started and self.state.callbacks_runner is not None):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sandbox server did not start")
            time.sleep(0.005)
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop serving. With ``wait=False`` return at once and let the server thread finish
        by itself (~0.2 s: uvicorn polls its exit flag every 100 ms) -- handy in test teardown."""
        self.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and wait:
            self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("sandbox not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    twilio_base_url = url
    sendgrid_base_url = url

    @property
    def config(self) -> SandboxConfig:
        return self.state.config

    @property
    def public_key(self) -> str:
        """Base64 DER public key that verifies the event webhooks (SENDGRID_WEBHOOK_PUBLIC_KEY)."""
        return self.state.public_key

    # Python API ------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> SandboxConfig:
        return self.state.update_config(**changes)

    def messages(self, provider: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        return self.state.messages(provider, to)

    def wait_for_messages(
        self, count: int, provider: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until at least `count` messages (of `provider`) were recorded; return them."""

        def enough(state: SandboxState) -> list[dict[str, Any]] | None:
            found = state.messages(provider)
            return found if len(found) >= count else None

        return self.state.wait_for(enough, timeout)

    def wait_for_callbacks(
        self, count: int, kind: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until at least `count` callbacks (of `kind`) were attempted; return their log."""

        def enough(state: SandboxState) -> list[dict[str, Any]] | None:
            found = state.callbacks(kind)
            return found if len(found) >= count else None

        return self.state.wait_for(enough, timeout)

    def add_fault(self, provider: Provider, fault: Fault | None = None, **fields: Any) -> None:
        self.state.add_fault(provider, fault or Fault(**fields))

    def add_rule(self, rule: RecipientRule) -> None:
        self.state.add_rule(rule)

    def set_latency(self, provider: Provider, latency_ms: int) -> None:
        self.state.set_latency(provider, latency_ms)

    def set_random_faults(self, provider: Provider, rate: float, faults: Iterable[Fault],
                          seed: int | None = None) -> None:
        self.state.set_random_faults(provider, rate, faults, seed)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def reset(self) -> None:
        """Forget messages, callbacks and faults."""
        self.state.reset_messages()
        self.state.clear_faults()

    def _runner(self) -> _Callbacks:
        runner = self.state.callbacks_runner
        if runner is None:
            raise RuntimeError("sandbox not running")
        return runner

    def send_twilio_status(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Post a signed status callback for `sid` now (out-of-order tests); returns the log entry."""
        runner = self._runner()
        runner._set_twilio_status(sid, status, error_code)
        return runner.run_threadsafe(runner.post_twilio_status(sid, status, error_code, url))

    def send_sendgrid_events(self, events: Iterable[Mapping[str, Any]], url: str | None = None) -> dict[str, Any]:
        """Sign and post arbitrary events now (timestamp / sg_event_id filled in when missing)."""
        now = int(time.time())
        filled = [{"timestamp": now, "sg_event_id": _b64_id(), **e} for e in events]
        runner = self._runner()
        return runner.run_threadsafe(runner.post_sendgrid_events(filled, url))

    def send_inbound_sms(self, from_: str, body: str, to: str | None = None) -> httpx.Response:
        """Act as a patient texting the clinic: returns the app's webhook response (TwiML)."""
        runner = self._runner()
        target = to or self.state.config.twilio_service_number
        return runner.run_threadsafe(runner.post_inbound(from_, target, body))


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    announce: Callable[[str], None] | None = print,
    log_level: str = "info",
    **config: Any,
) -> None:
    """Serve the sandbox in the foreground until interrupted (the body of ``drip sandbox``).

    `config` takes any `SandboxConfig` field (credentials, callback URLs, delays, key); ``None``
    values keep the default and ``account_sid`` / ``auth_token`` / ``api_key`` are accepted as
    short names. Pass ``announce=None`` when the caller prints its own banner.
    """
    state = SandboxState(SandboxConfig.from_kwargs(**config))
    app = create_app(state)
    if announce is not None:
        base = f"http://{host}:{port}"
        cfg = state.config
        announce(
            "patient-drip provider sandbox\n"
            f"  inbox:                       {base}/\n"
            f"  DRIP_TWILIO_BASE_URL={base}\n"
            f"  DRIP_SENDGRID_BASE_URL={base}\n"
            f"  TWILIO_ACCOUNT_SID={cfg.twilio_account_sid}\n"
            f"  TWILIO_AUTH_TOKEN={cfg.twilio_auth_token}\n"
            f"  SENDGRID_API_KEY={cfg.sendgrid_api_key}\n"
            f"  SENDGRID_WEBHOOK_PUBLIC_KEY={state.public_key}\n"
            f"  inbound SMS webhook: {cfg.twilio_inbound_url or '(not set)'}\n"
            f"  SendGrid event webhook: {cfg.sendgrid_event_url or '(not set)'}"
        )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
    )
    server.run()
