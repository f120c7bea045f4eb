"""Email through SendGrid's v3 Mail Send API (the `sendgrid` SDK over python_http_client).

Provider quirks are noted next to the code that needs them.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
from typing import Any

import python_http_client.exceptions
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

from patient_drip.providers.shared import check_base_url, parse_retry_after, redact
from patient_drip.providers.types import (
    AccountSendError,
    AmbiguousSendError,
    AuthSendError,
    Channel,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)


class SendGridSender:
    """Email through SendGrid's v3 Mail Send API (`sendgrid` SDK over python_http_client).

    Thread-safe: python_http_client opens a fresh urllib connection per request. The only
    shared mutable state is the client's request-header dict, which the SDK `setdefault`s
    ``Content-Type`` into on each POST while another thread may be iterating it; we set it once
    here so those calls never change the dict.

    `base_url` replaces ``https://api.sendgrid.com`` (the SDK's `host`); the SDK appends ``/v3``.
    """

    channel: Channel = Channel.EMAIL
    provider = "sendgrid"

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
            self._sg = SendGridAPIClient(api_key=api_key, host=check_base_url("base_url", base_url))
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
        ``drip_message_id`` custom arg. Raises the errors of `providers.types`.
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
    first = redact(str(errors[0].get("message") or "")) if errors else ""
    if status in (401, 403):
        return AuthSendError(
            "SendGrid rejected the API key" + (f": {first}" if first else ""), code=status
        )
    if status == 404:
        return AuthSendError("SendGrid endpoint not found (check the base URL)", code=status)
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(_header(exc.headers, "Retry-After"))
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
                return AccountSendError(f"SendGrid refused our sender address: {first}", code=status)
    return PermanentSendError(
        f"SendGrid refused the message (HTTP {status})" + (f": {first}" if first else ""),
        code=status,
    )
