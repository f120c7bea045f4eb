"""The outcome policy: what a provider call's result does to the send record and the enrollment.

`record_failure` handles one failed call. It ends in exactly one of these ways:

- not sent at all (`SendResult.not_sent`: the channel was paused a moment ago, or the rate limiter
  failed) — the attempt does not count; a send record made for it alone is taken back. `PAUSED`
  for a pause, else `ERROR`; either way looked at again after `PAUSE_RECHECK`.
- `AccountSendError` (wrong credentials, unregistered sender, bad From…: every recipient would
  fail) — the channel is paused for everyone (`pauses.pause_channel`), this message stays queued
  and its attempt does not count: `PAUSED`, with a critical log line telling the operator what to do.
- `TransientSendError` — retried with exponential backoff and full jitter, never sooner than the
  provider's Retry-After, while attempts remain or the message is younger than `RETRY_HORIZON`:
  `RETRYING`. Past both it fails like a permanent error.
- `AmbiguousSendError` after the provider's receipt already settled the message: `SENT`.
- `AmbiguousSendError` otherwise — the request may have reached the provider: `UNKNOWN`, waiting
  `RECONCILE_WAIT` for reconciliation; never resent blindly.
- anything else — `FAILED`, and the enrollment moves on; a `PermanentSendError` also blocks that
  channel for that contact.

`record_sent` handles a batch of successful calls: each message becomes `sent` and its enrollment
moves to the next step, completes, or (booked or stopped meanwhile) is released. (The pipeline
has already noted each of them `sent` with `queue.note_sent` before handing over the next sends, so
a crash in between leaves them settled; `record_sent` adds the provider's id and moves on.)

A call is only made once `queue.mark_handed` has committed its `handed_at`. A send another worker
took over before that (our lease ran out first) is not made at all: `LOST_CLAIM`, nothing recorded.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.content.journey import next_index
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.content.windows import local_label, schedule_step
from patient_drip.contacts.blocks import BlockReason, block_channel
from patient_drip.contacts.tasks import open_task
from patient_drip.dispatch import queue
from patient_drip.dispatch.pauses import pause_channel
from patient_drip.dispatch.step import Outcome, advance_after_send
from patient_drip.models import (MESSAGE_STATUS_RANK, Channel, EnrollmentStatus, EventKind, Message, MessageStatus,
                                 TaskKind, add_event)
from patient_drip.providers.types import (
    AccountSendError,
    AmbiguousSendError,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)

log = logging.getLogger("drip.dispatch")

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
# A transient failure says nothing about the message itself: keep retrying until it is this old,
# even past DRIP_MAX_ATTEMPTS, so a provider outage of minutes or hours loses nothing.
RETRY_HORIZON = timedelta(hours=24)


@dataclass(slots=True)
class Work:
    """Everything the provider call and the outcome recording need, read while the claim was held."""

    message_id: int
    enrollment_id: int
    contact_id: int
    campaign_id: str
    campaign_version: int | None  # the enrollment's timing version (`content.campaign_versions`)
    step_index: int
    step_id: str
    enrolled_at: datetime
    timezone: str
    phone: str | None  # the contact's number: the law on texting follows it
    attempts: int
    outgoing: OutgoingMessage


@dataclass(slots=True)
class SendResult:
    """What one provider call gave: a provider id, or an error."""

    work: Work
    provider_id: str | None = None
    error: SendError | None = None
    unexpected: bool = False  # a bug in or below the sender: leave the row `sending` (→ unknown)
    not_sent: bool = False  # the channel was paused during this pass; the provider was not called


def backoff_delay(attempt: int, retry_after: float | None, rng: random.Random) -> timedelta:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempt - 1)))
    delay = timedelta(seconds=rng.uniform(ceiling.total_seconds() / 2, ceiling.total_seconds()))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


class BackoffChooser:
    """`backoff_delay` with one random generator shared safely by the dispatcher's threads."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._lock = threading.Lock()

    def __call__(self, attempt: int, retry_after: float | None) -> timedelta:
        with self._lock:
            return backoff_delay(attempt, retry_after, self.rng)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What `record_failure` needs beyond the result: the retry budget, the campaigns (to move an
    enrollment on), who pauses a channel, and how to pick a backoff (the caller's seeded rng)."""

    max_attempts: int
    campaigns: dict[str, Campaign]
    actor: str
    backoff: BackoffChooser


def record_failure(session: Session, result: SendResult, now: datetime, real_now: datetime,
                   policy: FailurePolicy) -> Outcome:
    """Record one failed (or not made) provider call; returns the outcome (see the module docstring).

    `now` is the pass's clock (what is recorded); `real_now` the real time, from which waits before
    the next attempt run."""
    work, exc = result.work, result.error
    assert exc is not None
    channel = work.outgoing.channel
    message, enrollment, contact = queue.load_send(session, work.message_id, work.enrollment_id)
    message.updated_at = now
    if result.not_sent:
        # Never reached the provider (channel paused a moment ago, or the limiter failed): this
        # attempt does not count, and a record made for it alone is taken back — as if the pause
        # had been seen when the batch was prepared.
        if message.attempts <= 1 and message.status == MessageStatus.SENDING and message.created_at == now:
            session.delete(message)
        else:
            message.status = MessageStatus.RETRYING
            message.attempts -= 1
            message.last_error = str(exc.reason)[:500]
        enrollment.next_due_at = real_now + queue.PAUSE_RECHECK
        enrollment.claimed_by = None
        return Outcome.PAUSED if isinstance(exc, AccountSendError) else Outcome.ERROR
    message.last_error = str(exc.reason)[:500]
    message.error_code = None if exc.code is None else str(exc.code)[:40]
    if isinstance(exc, AccountSendError):
        # Our account is wrong for everyone: pause the channel, keep this message queued.
        message.status = MessageStatus.RETRYING
        message.attempts -= 1
        pause_channel(session, Channel(channel), f"provider refused: {exc}", now, policy.actor)
        enrollment.next_due_at = real_now + queue.PAUSE_RECHECK
        enrollment.claimed_by = None
        log.critical("%s delivery paused: provider refused our account (%s); fix the configuration and "
                     "run `drip resume %s`", channel, exc, channel)
        return Outcome.PAUSED
    if isinstance(exc, TransientSendError) and (
            message.attempts < policy.max_attempts or now - message.created_at < RETRY_HORIZON):
        message.status = MessageStatus.RETRYING
        delay = policy.backoff(message.attempts, exc.retry_after)
        enrollment.next_due_at = real_now + delay
        enrollment.claimed_by = None
        add_event(session, EventKind.MESSAGE_RETRY, now, contact_id=contact.id, message_id=message.id,
                  attempt=message.attempts, retry_in_seconds=int(delay.total_seconds()), error=exc.reason)
        log.warning("message %s transient failure (attempt %s), retry in %ss: %s", message.id,
                    message.attempts, int(delay.total_seconds()), exc.reason)
        return Outcome.RETRYING
    if isinstance(exc, AmbiguousSendError) and message.status != MessageStatus.SENDING:
        # The provider's receipt arrived before our call gave up: it is settled, not unknown.
        message.sent_at = message.sent_at or now
        advance_after_send(session, enrollment, policy.campaigns, now)
        return Outcome.SENT
    if isinstance(exc, AmbiguousSendError):
        message.status = MessageStatus.UNKNOWN
        add_event(session, EventKind.MESSAGE_UNKNOWN, now, contact_id=contact.id, message_id=message.id,
                  error=exc.reason)
        log.warning("message %s outcome unknown (%s); awaiting reconciliation", message.id, exc.reason)
        enrollment.next_due_at = real_now + queue.RECONCILE_WAIT
        enrollment.claimed_by = None
        return Outcome.UNKNOWN
    message.status = MessageStatus.FAILED
    add_event(session, EventKind.MESSAGE_FAILED, now, contact_id=contact.id, message_id=message.id,
              error=exc.reason, code=message.error_code)
    open_task(session, TaskKind.FAILED_SEND, now, contact_id=contact.id, message_id=message.id)
    if isinstance(exc, PermanentSendError):
        detail = f"{exc.reason} (code {exc.code})" if exc.code else exc.reason
        block_channel(session, contact, Channel(channel), BlockReason.FAILED, detail, now, policy.actor)
    log.warning("message %s failed permanently: %s", message.id, exc.reason)
    advance_after_send(session, enrollment, policy.campaigns, now)
    return Outcome.FAILED


def record_sent(session: Session, sent: Sequence[SendResult], now: datetime, campaigns: dict[str, Campaign]) -> None:
    """Record a batch of accepted sends: messages `sent`, enrollments on to their next step (or
    completed), each with its events — a handful of statements for the whole batch."""
    queue.mark_sent(session, [(r.work.message_id, r.provider_id) for r in sent], now)
    events: list[tuple[object, ...]] = [
        (str(EventKind.MESSAGE_SENT), r.work.contact_id, r.work.enrollment_id, r.work.message_id, now,
         {"step": r.work.step_id, "channel": str(r.work.outgoing.channel)})
        for r in sent
    ]
    status_of = queue.lock_enrollment_statuses(session, (r.work.enrollment_id for r in sent))
    advanced: list[tuple[int, int, datetime]] = []
    completed: list[tuple[int, int]] = []
    released: dict[bool, list[int]] = {True: [], False: []}  # clear the due time? → enrollment ids
    for result in sent:
        work = result.work
        campaign = campaign_for(campaigns, work.campaign_id, work.campaign_version)
        if campaign is None or status_of.get(work.enrollment_id) != EnrollmentStatus.ACTIVE:
            # Booked or stopped while we were sending (or the campaign file went away): hold.
            released[campaign is not None].append(work.enrollment_id)
            continue
        following = next_index(campaign, work.step_index) if work.step_index < len(campaign.steps) else None
        index = len(campaign.steps) if following is None else following
        scheduled = schedule_step(campaign, index, work.enrolled_at, work.timezone, work.enrollment_id,
                                  phone=work.phone, now=now)
        if scheduled is None:
            completed.append((work.enrollment_id, index))
            events.append((str(EventKind.ENROLLMENT_COMPLETED), work.contact_id, work.enrollment_id, None, now, {}))
            continue
        advanced.append((work.enrollment_id, index, scheduled.due))
        if scheduled.moved_because is not None and scheduled.due > now:
            step = campaign.steps[index]
            events.append((str(EventKind.MESSAGE_DEFERRED), work.contact_id, work.enrollment_id, None, now,
                           {"step": step.id, "channel": str(step.channel),
                            "until": local_label(scheduled.due, work.timezone), "reason": scheduled.moved_because}))
    queue.advance_enrollments(session, advanced, now)
    queue.complete_enrollments(session, completed, now)
    for clear_due, ids in released.items():
        queue.release_enrollments(session, ids, clear_due=clear_due)
    queue.insert_events(session, events)


def move_status_forward(message: Message, status: MessageStatus, now: datetime) -> bool:
    """A provider's late word on a send (a status callback, an event): apply `status` only if it is
    later in the message's lifecycle than the current one — receipts arrive out of order, and a
    `delivered` must not be undone by a late `sent`. Returns whether it applied."""
    current = MessageStatus(message.status)
    if current == MessageStatus.SKIPPED or MESSAGE_STATUS_RANK[status] <= MESSAGE_STATUS_RANK[current]:
        return False
    message.status = status
    message.updated_at = now
    return True
