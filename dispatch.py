"""Dispatch: claim due enrollments, write the send record, render, deliver, record, advance.

Delivery semantics (README "Guarantees"):
- A message row is committed with status `sending` *before* the provider is called; the unique key
  (enrollment, step, channel) makes a second row — and so a second send — of the same step impossible.
- A row found still `sending` after its lease ran out belongs to a worker that died mid-call: it is
  marked `unknown` and reconciled later (status callback, or asking Twilio), never sent again blindly.
- Transient errors retry the same row with exponential backoff and jitter, honouring Retry-After;
  permanent errors stop that channel for that contact; ambiguous ones become `unknown`; auth
  errors pause the channel for everyone instead of burning through the queue.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import db
from campaign import Campaign, Step
from enrollment import usable_channels
from history import add_event
from models import (
    SENT_LIKE,
    Channel,
    Contact,
    Enrollment,
    EnrollmentStatus,
    ExitReason,
    Message,
    MessageStatus,
)
from ratelimit import SharedRateLimiter
from rendering import RenderError
from runtime import Runtime
from settings import Settings
from tokens import LinkTokens
from senders import (
    AmbiguousSendError,
    AuthSendError,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from windows import local_day_bounds, next_opening, schedule_into_window, step_due_at

log = logging.getLogger("drip.dispatch")

LEASE = timedelta(minutes=5)  # a claim older than this belongs to a dead worker
PAUSE_RECHECK = timedelta(minutes=1)
RENDER_RETRY = timedelta(minutes=10)
RECONCILE_WAIT = timedelta(minutes=2)  # how often an enrollment waiting on an unknown send looks again
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)


class Outcome:
    SENT = "sent"
    SKIPPED = "skipped"
    RETRYING = "retrying"
    FAILED = "failed"
    UNKNOWN = "unknown"
    DEFERRED = "deferred"
    COMPLETED = "completed"
    EXITED = "exited"
    PAUSED = "paused"
    ERROR = "error"
    LOST_CLAIM = "lost_claim"


@dataclass
class DispatchSummary:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def merge(self, other: DispatchSummary) -> None:
        self.claimed += other.claimed
        self.outcomes.update(other.outcomes)

    def line(self) -> str:
        parts = [f"{self.claimed} claimed"] + [f"{count} {name}" for name, count in sorted(self.outcomes.items())]
        return ", ".join(parts)


def pause_key(channel: str) -> str:
    return f"pause:{channel}"


def paused_channels(session: Session) -> dict[str, str]:
    result = {}
    for channel in (Channel.EMAIL, Channel.SMS):
        reason = db.get_kv(session, pause_key(channel))
        if reason:
            result[channel.value] = reason
    return result


def backoff_delay(attempt: int, retry_after: float | None, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempt - 1)))
    delay = timedelta(seconds=rng.uniform(ceiling.total_seconds() / 2, ceiling.total_seconds()))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def claim_due(rt: Runtime, now: datetime, limit: int, worker_id: str) -> list[int]:
    """Claim up to `limit` due enrollments for this worker; returns their ids.

    One statement: the claim moves `next_due_at` to the lease end, so a worker that dies holding a
    claim simply lets it fall due again. PostgreSQL skips rows other workers are claiming
    (FOR UPDATE SKIP LOCKED); SQLite takes the write lock first (BEGIN IMMEDIATE)."""
    due = (
        select(Enrollment.id)
        .where(Enrollment.next_due_at <= now)
        .order_by(Enrollment.next_due_at)
        .limit(limit)
    )
    if rt.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    statement = (
        update(Enrollment)
        .where(Enrollment.id.in_(due.scalar_subquery()))
        .values(next_due_at=now + LEASE, claimed_by=worker_id)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    with db.write_transaction(rt.sessions) as session:
        return list(session.scalars(statement))


@dataclass
class _Work:
    """Everything the provider call needs, read while the claim was held."""

    message_id: int
    enrollment_id: int
    outgoing: OutgoingMessage


class Dispatcher:
    """Runs dispatch passes for one worker. Thread-safe: one instance is shared by the pool."""

    def __init__(self, rt: Runtime, worker_id: str, *, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rt = rt
        self.worker_id = worker_id
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.sleep = sleep
        self._limiters = {
            Channel.SMS: SharedRateLimiter(rt.sessions, "sms", rt.settings.sms_rate_per_second, sleep=sleep),
            Channel.EMAIL: SharedRateLimiter(rt.sessions, "email", rt.settings.email_rate_per_second, sleep=sleep),
        }

    # -- public -----------------------------------------------------------------------------

    def run_once(self, now: datetime, *, max_batches: int | None = None) -> DispatchSummary:
        """Claim and process batches until nothing is due at `now` (or `max_batches` ran)."""
        summary = DispatchSummary()
        self.rt.refresh_templates()
        batches = 0
        concurrency = self.rt.settings.worker_concurrency
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="drip-send") as pool:
            while max_batches is None or batches < max_batches:
                ids = claim_due(self.rt, now, self.rt.settings.dispatch_batch_size, self.worker_id)
                if not ids:
                    break
                batches += 1
                summary.claimed += len(ids)
                if concurrency == 1 or len(ids) == 1:
                    outcomes = [self.process(enrollment_id, now) for enrollment_id in ids]
                else:
                    outcomes = list(pool.map(lambda eid: self.process(eid, now), ids))
                for outcome in outcomes:
                    summary.add(outcome)
        return summary

    def process(self, enrollment_id: int, now: datetime) -> str:
        """Take one claimed enrollment one step forward. Never raises for a single bad row."""
        try:
            work, outcome = self._prepare(enrollment_id, now)
            if work is None:
                return outcome
            return self._deliver(work, now)
        except OperationalError:
            log.exception("database error on enrollment %s; it falls due again when its lease ends", enrollment_id)
            return Outcome.ERROR
        except Exception:  # a bug must not stop the other sends; the lease makes it due again
            log.exception("unexpected error on enrollment %s", enrollment_id)
            return Outcome.ERROR

    # -- phase 1: decide and write the send record (one transaction) -------------------------

    def _prepare(self, enrollment_id: int, now: datetime) -> tuple[_Work | None, str]:
        rt = self.rt
        with rt.sessions() as session, session.begin():
            enrollment = session.get(Enrollment, enrollment_id)
            if enrollment is None or enrollment.claimed_by != self.worker_id:
                return None, Outcome.LOST_CLAIM
            if enrollment.status != EnrollmentStatus.ACTIVE:
                enrollment.next_due_at = None
                enrollment.claimed_by = None
                return None, Outcome.EXITED
            contact = session.get(Contact, enrollment.contact_id)
            campaign = rt.campaigns.get(enrollment.campaign_id)
            if contact is None or campaign is None:
                # Campaign file removed while people were enrolled: hold them, do not guess.
                log.error("enrollment %s: campaign %s not loaded; holding", enrollment.id, enrollment.campaign_id)
                self._defer(enrollment, now + RENDER_RETRY)
                return None, Outcome.ERROR
            while True:
                if enrollment.step_index >= len(campaign.steps):
                    self._complete(session, enrollment, now)
                    return None, Outcome.COMPLETED
                if not usable_channels(contact, campaign):
                    self._exit_unreachable(session, enrollment, contact, now)
                    return None, Outcome.EXITED
                step = campaign.steps[enrollment.step_index]
                message = session.scalar(
                    select(Message).where(
                        Message.enrollment_id == enrollment.id,
                        Message.step_id == step.id,
                        Message.channel == step.channel,
                    )
                )
                if message is not None and message.status == MessageStatus.UNKNOWN:
                    # Fate unknown: wait for the status callback / reconciliation to decide.
                    self._defer(enrollment, now + RECONCILE_WAIT)
                    return None, Outcome.UNKNOWN
                if message is not None and message.status not in (MessageStatus.SENDING, MessageStatus.RETRYING):
                    self._advance(session, enrollment, campaign, contact, now)  # done already
                    continue
                if message is not None and message.status == MessageStatus.SENDING:
                    attempted = message.attempted_at or message.created_at
                    if attempted + LEASE > now:
                        self._defer(enrollment, attempted + LEASE)  # someone is still on it
                        return None, Outcome.DEFERRED
                    # Its worker died between commit and outcome: fate unknown. Never resend blindly.
                    message.status = MessageStatus.UNKNOWN
                    message.last_error = "worker stopped during the provider call; awaiting reconciliation"
                    message.updated_at = now
                    add_event(session, "message_unknown", now, contact_id=contact.id, enrollment_id=enrollment.id,
                              message_id=message.id, step=step.id, channel=step.channel)
                    log.warning("message %s (contact %s) marked unknown after a stalled send", message.id, contact.id)
                    self._defer(enrollment, now + RECONCILE_WAIT)
                    return None, Outcome.UNKNOWN
                if step.channel not in usable_channels(contact, campaign):
                    self._skip(session, enrollment, contact, step, message, now)
                    self._advance(session, enrollment, campaign, contact, now)
                    continue
                break

            paused = db.get_kv(session, pause_key(step.channel))
            if paused:
                self._defer(enrollment, now + PAUSE_RECHECK)
                return None, Outcome.PAUSED
            window = campaign.send_window
            if window.applies_to(step.channel):
                opening = next_opening(now, contact.timezone, window)
                if opening > now:
                    self._defer(enrollment, schedule_into_window(now, contact.timezone, window, enrollment.id))
                    return None, Outcome.DEFERRED
            if message is None and self._over_cap(session, contact, campaign, now):
                _start, later = local_day_bounds(now, contact.timezone)  # tomorrow, local time
                if window.applies_to(step.channel):
                    later = schedule_into_window(later, contact.timezone, window, enrollment.id)
                self._defer(enrollment, later)
                return None, Outcome.DEFERRED

            if message is None:
                message = Message(
                    enrollment_id=enrollment.id, contact_id=contact.id, campaign_id=campaign.id, step_id=step.id,
                    channel=step.channel, status=MessageStatus.SENDING, template_name=step.template,
                    created_at=now, updated_at=now, attempts=0,
                )
                session.add(message)
                session.flush()
                try:
                    self._render_into(message, contact, campaign, step)
                except RenderError as exc:
                    log.error("template %s failed for message %s: %s", step.template, message.id, exc)
                    session.rollback()
                    self._defer_after_rollback(enrollment_id, now + RENDER_RETRY)
                    return None, Outcome.ERROR
            message.status = MessageStatus.SENDING
            message.attempts += 1
            message.attempted_at = now
            message.updated_at = now
            message.to_address = contact.email if step.channel == Channel.EMAIL else contact.phone
            message.provider = "outbox" if rt.delivery == "outbox" else (
                "sendgrid" if step.channel == Channel.EMAIL else "twilio")
            work = _Work(
                message_id=message.id,
                enrollment_id=enrollment.id,
                outgoing=OutgoingMessage(
                    message_id=message.id,
                    channel=Channel(step.channel),
                    to=message.to_address or "",
                    text=message.body_text or "",
                    subject=message.subject,
                    html=message.body_html,
                    unsubscribe_url=self._unsubscribe_url(contact.id, message.id) if step.channel == Channel.EMAIL else None,
                    categories=(campaign.id, step.id),
                ),
            )
        return work, Outcome.SENT

    def _render_into(self, message: Message, contact: Contact, campaign: Campaign, step: Step) -> None:
        context = message_context(self.rt.settings, self.rt.tokens, contact.first_name, contact.id, campaign, step,
                                  message.id)
        if step.channel == Channel.EMAIL:
            email = self.rt.renderer.render_email(step.template, context)
            message.subject, message.body_html, message.body_text = email.subject, email.html, email.text
        else:
            message.body_text = self.rt.renderer.render_sms(step.template, context)

    def _unsubscribe_url(self, contact_id: int, message_id: int) -> str:
        return f"{self.rt.settings.public_url}/u/{self.rt.tokens.unsubscribe(contact_id, message_id)}"

    def _over_cap(self, session: Session, contact: Contact, campaign: Campaign, now: datetime) -> bool:
        start, end = local_day_bounds(now, contact.timezone)
        sent_today = session.scalar(
            select(func.count(Message.id)).where(
                Message.contact_id == contact.id,
                Message.status.in_(SENT_LIKE),
                Message.sent_at >= start,
                Message.sent_at < end,
            )
        ) or 0
        return sent_today >= campaign.frequency_cap_per_day

    # -- phase 2 + 3: provider call, then record the outcome ---------------------------------

    def _deliver(self, work: _Work, now: datetime) -> str:
        channel = work.outgoing.channel
        sender = self.rt.senders[channel]
        self._pace(channel)
        started = time.monotonic()
        try:
            provider_id = sender.send(work.outgoing)
        except SendError as exc:
            return self._record_failure(work, exc, now)
        finally:
            log.debug("provider call for message %s took %.0f ms", work.message_id, (time.monotonic() - started) * 1000)
        with self.rt.sessions() as session, session.begin():
            message = session.get(Message, work.message_id)
            enrollment = session.get(Enrollment, work.enrollment_id)
            assert message is not None and enrollment is not None
            message.status = MessageStatus.SENT
            message.provider_message_id = provider_id
            message.sent_at = now
            message.updated_at = now
            message.last_error = None
            add_event(session, "message_sent", now, contact_id=message.contact_id, enrollment_id=enrollment.id,
                      message_id=message.id, step=message.step_id, channel=message.channel)
            self._advance_after_send(session, enrollment, now)
        log.info("sent message %s (%s, step %s) to contact %s", work.message_id, channel,
                 work.outgoing.categories[-1], enrollment.contact_id)
        return Outcome.SENT

    def _record_failure(self, work: _Work, exc: SendError, now: datetime) -> str:
        channel = work.outgoing.channel
        with self.rt.sessions() as session, session.begin():
            message = session.get(Message, work.message_id)
            enrollment = session.get(Enrollment, work.enrollment_id)
            assert message is not None and enrollment is not None
            contact = session.get(Contact, message.contact_id)
            assert contact is not None
            message.updated_at = now
            message.last_error = str(exc.reason)[:500]
            message.error_code = None if exc.code is None else str(exc.code)[:40]
            if isinstance(exc, AuthSendError) or getattr(exc, "affects_all_recipients", False):
                # Our account is wrong for everyone: pause the channel, keep this message queued.
                message.status = MessageStatus.RETRYING
                message.attempts -= 1
                db.set_kv(session, pause_key(channel), f"{now:%Y-%m-%d %H:%M} UTC provider refused: {exc}", now)
                add_event(session, "channel_paused", now, contact_id=None, channel=channel, reason=exc.reason)
                enrollment.next_due_at = now + PAUSE_RECHECK
                enrollment.claimed_by = None
                log.critical("%s delivery paused: provider refused our account (%s); fix the configuration and "
                             "run `drip resume %s`", channel, exc, channel)
                return Outcome.PAUSED
            if isinstance(exc, TransientSendError) and message.attempts < self.rt.settings.max_attempts:
                message.status = MessageStatus.RETRYING
                with self._rng_lock:
                    delay = backoff_delay(message.attempts, exc.retry_after, self.rng)
                enrollment.next_due_at = now + delay
                enrollment.claimed_by = None
                add_event(session, "message_retry", now, contact_id=contact.id, message_id=message.id,
                          attempt=message.attempts, retry_in_seconds=int(delay.total_seconds()), error=exc.reason)
                log.warning("message %s transient failure (attempt %s), retry in %ss: %s", message.id,
                            message.attempts, int(delay.total_seconds()), exc.reason)
                return Outcome.RETRYING
            if isinstance(exc, AmbiguousSendError):
                message.status = MessageStatus.UNKNOWN
                add_event(session, "message_unknown", now, contact_id=contact.id, message_id=message.id, error=exc.reason)
                log.warning("message %s outcome unknown (%s); awaiting reconciliation", message.id, exc.reason)
                enrollment.next_due_at = now + RECONCILE_WAIT
                enrollment.claimed_by = None
                return Outcome.UNKNOWN
            message.status = MessageStatus.FAILED
            add_event(session, "message_failed", now, contact_id=contact.id, message_id=message.id,
                      error=exc.reason, code=message.error_code)
            if isinstance(exc, PermanentSendError):
                reason = f"{exc.reason} (code {exc.code})" if exc.code else exc.reason
                if channel == Channel.EMAIL:
                    contact.email_blocked = f"failed: {reason}"[:200]
                else:
                    contact.sms_blocked = f"failed: {reason}"[:200]
                add_event(session, "channel_blocked", now, contact_id=contact.id, channel=channel, reason=reason)
            log.warning("message %s failed permanently: %s", message.id, exc.reason)
            self._advance_after_send(session, enrollment, now)
            return Outcome.FAILED

    # -- helpers --------------------------------------------------------------------------

    def _pace(self, channel: Channel) -> None:
        """Hold the channel's configured rate across all workers (outbox is not limited)."""
        if self.rt.delivery == "outbox":
            return
        self._limiters[Channel(channel)].acquire()

    def _advance_after_send(self, session: Session, enrollment: Enrollment, now: datetime) -> None:
        contact = session.get(Contact, enrollment.contact_id)
        campaign = self.rt.campaigns.get(enrollment.campaign_id)
        assert contact is not None
        if campaign is None:
            enrollment.claimed_by = None
            return
        if enrollment.status != EnrollmentStatus.ACTIVE:  # booked or stopped while we were sending
            enrollment.next_due_at = None
            enrollment.claimed_by = None
            return
        self._advance(session, enrollment, campaign, contact, now)

    def _advance(self, session: Session, enrollment: Enrollment, campaign: Campaign, contact: Contact,
                 now: datetime) -> None:
        enrollment.step_index += 1
        enrollment.claimed_by = None
        due = step_due_at(campaign, enrollment.step_index, enrollment.enrolled_at, contact.timezone, enrollment.id)
        if due is None:
            self._complete(session, enrollment, now)
        else:
            enrollment.next_due_at = due

    def _complete(self, session: Session, enrollment: Enrollment, now: datetime) -> None:
        enrollment.status = EnrollmentStatus.COMPLETED
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        enrollment.ended_at = now
        add_event(session, "enrollment_completed", now, contact_id=enrollment.contact_id, enrollment_id=enrollment.id)

    def _exit_unreachable(self, session: Session, enrollment: Enrollment, contact: Contact, now: datetime) -> None:
        withdrew = not contact.email_consent and not contact.sms_consent
        enrollment.status = EnrollmentStatus.EXITED
        enrollment.exit_reason = ExitReason.UNSUBSCRIBED if withdrew else ExitReason.UNREACHABLE
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        enrollment.ended_at = now
        add_event(session, "enrollment_ended", now, contact_id=contact.id, enrollment_id=enrollment.id,
                  reason=enrollment.exit_reason)

    def _skip(self, session: Session, enrollment: Enrollment, contact: Contact, step: Step,
              message: Message | None, now: datetime) -> None:
        if step.channel == Channel.EMAIL:
            reason = contact.email_blocked or ("no email address" if not contact.email else "no email consent")
        else:
            reason = contact.sms_blocked or ("no phone number" if not contact.phone else "no SMS consent")
        if message is None:
            message = Message(enrollment_id=enrollment.id, contact_id=contact.id, campaign_id=enrollment.campaign_id,
                              step_id=step.id, channel=step.channel, template_name=step.template,
                              created_at=now, updated_at=now)
            session.add(message)
        message.status = MessageStatus.SKIPPED
        message.last_error = reason[:500]
        message.updated_at = now
        session.flush()
        add_event(session, "message_skipped", now, contact_id=contact.id, enrollment_id=enrollment.id,
                  message_id=message.id, step=step.id, channel=step.channel, reason=reason)

    def _defer(self, enrollment: Enrollment, until: datetime) -> None:
        enrollment.next_due_at = until
        enrollment.claimed_by = None

    def _defer_after_rollback(self, enrollment_id: int, until: datetime) -> None:
        with self.rt.sessions() as session, session.begin():
            enrollment = session.get(Enrollment, enrollment_id)
            if enrollment is not None and enrollment.claimed_by == self.worker_id:
                self._defer(enrollment, until)


def message_context(settings: Settings, tokens: LinkTokens, first_name: str, contact_id: int, campaign: Campaign,
                    step: Step, message_id: int) -> dict[str, str]:
    """The variables every template gets (rendering.TEMPLATE_VARIABLES)."""
    return {
        "first_name": first_name,
        "clinic_name": settings.clinic_name,
        "clinic_phone": settings.clinic_phone,
        "clinic_address": settings.clinic_address,
        "booking_link": f"{settings.public_url}/b/{tokens.booking(message_id)}",
        "unsubscribe_link": f"{settings.public_url}/u/{tokens.unsubscribe(contact_id, message_id)}",
        "campaign_name": campaign.name,
        "step_id": step.id,
        "channel": str(step.channel),
    }
