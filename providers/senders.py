"""Delivery of one rendered message through one provider.

A `Sender` takes a frozen, plain `OutgoingMessage` (never an ORM row: this module imports no models
and no database code), makes exactly one provider call and returns the provider's message id, or
raises one of the typed errors below. It never retries and never loops: the dispatcher owns retry
policy (backoff, jitter, Retry-After), the send record and reconciliation.

Error classes, and what the dispatcher is expected to do with them:

=========================  ===================================================  =========================
error                      when                                                 dispatcher
=========================  ===================================================  =========================
`TransientSendError`       the provider surely did not take the message:        retry later (backoff,
                           connection refused, connect timeout, DNS, 429, 5xx   honour ``retry_after``)
`PermanentSendError`       the provider refused this message for this           stop this channel for this
                           recipient: invalid number, opted out, bad address    contact (unless
                                                                                ``affects_all_recipients``)
`AmbiguousSendError`       the request left and the answer was lost (read       do not resend; reconcile
                           timeout, connection dropped after sending)           (status callback / list)
`AuthSendError`            401/403 (credentials wrong, expired, revoked), or    pause the channel
                           404 on the send endpoint (wrong account/base URL)
=========================  ===================================================  =========================

Provider-specific notes are next to the code that needs them.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import threading
import time
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import python_http_client.exceptions
import requests
import urllib3.exceptions
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Category,
    ClickTracking,
    CustomArg,
    From,
    Header,
    HtmlContent,
    Mail,
    PlainTextContent,
    Subject,
    To,
    TrackingSettings,
)
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient

__all__ = [
    "AmbiguousSendError",
    "AuthSendError",
    "Channel",
    "OutboxSender",
    "OutgoingMessage",
    "PermanentSendError",
    "ProviderMessage",
    "SendError",
    "SendGridSender",
    "Sender",
    "TransientSendError",
    "TwilioSender",
    "TWILIO_PERMANENT_CODES",
]


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered message, ready to hand to a provider.

    `message_id` is our send-record id; it travels with the message to the provider (SendGrid
    custom arg ``drip_message_id``, Twilio StatusCallback query ``?m=``) so that webhooks can be
    matched to the send record without a provider-id lookup.
    """

    message_id: int
    channel: Channel
    to: str  # E.164 phone number or email address
    text: str  # SMS body, or the email's plain-text part
    subject: str | None = None
    html: str | None = None
    unsubscribe_url: str | None = None  # one-click (RFC 8058) URL for List-Unsubscribe
    categories: tuple[str, ...] = ()  # e.g. ("ketamine-consult", "welcome-email")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class SendError(Exception):
    """Base class of every error a `Sender.send` raises.

    `code` is the provider's error code (Twilio's numeric code, or the HTTP status), `reason` a
    short human sentence safe to store and show to staff: it never contains the recipient's
    phone number or address (provider messages are redacted).
    """

    def __init__(self, reason: str, *, code: str | int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        return f"{self.reason} (code {self.code})" if self.code is not None else self.reason


class TransientSendError(SendError):
    """The provider did not take the message; sending again later is safe.

    `retry_after` is the provider's requested wait in seconds (Retry-After, or SendGrid's
    X-RateLimit-Reset), or None when it did not say.
    """

    def __init__(
        self, reason: str, *, code: str | int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """The provider refused this message; sending it again will fail the same way.

    `affects_all_recipients` is True when the cause is on our side of the account (invalid or
    unregistered sender number, region not enabled, bad From address): stopping the channel for
    this one contact would be wrong, the operator must fix the configuration.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str | int | None = None,
        affects_all_recipients: bool = False,
    ) -> None:
        super().__init__(reason, code=code)
        self.affects_all_recipients = affects_all_recipients


class AmbiguousSendError(SendError):
    """The request was sent but no answer came back: the provider may have accepted it.

    Do not resend blindly. The status callback / event webhook (carrying our message id) or
    `TwilioSender.find_sent` resolves it.
    """


class AuthSendError(SendError):
    """The provider rejected our credentials (or the account/endpoint does not exist)."""


@runtime_checkable
class Sender(Protocol):
    channel: Channel

    def send(self, message: OutgoingMessage) -> str:
        """Deliver `message` with one provider call and return the provider's message id.

        Raises `TransientSendError`, `PermanentSendError`, `AmbiguousSendError` or
        `AuthSendError`; never retries, never loops, never sleeps.
        """
        ...


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

_PHONE_RE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_EMAIL_RE = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+")


def _redact(text: str, limit: int = 300) -> str:
    """Strip phone numbers and email addresses from a provider message (logs must not hold PII)."""
    text = _EMAIL_RE.sub("<email>", text)
    text = _PHONE_RE.sub("<phone>", text)
    return text[:limit]


def _parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _check_base_url(name: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {url!r}")
    return url.rstrip("/")


def _with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query string (keeps any query it already has)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _exception_chain(exc: BaseException, depth: int = 6) -> list[BaseException]:
    """`exc` and what it wraps: args, urllib3's `.reason`, __cause__/__context__ (bounded)."""
    seen: list[BaseException] = []
    todo: list[tuple[BaseException, int]] = [(exc, 0)]
    while todo:
        current, level = todo.pop()
        if any(current is s for s in seen) or level > depth:
            continue
        seen.append(current)
        nested: list[Any] = [*current.args, getattr(current, "reason", None)]
        nested += [current.__cause__, current.__context__]
        todo.extend((n, level + 1) for n in nested if isinstance(n, BaseException))
    return seen


def _requests_error(exc: requests.exceptions.RequestException, *, read_only: bool) -> SendError:
    """Classify a `requests` failure by whether the request can have reached Twilio.

    requests wraps urllib3: a refused or timed-out *connect* arrives as ConnectionError /
    ConnectTimeout around MaxRetryError(reason=NewConnectionError|ConnectTimeoutError) -- the
    request never left. A ReadTimeout, or ConnectionError around urllib3's ProtocolError
    ("Connection aborted", RemoteDisconnected, reset) happens after the request was written: the
    server may have processed it (urllib3's own Retry treats these as "read errors" for the same
    reason). Note that a keep-alive connection the server closed just as we reused it also shows
    up as "aborted"; treating it as ambiguous is the safe side -- reconciliation resolves it.

    For a read-only call (`read_only`), "ambiguous" is meaningless and becomes transient.
    """
    never_sent_types: tuple[type[BaseException], ...] = (
        urllib3.exceptions.ConnectTimeoutError,  # includes NewConnectionError, NameResolutionError
        urllib3.exceptions.ClosedPoolError,
        urllib3.exceptions.SSLError,  # TLS handshake precedes the request
        urllib3.exceptions.ProxyError,
        ConnectionRefusedError,
    )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TransientSendError("Could not connect to Twilio (connect timeout)")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.SSLError)):
        if isinstance(exc, requests.exceptions.SSLError) or any(
            isinstance(e, never_sent_types) for e in _exception_chain(exc)
        ):
            return TransientSendError(f"Could not connect to Twilio ({type(exc).__name__})")
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
        ),
    ):
        return TransientSendError(f"Request to Twilio could not be built ({type(exc).__name__})")
    if read_only:
        return TransientSendError(f"Twilio request failed ({type(exc).__name__})")
    return AmbiguousSendError(
        f"No answer from Twilio after the request was sent ({type(exc).__name__}); "
        "it may have been accepted"
    )


# --------------------------------------------------------------------------------------------
# Outbox
# --------------------------------------------------------------------------------------------


class OutboxSender:
    """The embedded default: nothing leaves the machine.

    The dispatcher already stores the rendered message with its send record (that is what the
    staff UI shows), so this sender only hands back a deterministic id.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, message: OutgoingMessage) -> str:
        """Return ``outbox-<message_id>``; raises ValueError if the channel does not match."""
        if message.channel != self.channel:
            raise ValueError(f"{self.channel} outbox cannot send a {message.channel} message")
        return f"outbox-{message.message_id}"


# --------------------------------------------------------------------------------------------
# Twilio
# --------------------------------------------------------------------------------------------

# Twilio error codes that mean "this message to this recipient will never go through".
# 300xx codes normally arrive later in status callbacks (ErrorCode), not from the create call,
# but a webhook handler can reuse this table for the reason text.
TWILIO_PERMANENT_CODES: Mapping[int, str] = {
    21211: "Invalid phone number",
    21408: "SMS to this number's region is not enabled on the Twilio account",
    21610: "Recipient opted out (STOP) at the carrier",
    21612: "Number cannot be reached by SMS",
    21614: "Number is not a mobile number",
    21617: "Message body exceeds the 1600-character limit",
    30004: "Message blocked by the recipient or carrier",
    30005: "Unknown or inactive handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered by the carrier",
    30034: "Sender number is not registered for US A2P 10DLC",
}

# Of those (plus the sender-side ones below), the codes caused by our account configuration:
# every recipient would fail the same way.
_TWILIO_ACCOUNT_LEVEL_CODES: Mapping[int, str] = {
    21212: "Invalid 'From' number",
    21408: TWILIO_PERMANENT_CODES[21408],
    21606: "The 'From' number cannot send SMS (not owned or not SMS-capable)",
    21705: "Invalid Messaging Service",
    30034: TWILIO_PERMANENT_CODES[30034],
}

_TWILIO_AUTH_CODES = {20003, 20005, 20006}  # authenticate / account suspended / not active


@dataclass(frozen=True, slots=True)
class ProviderMessage:
    """A message as Twilio lists it (for reconciling an ambiguous send)."""

    sid: str
    to: str
    body: str
    status: str
    date_created: datetime | None


class _RecordingTwilioHttpClient(TwilioHttpClient):
    """TwilioHttpClient that keeps the last raw response of *this* client.

    TwilioRestException carries status/code/message but no headers, so Retry-After is only
    visible on the raw response. TwilioHttpClient itself stores it in `_test_only_last_response`
    (a name we should not depend on); we keep our own. One instance per thread (see
    `TwilioSender`), so "last" is unambiguous.
    """

    last_response: TwilioResponse | None = None

    def request(self, *args: Any, **kwargs: Any) -> TwilioResponse:
        self.last_response = None
        response = super().request(*args, **kwargs)
        self.last_response = response
        return response


class TwilioSender:
    """SMS through Twilio's Programmable Messaging API (`twilio` SDK, Messages resource).

    Thread-safe: each thread gets its own `twilio.rest.Client` with its own
    `TwilioHttpClient(pool_connections=True)` -- a requests.Session reused for keep-alive.
    A Session is not documented as thread-safe (psf/requests#2766, #1871; the usual advice is
    one Session per thread) and TwilioHttpClient also overwrites per-request state on itself,
    so sharing one client across dispatcher threads is avoided.

    `base_url` (e.g. the sandbox's URL) replaces ``https://api.twilio.com`` for every request:
    it is set on the SDK's `Api` domain (`client.api.base_url`), the same attribute the SDK
    builds all v2010 URLs and next-page URLs from.
    """

    channel: Channel = Channel.SMS

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        status_callback_base: str,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("TwilioSender needs an account SID and an auth token")
        if not messaging_service_sid and not from_number:
            raise ValueError("TwilioSender needs a messaging_service_sid or a from_number")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._messaging_service_sid = messaging_service_sid
        self._from_number = from_number
        self._status_callback_base = _check_base_url("status_callback_base", status_callback_base)
        self._base_url = _check_base_url("base_url", base_url) if base_url else None
        self._timeout = timeout
        self._local = threading.local()

    def _client(self) -> tuple[TwilioClient, _RecordingTwilioHttpClient]:
        local = self._local
        client: TwilioClient | None = getattr(local, "client", None)
        if client is None:
            http = _RecordingTwilioHttpClient(pool_connections=True, timeout=self._timeout)
            client = TwilioClient(self._account_sid, self._auth_token, http_client=http)
            if self._base_url:
                client.api.base_url = self._base_url
                # ClientBase.get_hostname rewrites the host for TWILIO_EDGE / TWILIO_REGION
                # (read from os.environ); that would mangle a sandbox host like 127.0.0.1:8025.
                client.edge = None
                client.region = None
            local.client, local.http = client, http
        return client, local.http

    def status_callback_url(self, message_id: int) -> str:
        """The StatusCallback URL for our message id: ``<status_callback_base>?m=<id>``."""
        return _with_query(self._status_callback_base, m=str(message_id))

    def send(self, message: OutgoingMessage) -> str:
        """Create one Twilio Message; return its SID (``SM…``).

        Messaging Service SID is preferred over From (Twilio then picks the sender, handles
        sticky sender and opt-out lists). Raises the errors documented in this module.
        """
        if message.channel != Channel.SMS:
            raise ValueError(f"TwilioSender cannot send a {message.channel} message")
        client, http = self._client()
        sender: dict[str, str] = (
            {"messaging_service_sid": self._messaging_service_sid}
            if self._messaging_service_sid
            else {"from_": self._from_number or ""}
        )
        try:
            created = client.messages.create(
                to=message.to,
                body=message.text,
                status_callback=self.status_callback_url(message.message_id),
                **sender,
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _twilio_rest_error(exc, http.last_response) from exc
        except requests.exceptions.RequestException as exc:
            raise _requests_error(exc, read_only=False) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Anything below requests that escaped its wrapping: the request may have left.
            raise AmbiguousSendError(
                f"Twilio request failed after sending ({type(exc).__name__})"
            ) from exc
        except ValueError as exc:
            # A 2xx whose body is not the JSON we expect: Twilio took the request.
            raise AmbiguousSendError(
                "Twilio accepted the request but its answer was unreadable"
            ) from exc
        return str(created.sid)

    def find_sent(self, to: str, since: datetime) -> list[ProviderMessage]:
        """Messages Twilio has for recipient `to` created at or after `since` (newest first).

        For reconciling an ambiguous send: match on body and time. Deliberately *not* filtered
        with Twilio's ``DateSent>``: a message still waiting in Twilio's queue has no DateSent
        (a long code sends one per second, so the queue can hold a message for minutes or hours),
        and a filter on it would report "never sent" for a message that is about to go -- and the
        reconciler would send it a second time. One recipient gets a handful of messages from us,
        so listing by recipient and filtering on DateCreated here is cheap.
        Raises `TransientSendError` / `AuthSendError` / `PermanentSendError` on failure.
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        since_utc = since.astimezone(UTC)
        client, http = self._client()
        try:
            found = client.messages.list(to=to, page_size=50, limit=200)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _twilio_rest_error(exc, http.last_response) from exc
        except TwilioException as exc:
            # Quirk: a failed *list* page is not a TwilioRestException -- Page.process_response
            # raises a bare TwilioException("Unable to fetch page", response). Rebuild it.
            raise _twilio_page_error(exc, http.last_response) from exc
        except requests.exceptions.RequestException as exc:
            raise _requests_error(exc, read_only=True) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransientSendError(f"Listing Twilio messages failed ({type(exc).__name__})") from exc
        cutoff = since_utc.replace(microsecond=0)
        result: list[ProviderMessage] = []
        for item in found:
            created = item.date_created if isinstance(item.date_created, datetime) else None
            if created is not None and created < cutoff:
                continue
            result.append(
                ProviderMessage(
                    sid=str(item.sid),
                    to=str(item.to),
                    body=str(item.body or ""),
                    status=str(item.status),
                    date_created=created,
                )
            )
        return result


def _twilio_page_error(exc: TwilioException, response: TwilioResponse | None) -> SendError:
    if response is None:
        return TransientSendError(f"Listing Twilio messages failed ({exc})")
    try:
        payload = json.loads(response.text)
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, dict) else {}
    rest = TwilioRestException(
        response.status_code, "", str(payload.get("message", "")), payload.get("code"), "GET"
    )
    error = _twilio_rest_error(rest, response)
    if isinstance(error, PermanentSendError):
        # A refused *list* says nothing about the recipient: never stop a channel over it.
        return TransientSendError(f"Listing Twilio messages failed: {error.reason}", code=error.code)
    return error


def _twilio_rest_error(
    exc: TwilioRestException | TwilioServiceException, response: TwilioResponse | None
) -> SendError:
    status = int(exc.status or 0)
    code = int(exc.code) if isinstance(exc.code, int) or str(exc.code or "").isdigit() else None
    raw_message = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    detail = _redact(str(raw_message or ""))
    headers = response.headers if response is not None and response.headers else {}
    retry_after = _parse_retry_after(headers.get("Retry-After")) if headers else None

    if status in (401, 403) or code in _TWILIO_AUTH_CODES:
        return AuthSendError(
            "Twilio rejected the credentials (check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)",
            code=code or status,
        )
    if status == 404:
        # On the create endpoint a 404 (code 20404) means the account SID in the URL is not ours
        # or the base URL is wrong: a configuration problem, not a recipient problem.
        return AuthSendError(
            "Twilio account or endpoint not found (check the account SID / base URL)",
            code=code or status,
        )
    if status == 429 or status >= 500:
        return TransientSendError(
            f"Twilio is unavailable or rate-limiting (HTTP {status})",
            code=code or status,
            retry_after=retry_after,
        )
    if code is not None and code in _TWILIO_ACCOUNT_LEVEL_CODES:
        return PermanentSendError(
            _TWILIO_ACCOUNT_LEVEL_CODES[code], code=code, affects_all_recipients=True
        )
    if code is not None and code in TWILIO_PERMANENT_CODES:
        return PermanentSendError(TWILIO_PERMANENT_CODES[code], code=code)
    reason = f"Twilio refused the message (HTTP {status})"
    return PermanentSendError(f"{reason}: {detail}" if detail else reason, code=code or status)


# --------------------------------------------------------------------------------------------
# SendGrid
# --------------------------------------------------------------------------------------------


class SendGridSender:
    """Email through SendGrid's v3 Mail Send API (`sendgrid` SDK over python_http_client).

    Thread-safe: python_http_client opens a fresh urllib connection per request. The only
    shared mutable state is the client's request-header dict, which the SDK `setdefault`s
    ``Content-Type`` into on each POST while another thread may be iterating it; we set it once
    here so those calls never change the dict.

    `base_url` replaces ``https://api.sendgrid.com`` (the SDK's `host`); the SDK appends ``/v3``.
    """

    channel: Channel = Channel.EMAIL

    def __init__(
        self,
        api_key: str,
        from_email: str,
        from_name: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        click_tracking: bool = False,
    ) -> None:
        if not api_key:
            # SendGridAPIClient would silently fall back to os.environ["SENDGRID_API_KEY"].
            raise ValueError("SendGridSender needs an API key")
        if "@" not in from_email:
            raise ValueError(f"from_email is not an email address: {from_email!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._from_email = from_email
        self._from_name = from_name
        self._click_tracking = click_tracking
        self._unsubscribe_mailto = (
            f"mailto:unsubscribe@{from_email.rsplit('@', 1)[1]}?subject=unsubscribe"
        )
        if base_url:
            self._sg = SendGridAPIClient(api_key=api_key, host=_check_base_url("base_url", base_url))
        else:
            self._sg = SendGridAPIClient(api_key=api_key)
        # BaseInterface builds python_http_client.Client without a timeout (urllib would wait
        # forever). The attribute is copied to every child client (`client.mail.send`), so
        # setting it on the root client covers sg.send().
        self._sg.client.timeout = timeout
        self._sg.client.request_headers.setdefault("Content-Type", "application/json")
        self._timeout = timeout

    def build_mail(self, message: OutgoingMessage) -> Mail:
        """The SendGrid `Mail` for `message` (exposed for previews and tests)."""
        if message.channel != Channel.EMAIL:
            raise ValueError(f"SendGridSender cannot send a {message.channel} message")
        if not message.subject:
            raise ValueError("an email needs a subject")
        mail = Mail(
            from_email=From(self._from_email, self._from_name),
            to_emails=To(message.to),
            subject=Subject(message.subject),
            # Mail.add_content keeps text/plain first and text/html after it, which is the
            # order SendGrid requires (and RFC 2046: least faithful alternative first).
            plain_text_content=PlainTextContent(message.text),
            html_content=HtmlContent(message.html) if message.html else None,
        )
        if message.unsubscribe_url:
            # RFC 2369 + RFC 8058: an HTTPS one-click URL first (Gmail/Yahoo bulk-sender rules
            # require it), a mailto fallback second; -Post makes the URL one-click.
            mail.add_header(
                Header(
                    "List-Unsubscribe",
                    f"<{message.unsubscribe_url}>, <{self._unsubscribe_mailto}>",
                )
            )
            mail.add_header(Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        mail.add_custom_arg(CustomArg("drip_message_id", str(message.message_id)))
        # Mail.add_category inserts at index 0 (the list comes out reversed): add in reverse.
        for name in reversed(message.categories[:10]):  # SendGrid allows 10 categories
            mail.add_category(Category(name))
        # Click tracking rewrites every link through SendGrid's domain: it would break our own
        # signed /b/ and /u/ links' readability and leak which patient clicked to a third party.
        mail.tracking_settings = TrackingSettings(
            click_tracking=ClickTracking(self._click_tracking, self._click_tracking)
        )
        return mail

    def send(self, message: OutgoingMessage) -> str:
        """POST /v3/mail/send once; return the ``X-Message-Id`` of the 202 response.

        The event webhook's ``sg_message_id`` starts with this id, and every event carries our
        ``drip_message_id`` custom arg. Raises the errors documented in this module.
        """
        mail = self.build_mail(message)
        try:
            response = self._sg.send(mail)
        except python_http_client.exceptions.HTTPError as exc:
            raise _sendgrid_http_error(exc) from exc
        except urllib.error.URLError as exc:
            # urllib wraps OSErrors raised while connecting and writing the request (refused,
            # DNS, connect timeout, TLS): the request did not reach SendGrid whole.
            raise TransientSendError(
                f"Could not reach SendGrid ({type(exc.reason).__name__})"
            ) from exc
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            # Raised while *reading* the response (urllib does not wrap those): the request was
            # written, SendGrid may have queued the mail.
            raise AmbiguousSendError(
                f"No answer from SendGrid after the request was sent ({type(exc).__name__}); "
                "it may have been accepted"
            ) from exc
        message_id = _header(response.headers, "X-Message-Id")
        if not message_id:
            # 200 without an id happens in SendGrid's sandbox_mode (nothing is sent); a 202
            # without one would be a provider bug. Either way we cannot correlate by id.
            raise AmbiguousSendError(
                f"SendGrid answered HTTP {response.status_code} without X-Message-Id",
                code=response.status_code,
            )
        return message_id


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return str(value) if value is not None else None


def _sendgrid_errors(exc: python_http_client.exceptions.HTTPError) -> list[dict[str, Any]]:
    try:
        body = exc.body.decode("utf-8") if isinstance(exc.body, bytes) else str(exc.body or "")
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _sendgrid_http_error(exc: python_http_client.exceptions.HTTPError) -> SendError:
    status = int(exc.status_code)
    errors = _sendgrid_errors(exc)
    first = _redact(str(errors[0].get("message") or "")) if errors else ""
    if status in (401, 403):
        return AuthSendError(
            "SendGrid rejected the API key" + (f": {first}" if first else ""), code=status
        )
    if status == 404:
        return AuthSendError("SendGrid endpoint not found (check the base URL)", code=status)
    if status == 429 or status >= 500:
        retry_after = _parse_retry_after(_header(exc.headers, "Retry-After"))
        if retry_after is None and status == 429:
            # SendGrid documents X-RateLimit-Reset (epoch seconds) rather than Retry-After.
            reset = _header(exc.headers, "X-RateLimit-Reset")
            try:
                retry_after = max(0.0, float(reset) - time.time()) if reset else None
            except ValueError:
                retry_after = None
        return TransientSendError(
            f"SendGrid is unavailable or rate-limiting (HTTP {status})",
            code=status,
            retry_after=retry_after,
        )
    if status == 400:
        for error in errors:
            field = str(error.get("field") or "").lower()
            text = str(error.get("message") or "").lower()
            if (field.startswith("personalizations") and ("to" in field or "email" in field)) or (
                "valid address" in text and not field.startswith(("from", "reply_to"))
            ):
                return PermanentSendError(f"Invalid recipient address: {first}", code=status)
            if field.startswith(("from", "reply_to")):
                return PermanentSendError(
                    f"SendGrid refused our sender address: {first}",
                    code=status,
                    affects_all_recipients=True,
                )
    return PermanentSendError(
        f"SendGrid refused the message (HTTP {status})" + (f": {first}" if first else ""),
        code=status,
    )
