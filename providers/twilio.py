"""SMS through Twilio's Programmable Messaging API (the `twilio` SDK), and Twilio's error codes.

`TwilioSender` is a `Sender` and a `FindsSent` (reconciliation lists what Twilio has for a number).
Provider quirks are noted next to the code that needs them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient

from patient_drip.providers.shared import check_base_url, parse_retry_after, redact
from patient_drip.providers.types import (
    AccountSendError,
    AmbiguousSendError,
    AuthSendError,
    Channel,
    OutgoingMessage,
    PermanentSendError,
    ProviderMessage,
    SendError,
    TransientSendError,
)

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
    provider = "twilio"

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
        self._status_callback_base = check_base_url("status_callback_base", status_callback_base)
        self._base_url = check_base_url("base_url", base_url) if base_url else None
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
        sticky sender and opt-out lists). Raises the errors of `providers.types`.
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
    if isinstance(error, PermanentSendError) or (
        isinstance(error, AccountSendError) and not isinstance(error, AuthSendError)
    ):
        # A refused *list* says nothing about the recipient or the sender number: never stop or
        # pause a channel over it (wrong credentials, though, are wrong for sending too).
        return TransientSendError(f"Listing Twilio messages failed: {error.reason}", code=error.code)
    return error


def _twilio_rest_error(
    exc: TwilioRestException | TwilioServiceException, response: TwilioResponse | None
) -> SendError:
    status = int(exc.status or 0)
    code = int(exc.code) if isinstance(exc.code, int) or str(exc.code or "").isdigit() else None
    raw_message = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    detail = redact(str(raw_message or ""))
    headers = response.headers if response is not None and response.headers else {}
    retry_after = parse_retry_after(headers.get("Retry-After")) if headers else None

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
        return AccountSendError(_TWILIO_ACCOUNT_LEVEL_CODES[code], code=code)
    if code is not None and code in TWILIO_PERMANENT_CODES:
        return PermanentSendError(TWILIO_PERMANENT_CODES[code], code=code)
    reason = f"Twilio refused the message (HTTP {status})"
    return PermanentSendError(f"{reason}: {detail}" if detail else reason, code=code or status)




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


