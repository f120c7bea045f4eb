"""Reconciliation: decide the fate of sends whose outcome is unknown, without guessing.

- Outbox: nothing left the machine, so the send can safely be redone.
- SMS: ask Twilio for messages to that number since the attempt. Found → sent. Not found after a
  grace period (Twilio lists a message once it is created) → it never arrived: send again.
- Email: SendGrid has no cheap per-message lookup; its event webhook (carrying our message id)
  settles most cases. Without any event after `EMAIL_REVIEW_AFTER`, staff review it.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.models import Channel, Enrollment, EnrollmentStatus, EventKind, Message, MessageStatus, add_event
from patient_drip.runtime import Runtime
from patient_drip.providers.types import FindsSent, SendError

log = logging.getLogger("drip.reconcile")

SMS_LIST_GRACE = timedelta(minutes=2)
EMAIL_REVIEW_AFTER = timedelta(minutes=30)
SMS_REVIEW_AFTER = timedelta(hours=6)  # Twilio unreachable this long: hand it to a person
BATCH = 200


def reconcile_unknown(rt: Runtime, now: datetime) -> dict[str, int]:
    """Resolve what can be resolved now; returns counts by resolution."""
    counts: Counter[str] = Counter()
    with rt.sessions() as session:
        ids = list(session.scalars(
            select(Message.id).where(Message.status == MessageStatus.UNKNOWN).order_by(Message.id).limit(BATCH)
        ))
    for message_id in ids:
        counts[_reconcile_one(rt, message_id, now)] += 1
    counts.pop("waiting", None)
    return dict(counts)


def _reconcile_one(rt: Runtime, message_id: int, now: datetime) -> str:
    with rt.sessions() as session, session.begin():
        message = session.get(Message, message_id)
        if message is None or message.status != MessageStatus.UNKNOWN:
            return "settled"
        attempted = message.attempted_at or message.created_at
        if message.provider in ("outbox", ""):
            return _resend(session, message, now, "outbox: nothing left the machine")
        if message.channel == Channel.SMS:
            sender = rt.senders.get(Channel.SMS)
            if not isinstance(sender, FindsSent):
                return _review(session, message, now, "no way to ask the SMS provider")
            try:
                found = sender.find_sent(message.to_address or "", attempted - timedelta(minutes=1))
            except SendError as exc:
                if now - attempted > SMS_REVIEW_AFTER:
                    return _review(session, message, now, f"could not ask Twilio: {exc}")
                log.warning("reconcile message %s: Twilio lookup failed (%s); will retry", message.id, exc)
                return "waiting"
            match = next((item for item in found if item.body == (message.body_text or "")), None)
            if match is not None:
                message.status = MessageStatus.DELIVERED if match.status == "delivered" else MessageStatus.SENT
                message.provider_message_id = match.sid
                message.sent_at = message.sent_at or attempted
                message.updated_at = now
                add_event(session, EventKind.MESSAGE_RECONCILED, now, contact_id=message.contact_id,
                          message_id=message.id, found=True)
                log.info("reconciled message %s: Twilio has it (%s)", message.id, match.sid)
                return "found"
            if now - attempted < SMS_LIST_GRACE:
                return "waiting"
            return _resend(session, message, now, "Twilio has no such message")
        if now - attempted >= EMAIL_REVIEW_AFTER:
            return _review(session, message, now, "no SendGrid event arrived for this email")
        return "waiting"


def _resend(session: Session, message: Message, now: datetime, why: str) -> str:
    """The provider never got it: queue the same send record again (same row, so still one send)."""
    _settle(session, message, MessageStatus.RETRYING, f"reconciled: {why}; sending again", now)
    add_event(session, EventKind.MESSAGE_RECONCILED, now, contact_id=message.contact_id, message_id=message.id,
              found=False)
    log.info("reconciled message %s: %s; queued again", message.id, why)
    return "resend"


def _review(session: Session, message: Message, now: datetime, why: str) -> str:
    _settle(session, message, MessageStatus.NEEDS_REVIEW, f"needs review: {why}", now)
    add_event(session, EventKind.MESSAGE_NEEDS_REVIEW, now, contact_id=message.contact_id, message_id=message.id,
              reason=why)
    log.warning("message %s needs staff review: %s", message.id, why)
    return "needs_review"


def _settle(session: Session, message: Message, status: MessageStatus, note: str, now: datetime) -> None:
    """Give the unknown send its new status, and let its sequence go on at once: the send itself is
    retried (same row) or left to staff; either way the enrollment need not wait for it."""
    message.status = status
    message.last_error = note
    message.updated_at = now
    enrollment = session.get(Enrollment, message.enrollment_id)
    if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
        enrollment.next_due_at = now
        enrollment.claimed_by = None
