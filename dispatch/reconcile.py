"""Reconciliation: decide the fate of sends whose outcome is unknown, without guessing.

- Outbox: nothing left the machine, so the send can safely be redone.
- SMS: ask Twilio for messages to that number since the attempt. Found → sent. Not found after a
  grace period (Twilio lists a message once it is created) → it never arrived: send again.
- Email: SendGrid has no cheap per-message lookup; its event webhook (carrying our message id)
  settles most cases. Without any event after `EMAIL_REVIEW_AFTER`, staff review it.

Staff settle a send in review with `settle_by_staff` ("mark as sent" or "send again"), the one
rule the review page calls. Only sends a worker had handed to the provider ever get here: one it
had not (no `handed_at`) is simply sent again by the dispatcher (`step.requeue_unhanded`).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from patient_drip.contacts.tasks import close_tasks, open_task
from patient_drip.content.campaign import Campaign
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.dispatch import queue
from patient_drip.due_now import mark_due
from patient_drip.models import (
    Channel,
    Enrollment,
    EnrollmentStatus,
    EventKind,
    Message,
    MessageStatus,
    TaskKind,
    add_event,
    audit,
)
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
    with rt.sessions() as session, session.begin():
        # A staff reply (no enrollment, so no worker comes back for it) still `sending` long after it
        # was handed over: the process stopped during the provider call. Its fate is unknown.
        session.execute(update(Message).where(
            Message.enrollment_id.is_(None), Message.status == MessageStatus.SENDING,
            Message.handed_at.is_not(None), Message.handed_at < now - queue.LEASE,
        ).values(status=MessageStatus.UNKNOWN, updated_at=now))
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
        attempted = message.handed_at or message.attempted_at or message.created_at
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
    """The provider never got it: queue the same send record again (same row, so still one send).
    A staff reply has no sequence to send it again: it fails, and the inbox shows it (staff write again)."""
    if message.enrollment_id is None:
        _settle(session, message, MessageStatus.FAILED, f"reconciled: {why}; not sent (send the reply again)", now)
        add_event(session, EventKind.MESSAGE_RECONCILED, now, contact_id=message.contact_id, message_id=message.id,
                  found=False)
        return "failed"
    _settle(session, message, MessageStatus.RETRYING, f"reconciled: {why}; sending again", now)
    add_event(session, EventKind.MESSAGE_RECONCILED, now, contact_id=message.contact_id, message_id=message.id,
              found=False)
    log.info("reconciled message %s: %s; queued again", message.id, why)
    return "resend"


def _review(session: Session, message: Message, now: datetime, why: str) -> str:
    _settle(session, message, MessageStatus.NEEDS_REVIEW, f"needs review: {why}", now)
    add_event(session, EventKind.MESSAGE_NEEDS_REVIEW, now, contact_id=message.contact_id, message_id=message.id,
              reason=why)
    open_task(session, TaskKind.REVIEW, now, contact_id=message.contact_id, message_id=message.id)
    log.warning("message %s needs staff review: %s", message.id, why)
    return "needs_review"


def _settle(session: Session, message: Message, status: MessageStatus, note: str, now: datetime) -> None:
    """Give the unknown send its new status, and let its sequence go on at once: the send itself is
    retried (same row) or left to staff; either way the enrollment need not wait for it."""
    message.status = status
    message.last_error = note
    message.updated_at = now
    enrollment = session.get(Enrollment, message.enrollment_id) if message.enrollment_id is not None else None
    if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
        enrollment.next_due_at = now
        enrollment.claimed_by = None


# -- staff decisions ------------------------------------------------------------------------------------


class ReviewAction(StrEnum):
    """What staff decided about a send in review."""

    MARK_SENT = "mark_sent"  # it reached the patient (they confirmed it, or the provider's log shows it)
    SEND_AGAIN = "send_again"  # it did not: send the same record again


class ReviewError(Exception):
    """A staff decision the rules refuse; the message says why, in words for the page."""


def settle_by_staff(session: Session, campaigns: dict[str, Campaign], message_id: int, action: ReviewAction,
                    actor: str, now: datetime) -> Message:
    """Settle one send in review (`needs_review`) as staff decided, in the caller's transaction;
    returns the record. Every entry point (the review page) calls this; nothing else settles one.

    - `MARK_SENT`: the record becomes `sent` (sent when it was handed over). Its sequence already
      went on when it was put in review, so nothing else moves.
    - `SEND_AGAIN`: the same record goes back to `retrying` and its enrollment is walked back to
      that step, due now (a finished sequence is reopened). The dispatcher sends it like any retry
      — consent, blocks, pauses and the send window still apply — and then walks forward over the
      steps already done to where the sequence was. No second record: the unique key
      (enrollment, step, channel) holds.

    Both write a `message_settled` timeline event and an audit row (who, what, when).
    Raises `ReviewError` when the record does not exist or is no longer in review (settled by
    someone else first), or — for `SEND_AGAIN` — when the sequence ended (booked, stopped), is
    paused, is being sent right now by a worker, or its campaign is no longer loaded."""
    message = session.get(Message, message_id)
    if message is None:
        raise ReviewError("This message does not exist.")
    # Before the message, as workers do (a staff reply has no enrollment: "send again" is refused for it).
    enrollment = queue.lock_enrollment(session, message.enrollment_id) if message.enrollment_id is not None else None
    session.refresh(message, with_for_update=True)
    if message.status != MessageStatus.NEEDS_REVIEW:
        raise ReviewError(f"This message is no longer waiting for review (it is {message.status}).")
    if action == ReviewAction.SEND_AGAIN:
        _walk_back(session, enrollment, campaigns, message, now)
        mark_due(session, now, now)  # staff asked for it now: wake the dispatchers when this commits
        message.status = MessageStatus.RETRYING
        note = f"sent again on staff decision ({actor})"
    else:
        message.status = MessageStatus.SENT
        message.sent_at = message.sent_at or message.handed_at or message.attempted_at or now
        note = f"marked as sent by staff ({actor})"
    message.last_error = note
    message.updated_at = now
    add_event(session, EventKind.MESSAGE_SETTLED, now, contact_id=message.contact_id,
              enrollment_id=message.enrollment_id, message_id=message.id, decision=str(action), by=actor)
    audit(session, actor, EventKind.MESSAGE_SETTLED, now, contact_id=message.contact_id, message_id=message.id,
          decision=str(action), step=message.step_id, channel=message.channel)
    close_tasks(session, (TaskKind.REVIEW,), now, actor, message_id=message.id)
    log.info("message %s settled by staff: %s", message.id, action)
    return message


def _walk_back(session: Session, enrollment: Enrollment | None, campaigns: dict[str, Campaign], message: Message,
               now: datetime) -> None:
    """Put the enrollment back on `message`'s step, due now, or refuse (`ReviewError`)."""
    if enrollment is None:
        raise ReviewError("This message's sequence no longer exists.")
    if enrollment.status == EnrollmentStatus.PAUSED:
        raise ReviewError("This sequence is paused: resume it first, then send again.")
    if enrollment.status not in (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED):
        reason = f" ({enrollment.exit_reason})" if enrollment.exit_reason else ""
        raise ReviewError(f"This sequence has ended{reason}: nothing more is sent to this person.")
    if enrollment.claimed_by is not None and enrollment.next_due_at is not None and enrollment.next_due_at > now:
        raise ReviewError("A worker is sending this sequence's next message right now: try again in a minute.")
    campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
    index = next((i for i, step in enumerate(campaign.steps if campaign else ())
                  if step.id == message.step_id and str(step.channel) == message.channel), None)
    if index is None:
        raise ReviewError("This message's campaign step is no longer loaded: it cannot be sent again.")
    enrollment.step_index = min(enrollment.step_index, index)
    enrollment.status = EnrollmentStatus.ACTIVE
    enrollment.ended_at = None
    enrollment.next_due_at = now
    enrollment.claimed_by = None
