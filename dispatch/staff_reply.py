"""A text a member of staff writes in the inbox, sent through the runtime's SMS sender (the outbox in
outbox mode, Twilio in providers mode) with the same delivery semantics as the dispatcher's sends.

`send_staff_reply` — the one entry point — ends in one of these ways:

- **refused** (`ReplyRefused`, nothing recorded): the person may not be texted now or the text is
  unfit (`contacts.reply_rules`), or texting is paused for everyone;
- **duplicate**: a reply with the form's idempotency key exists (a double click, a resubmitted
  form, two requests at once): that reply is returned and nothing is sent again;
- **sent**: the send record (a `Message` with no enrollment, status `sending`, handed) and its
  `StaffReply` were committed *before* the provider call; the provider took it: `sent` with its id.
  Twilio's status callbacks (carrying our message id) then move it to delivered/failed like any text;
- **failed**: the provider refused it (permanent: the number is blocked for texts, as the
  dispatcher does) or surely did not take it (transient, account): `failed`, the reason shown, and
  staff may send again (a new form, a new key);
- **unknown**: the request left and the answer was lost: `unknown`, never resent blindly;
  reconciliation asks Twilio (`dispatch.reconcile`) and settles it. A reply left `sending` by a
  process that stopped during the provider call becomes `unknown` there once its lease is over.

Sent replies write a `staff_reply` timeline event and an audit row, and the thread moves on
(`contacts.conversations.replied`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from patient_drip.contacts.blocks import BlockReason, block_channel
from patient_drip.contacts.conversations import replied
from patient_drip.contacts.records import add_rows, audit_row
from patient_drip.contacts.reply_rules import check_reply, text_problems
from patient_drip.dispatch.pauses import paused_channels
from patient_drip.models import Channel, Contact, EventKind, Message, MessageStatus, StaffReply, add_event
from patient_drip.providers.types import AmbiguousSendError, OutgoingMessage, PermanentSendError, SendError
from patient_drip.runtime import Runtime

log = logging.getLogger("drip.staff_reply")

STEP_ID = "staff-reply"
MAX_KEY = 64


class ReplyRefused(Exception):
    """The reply may not go; `reason` says why, in words for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SentReply:
    """What became of a staff reply."""

    message_id: int
    status: str  # sent, failed, unknown (or whatever the provider's callbacks made it, for a duplicate)
    conversational: bool
    duplicate: bool = False
    error: str | None = None


def _existing(rt: Runtime, key: str) -> SentReply | None:
    with rt.sessions() as session:
        row = session.execute(select(StaffReply, Message).join(Message, Message.id == StaffReply.message_id)
                              .where(StaffReply.idempotency_key == key)).first()
        if row is None:
            return None
        reply, message = row
        return SentReply(message.id, message.status, reply.conversational, duplicate=True, error=message.last_error)


def send_staff_reply(rt: Runtime, contact_id: int, body: str, key: str, actor: str, now: datetime) -> SentReply:
    """Send `body` to the contact as a text from `actor`, once per idempotency `key` (see the module
    docstring for every ending). Raises `ReplyRefused`."""
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise ReplyRefused("This form has no valid sending key: reload the page and send again.")
    text = body.strip()
    done = _existing(rt, key)
    if done is not None:
        return done
    sender = rt.senders.get(Channel.SMS)
    if sender is None:
        raise ReplyRefused("Texting is not configured on this installation.")
    window = timedelta(hours=rt.settings.conversation_hours)
    try:
        with rt.sessions() as session, session.begin():
            contact = session.get(Contact, contact_id)
            if contact is None or contact.phone is None:
                raise ReplyRefused("This contact does not exist or has no mobile number.")
            check = check_reply(session, contact, rt.suppression_key, now, window=window)
            if not check.allowed:
                raise ReplyRefused(check.reason)
            problems = text_problems(text, rt.settings.policy_dir)
            if problems:
                raise ReplyRefused(" ".join(problems))
            if Channel.SMS in paused_channels(session):
                raise ReplyRefused("Texting is paused for everyone (see Settings); nothing can be sent until it "
                                   "is resumed.")
            message = Message(enrollment_id=None, contact_id=contact.id, campaign_id="", step_id=STEP_ID,
                              channel=Channel.SMS, status=MessageStatus.SENDING, to_address=contact.phone,
                              body_text=text, provider=sender.provider, attempts=1, created_at=now, attempted_at=now,
                              handed_at=now, worker_id="staff", updated_at=now)
            session.add(message)
            session.flush()
            session.add(StaffReply(message_id=message.id, contact_id=contact.id, idempotency_key=key, sent_by=actor,
                                   conversational=check.conversational, created_at=now))
            session.flush()
            outgoing = OutgoingMessage(message_id=message.id, channel=Channel.SMS, to=contact.phone, text=text,
                                       categories=("staff-reply",))
            conversational = check.conversational
    except IntegrityError:
        # The same key committed by a request that ran at the same time: that one sends.
        done = _existing(rt, key)
        if done is None:
            raise
        return done
    try:
        provider_id: str | None = sender.send(outgoing)
        error: SendError | None = None
    except SendError as exc:
        provider_id, error = None, exc
    return _record(rt, outgoing.message_id, provider_id, error, actor, conversational, now)


def _record(rt: Runtime, message_id: int, provider_id: str | None, error: SendError | None, actor: str,
            conversational: bool, now: datetime) -> SentReply:
    """Write the provider's answer onto the send record (a callback that came first is kept)."""
    with rt.sessions() as session, session.begin():
        message = session.get(Message, message_id, with_for_update=True)
        assert message is not None
        contact = session.get(Contact, message.contact_id)
        message.updated_at = now
        if error is None:
            if message.status == MessageStatus.SENDING:
                message.status = MessageStatus.SENT
            message.provider_message_id = message.provider_message_id or provider_id
            message.sent_at = message.sent_at or now
            add_event(session, EventKind.STAFF_REPLY, now, contact_id=message.contact_id, message_id=message.id,
                      by=actor, conversational=conversational)
            add_rows(session, [audit_row(actor, EventKind.STAFF_REPLY, now, message.contact_id, message_id=message.id,
                                         conversational=conversational)])
            replied(session, message.contact_id, actor, now)
            log.info("staff reply %s sent (contact %s)", message.id, message.contact_id)
            return SentReply(message.id, message.status, conversational)
        message.last_error = str(error.reason)[:500]
        message.error_code = None if error.code is None else str(error.code)[:40]
        if isinstance(error, AmbiguousSendError):
            message.status = MessageStatus.UNKNOWN
            add_event(session, EventKind.MESSAGE_UNKNOWN, now, contact_id=message.contact_id, message_id=message.id,
                      error=error.reason)
            log.warning("staff reply %s outcome unknown: %s", message.id, error.reason)
            return SentReply(message.id, message.status, conversational,
                             error="The provider did not answer: the text may or may not have gone. It is being "
                                   "checked; do not send it again yet.")
        message.status = MessageStatus.FAILED
        add_event(session, EventKind.MESSAGE_FAILED, now, contact_id=message.contact_id, message_id=message.id,
                  error=error.reason, code=message.error_code)
        if isinstance(error, PermanentSendError) and contact is not None:
            detail = f"{error.reason} (code {error.code})" if error.code else error.reason
            block_channel(session, contact, Channel.SMS, BlockReason.FAILED, detail, now, actor)
        log.warning("staff reply %s failed: %s", message.id, error.reason)
        return SentReply(message.id, message.status, conversational, error=f"Not sent: {error.reason}.")
