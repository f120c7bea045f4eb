"""The plain types every sender shares: `Channel`, `OutgoingMessage`, the send errors, and the
`Sender` and `FindsSent` protocols.

A `Sender` takes a frozen, plain `OutgoingMessage` (never an ORM row: providers import no models and
no database code), makes exactly one provider call and returns the provider's message id, or raises
one of the typed errors below. It never retries and never loops: the dispatcher owns retry policy
(backoff, jitter, Retry-After), the send record and reconciliation.

Error classes, and what the dispatcher does with them (`dispatch/outcome.py`):

=========================  ===================================================  =========================
error                      when                                                 dispatcher
=========================  ===================================================  =========================
`TransientSendError`       the provider surely did not take the message:        retry later (backoff,
                           connection refused, connect timeout, DNS, 429, 5xx   honour ``retry_after``)
`PermanentSendError`       the provider refused this message for this           stop this channel for this
                           recipient: invalid number, opted out, bad address    contact
`AmbiguousSendError`       the request left and the answer was lost (read       do not resend; reconcile
                           timeout, connection dropped after sending)           (status callback / list)
`AccountSendError`         the refusal is on our side of the account and        pause the channel for
                           would hit every recipient: unregistered sender       everyone
                           number, region not enabled, bad From address
`AuthSendError`            (an `AccountSendError`) 401/403: credentials         pause the channel for
                           wrong, expired, revoked; or 404 on the send          everyone
                           endpoint (wrong account/base URL)
=========================  ===================================================  =========================

This module imports nothing of ours: `models` takes `Channel` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Channel(StrEnum):
    """The two ways a message reaches a patient (the one definition; `models` re-exports it)."""

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


@dataclass(frozen=True, slots=True)
class ProviderMessage:
    """A message as the provider lists it (for reconciling an ambiguous send)."""

    sid: str
    to: str
    body: str
    status: str
    date_created: datetime | None


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

    def __init__(self, reason: str, *, code: str | int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """The provider refused this message for this recipient; sending it again will fail the same way."""


class AccountSendError(SendError):
    """The provider refused us, not the recipient: every message on the channel would fail alike.

    The cause is on our side of the account (invalid or unregistered sender number, region not
    enabled, bad From address, or — `AuthSendError` — the credentials): stopping the channel for
    one contact would be wrong; the operator must fix the configuration.
    """


class AuthSendError(AccountSendError):
    """The provider rejected our credentials (or the account/endpoint does not exist)."""


class AmbiguousSendError(SendError):
    """The request was sent but no answer came back: the provider may have accepted it.

    Do not resend blindly. The status callback / event webhook (carrying our message id) or a
    `FindsSent` sender resolves it.
    """


@runtime_checkable
class Sender(Protocol):
    """One channel's delivery: the outbox, Twilio or SendGrid."""

    channel: Channel
    provider: str  # stored on the send record: "outbox", "twilio", "sendgrid"

    def send(self, message: OutgoingMessage) -> str:
        """Deliver `message` with one provider call and return the provider's message id.

        Raises `TransientSendError`, `PermanentSendError`, `AmbiguousSendError`,
        `AccountSendError` or `AuthSendError`; never retries, never loops, never sleeps.
        """
        ...


@runtime_checkable
class FindsSent(Protocol):
    """A sender that can list what the provider has for a recipient (Twilio): reconciliation asks it."""

    def find_sent(self, to: str, since: datetime) -> list[ProviderMessage]:
        """Messages the provider has for recipient `to` created at or after `since` (newest first).

        Raises `TransientSendError` / `AuthSendError` / `PermanentSendError` on failure.
        """
        ...
