"""What the sandbox can be told: its settings, injected faults and per-recipient rules.

Owns `SandboxConfig` (credentials, callback targets, delays, limits), `Fault` (one injected answer),
`RecipientRule` (what happens to mail or texts for matching recipients) with the built-in
`DEFAULT_RULES`, and the small validators they share. Plain frozen dataclasses: no I/O, no locks.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .wire import PROVIDERS, SENDGRID_OUTCOMES, TWILIO_ERRORS, TWILIO_OUTCOMES, Provider


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
            if value is not None and not is_http_url(value):
                raise ValueError(f"{name} must be an http(s) URL, got {value!r}")

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON (``GET /_sandbox/config``), without the private signing key."""
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
        """A fault from a JSON object; unknown fields or bad values raise ValueError."""
        return cls(**known_fields(cls, data))


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
        """Whether recipient `to` falls under this rule (case-insensitive glob)."""
        return fnmatch.fnmatchcase(to.lower(), self.to.lower())

    def as_fault(self) -> Fault:
        """The synchronous rejection this rule stands for (only meaningful without `outcome`)."""
        return Fault(status=self.status, code=self.code, message=self.message, recipient=self.recipient)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecipientRule:
        """A rule from a JSON object; unknown fields or bad values raise ValueError."""
        return cls(**known_fields(cls, data))


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


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as keyword arguments for dataclass `cls`; ValueError if not an object or a field is unknown."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return dict(data)


def is_http_url(value: str) -> bool:
    """Whether `value` is an absolute http(s) URL."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def is_loopback_url(value: str) -> bool:
    """Whether `value` points at this machine (localhost names or a loopback address)."""
    host = (urlsplit(value).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider(provider: str) -> None:
    """Raise ValueError unless `provider` is one the sandbox speaks."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
