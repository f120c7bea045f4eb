"""Dispatch: claim due enrollments, write the send record, render, deliver, record, advance.

Delivery semantics (README "Delivery semantics"):
- A message row is committed with status `sending` *before* the provider is called; the unique key
  (enrollment, step, channel) makes a second row — and so a second send — of the same step impossible.
- A row found still `sending` after its lease ran out belongs to a worker that died mid-call: it is
  marked `unknown` and reconciled later (status callback, or asking Twilio), never sent again blindly.
- Transient errors retry the same row with exponential backoff and jitter, honouring Retry-After;
  permanent errors stop that channel for that contact; ambiguous ones become `unknown`; auth
  errors pause the channel for everyone instead of burning through the queue.

How a pass is organised (the shape is about database round trips, not about semantics):

1. *Claim* a batch of due enrollments in one statement (`claim_due`).
2. *Prepare* the batch in one write transaction: load the enrollments, contacts, current send
   records and pause flags with a handful of set-based queries, decide each enrollment exactly as
   before, insert the new send records, render them and commit them as `sending`.
3. *Send* on a bounded thread pool (`DRIP_WORKER_CONCURRENCY`): only the provider call and the
   shared rate limiter run there; no database work.
4. *Record* outcomes in batches, one write transaction per up to `RECORD_BATCH` results.

While the pool sends one batch the main thread claims and prepares the next, so the provider
never waits for the database. The window between a provider's answer and its recording is a few
milliseconds; a crash inside it leaves the row `sending`, which the lease turns into `unknown` —
the same path as a crash during the provider call itself.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, defer

from patient_drip import db
from patient_drip.content.campaign import Campaign, Step
from patient_drip.contacts.enrollment import usable_channels
from patient_drip.models import add_event
from patient_drip.models import (
    SENT_LIKE,
    Channel,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    ExitReason,
    KeyValue,
    Message,
    MessageStatus,
)
from patient_drip.dispatch.ratelimit import SharedRateLimiter
from patient_drip.content.render_memo import MemoRenderer
from patient_drip.content.rendering import RenderError
from patient_drip.runtime import Runtime
from patient_drip.providers.senders import (
    AmbiguousSendError,
    AuthSendError,
    OutgoingMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from patient_drip.settings import Settings
from patient_drip.content.tokens import LinkTokens
from patient_drip.content.windows import local_day_bounds, next_opening, schedule_into_window, step_due_at

log = logging.getLogger("drip.dispatch")

LEASE = timedelta(minutes=5)  # a claim older than this belongs to a dead worker
PAUSE_RECHECK = timedelta(minutes=1)
RENDER_RETRY = timedelta(minutes=10)
RECONCILE_WAIT = timedelta(minutes=2)  # how often an enrollment waiting on an unknown send looks again
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
# A transient failure says nothing about the message itself: keep retrying until it is this old,
# even past DRIP_MAX_ATTEMPTS, so a provider outage of minutes or hours loses nothing.
RETRY_HORIZON = timedelta(hours=24)

# A pooled pass claims about this many seconds of sending at a time (from the provider's recent
# round-trip time and the pool size), between DRIP_WORKER_CONCURRENCY and DRIP_BATCH_SIZE: with a
# slow provider one worker must not hold the whole queue while the others have nothing to do.
CLAIM_SECONDS = 1.0
RECORD_BATCH = 200  # outcomes written per transaction
# Seconds an outcome may wait for others to share its transaction. Every database round trip of
# the dispatching thread gives the GIL to the sending threads and waits to get it back: fewer,
# larger transactions are what keeps the thread that feeds the pool ahead of it.
RECORD_DELAY = 0.2
# SQLite has one writer at a time and rendering happens inside the prepare transaction (the
# links in a message carry its id): prepare in smaller pieces there so other local processes
# (another worker, the web app) wait tens of milliseconds, not the whole batch.
SQLITE_PREPARE_CHUNK = 50
# Outcomes are kept in memory and retried this many times, with backoff from 0.1 s (about 25 s in
# all), when the database is unreachable: a restart of PostgreSQL must not turn sent messages
# into `unknown` ones that need reconciling.
RECORD_RETRIES = 9
_MESSAGE_INSERT = ("id", "enrollment_id", "contact_id", "campaign_id", "step_id", "channel", "status", "to_address",
                   "subject", "body_text", "body_html", "template_name", "template_version", "provider", "attempts",
                   "created_at", "attempted_at", "updated_at")
# A message still in one of these when its provider call returns becomes `sent`; any other status
# means the provider's receipt beat us to it (it only moves forward).
_BEFORE_SENT = (MessageStatus.SENDING, MessageStatus.UNKNOWN)


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


class DispatchCounters:
    """Process-wide counters for `/metrics`: provider calls by channel and result, and latency.

    Only this process's sends are counted; queue depth and lag come from the database instead
    (`metrics.py`), so they are right whichever process is scraped."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: Counter[tuple[str, str]] = Counter()  # (channel, result) → count
        self.latency_count: Counter[str] = Counter()
        self.latency_sum: Counter[str] = Counter()
        self.latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(self.LATENCY_BUCKETS))
        self.passes = 0

    def observe(self, channel: str, result: str, seconds: float | None) -> None:
        with self._lock:
            self.messages[(channel, result)] += 1
            if seconds is None:
                return
            self.latency_count[channel] += 1
            self.latency_sum[channel] += seconds
            buckets = self.latency_buckets[channel]
            for index, bound in enumerate(self.LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[index] += 1

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "messages": dict(self.messages),
                "latency_count": dict(self.latency_count),
                "latency_sum": dict(self.latency_sum),
                "latency_buckets": {k: list(v) for k, v in self.latency_buckets.items()},
                "passes": self.passes,
            }


COUNTERS = DispatchCounters()


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


def claim_due(rt: Runtime, now: datetime, limit: int, worker_id: str, *,
              lease_from: datetime | None = None) -> list[int]:
    """Claim up to `limit` due enrollments for this worker; returns their ids.

    One statement: the claim moves `next_due_at` to the lease end, so a worker that dies holding a
    claim simply lets it fall due again. PostgreSQL skips rows other workers are claiming
    (FOR UPDATE SKIP LOCKED); SQLite takes the write lock first (BEGIN IMMEDIATE). The inner
    query is an index range scan on `ix_enrollment_next_due_at` that stops after `limit` rows,
    so its cost does not grow with the number of enrollments.

    `lease_from` (default `now`) is when the lease starts: a long pass decides with the `now` it
    started with, but its leases must run from the real time of the claim (`Dispatcher._clock`)."""
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
        .values(next_due_at=(lease_from or now) + LEASE, claimed_by=worker_id)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    )
    with db.write_transaction(rt.sessions) as session:
        return list(session.scalars(statement))


@dataclass(slots=True)
class _Work:
    """Everything the provider call and the outcome recording need, read while the claim was held."""

    message_id: int
    enrollment_id: int
    contact_id: int
    campaign_id: str
    step_index: int
    step_id: str
    enrolled_at: datetime
    timezone: str
    attempts: int
    outgoing: OutgoingMessage


@dataclass(slots=True)
class _Result:
    work: _Work
    provider_id: str | None = None
    error: SendError | None = None
    unexpected: bool = False  # a bug in or below the sender: leave the row `sending` (→ unknown)
    not_sent: bool = False  # the channel was paused during this pass; the provider was not called


class _BatchState:
    """What one prepare transaction loaded, so deciding an enrollment issues no queries."""

    def __init__(self, session: Session, ids: Sequence[int], campaigns: dict[str, Campaign]) -> None:
        self.session = session
        rows = session.execute(
            select(Enrollment, Contact)
            .outerjoin(Contact, Contact.id == Enrollment.contact_id)
            .where(Enrollment.id.in_(ids))
            .order_by(Enrollment.id)
        ).all()
        self.rows: list[tuple[Enrollment, Contact | None]] = [(e, c) for e, c in rows]
        step_ids: set[str] = set()
        for enrollment, _contact in self.rows:
            campaign = campaigns.get(enrollment.campaign_id)
            if campaign is not None and enrollment.step_index < len(campaign.steps):
                step_ids.add(campaign.steps[enrollment.step_index].id)
        self.loaded_steps = step_ids
        self.messages: dict[tuple[int, str, str], Message] = {}
        if step_ids and self.rows:
            # Only the current step's send record matters; bodies are loaded only for a retry.
            found = session.scalars(
                select(Message)
                .options(defer(Message.body_html), defer(Message.body_text), defer(Message.subject))
                .where(Message.enrollment_id.in_([e.id for e, _ in self.rows]), Message.step_id.in_(step_ids))
            )
            for message in found:
                self.messages[(message.enrollment_id, message.step_id, message.channel)] = message
        self.paused: dict[str, str] = {
            key.removeprefix("pause:"): value
            for key, value in session.execute(
                select(KeyValue.key, KeyValue.value).where(
                    KeyValue.key.in_([pause_key(Channel.EMAIL), pause_key(Channel.SMS)])
                )
            )
            if value
        }
        self._sent_times: dict[int, list[datetime]] | None = None
        self.prepared_for: Counter[int] = Counter()  # new sends per contact in this batch

    def message(self, enrollment: Enrollment, step: Step) -> Message | None:
        key = (enrollment.id, step.id, str(step.channel))
        if key in self.messages:
            return self.messages[key]
        if step.id in self.loaded_steps:
            return None
        # The enrollment moved past its current step (skip, or already sent): look it up alone.
        found = self.session.scalar(
            select(Message).where(
                Message.enrollment_id == enrollment.id, Message.step_id == step.id, Message.channel == step.channel
            )
        )
        if found is not None:
            self.messages[key] = found
        return found

    def sent_today(self, contacts: Iterable[Contact], contact: Contact, now: datetime) -> int:
        """Messages sent to `contact` on its local calendar day (loaded once for the whole batch)."""
        if self._sent_times is None:
            ids = sorted({c.id for c in contacts})
            self._sent_times = defaultdict(list)
            # A local day starts at most 14 h before / ends 14 h after the UTC day: two days cover it.
            for contact_id, sent_at in self.session.execute(
                select(Message.contact_id, Message.sent_at).where(
                    Message.contact_id.in_(ids),
                    Message.status.in_(SENT_LIKE),
                    Message.sent_at >= now - timedelta(days=2),
                    Message.sent_at < now + timedelta(days=2),
                )
            ):
                self._sent_times[contact_id].append(sent_at)
        start, end = local_day_bounds(now, contact.timezone)
        stored = sum(1 for sent_at in self._sent_times.get(contact.id, ()) if start <= sent_at < end)
        return stored + self.prepared_for[contact.id]


class Dispatcher:
    """Runs dispatch passes for one worker.

    `run_once` is meant to be called by one thread at a time (the scheduler's dispatch job runs
    with max_instances=1); inside it, provider calls run on a pool of
    `DRIP_WORKER_CONCURRENCY` threads."""

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
        self._memo = MemoRenderer()
        self._local_pause: set[str] = set()
        # Where the dispatching thread spends its time (seconds, cumulative): claim, prepare,
        # record, idle (waiting for the provider calls). For profiling and the benchmark.
        self.phase_seconds: Counter[str] = Counter()
        self._latency = 0.0  # moving average of provider round trips (seconds), for sizing claims
        self._pass_started = time.monotonic()
        self.stop_requested = threading.Event()  # set to finish the sends in flight and return early

    # -- public -----------------------------------------------------------------------------

    def run_once(self, now: datetime, *, max_batches: int | None = None) -> DispatchSummary:
        """Claim and process batches until nothing is due at `now` (or `max_batches` ran).

        Returns early, after recording every send in flight, once `stop_requested` is set."""
        summary = DispatchSummary()
        self._pass_started = time.monotonic()
        self.rt.refresh_templates()
        self._local_pause.clear()
        with COUNTERS._lock:
            COUNTERS.passes += 1
        if self.rt.settings.worker_concurrency == 1:
            self._run_serial(now, max_batches, summary)
        else:
            self._run_pooled(now, max_batches, summary)
        return summary

    def process(self, enrollment_id: int, now: datetime) -> str:
        """Take one claimed enrollment one step forward. Never raises for a single bad row."""
        works, outcomes = self._prepare_ids([enrollment_id], now)
        if not works:
            return outcomes[0] if outcomes else Outcome.ERROR
        return self._record([self._send(work) for work in works], now)[0]

    # -- the pass ---------------------------------------------------------------------------

    def _more_batches(self, batches: int, max_batches: int | None) -> bool:
        return (max_batches is None or batches < max_batches) and not self.stop_requested.is_set()

    def _run_serial(self, now: datetime, max_batches: int | None, summary: DispatchSummary) -> None:
        batches = 0
        while self._more_batches(batches, max_batches):
            ids = self._claim(now)
            if not ids:
                return
            batches += 1
            summary.claimed += len(ids)
            works, outcomes = self._prepare_ids(ids, now)
            for outcome in outcomes:
                summary.add(outcome)
            results = [self._send(work) for work in works]
            for start in range(0, len(results), RECORD_BATCH):
                for outcome in self._record(results[start:start + RECORD_BATCH], now):
                    summary.add(outcome)

    def _run_pooled(self, now: datetime, max_batches: int | None, summary: DispatchSummary) -> None:
        settings = self.rt.settings
        batches = 0
        pending: set[Future[_Result]] = set()
        results: list[_Result] = []
        oldest_result = 0.0
        drained = False  # the last claim found nothing and nothing was recorded since

        with ThreadPoolExecutor(max_workers=settings.worker_concurrency, thread_name_prefix="drip-send") as pool:
            while True:
                done = {f for f in pending if f.done()}
                if done:
                    pending -= done
                    if not results:
                        oldest_result = time.monotonic()
                    results.extend(f.result() for f in done)
                if results and (len(results) >= RECORD_BATCH or not pending
                                or time.monotonic() - oldest_result >= RECORD_DELAY):
                    for start in range(0, len(results), RECORD_BATCH):
                        for outcome in self._record(results[start:start + RECORD_BATCH], now):
                            summary.add(outcome)
                    results = []
                    # Recording can make the next step due at `now` (day 0 sends an email and
                    # an SMS): the next claim may find work again.
                    drained = False
                more = self._more_batches(batches, max_batches)
                # Keep about one batch queued behind the one being sent: the pool never starves
                # and memory stays bounded whatever the length of the queue.
                limit = self._claim_size()
                if not drained and more and len(pending) < limit:
                    ids = self._claim(now, limit)
                    if ids is None:  # the database is away: finish what is in flight, then stop
                        max_batches, ids = batches, []
                    if ids:
                        batches += 1
                        summary.claimed += len(ids)
                        works, outcomes = self._prepare_ids(ids, now)
                        for outcome in outcomes:
                            summary.add(outcome)
                        pending.update(pool.submit(self._send, work) for work in works)
                        continue
                    drained = True
                if not pending and not results:
                    if drained or not more:
                        return
                    continue
                if pending:
                    started = time.perf_counter()
                    wait(pending, timeout=RECORD_DELAY, return_when=FIRST_COMPLETED)
                    self.phase_seconds["idle"] += time.perf_counter() - started

    def _clock(self, now: datetime) -> datetime:
        """`now` moved on by the time this pass has been running.

        A pass decides everything with the `now` it was given (schedules, windows, `sent_at`: what
        tests drive with a virtual clock). What other workers judge against their own clocks must
        not go stale with a long pass, though: claim leases, `attempted_at`, and the waits before
        a retry (Retry-After is the provider's real time). A pass lasting longer than the lease
        would otherwise hand out claims already expired — free for another worker to take while
        this one is still sending them."""
        return now + timedelta(seconds=time.monotonic() - self._pass_started)

    def _claim_size(self) -> int:
        """How many enrollments to claim next: about `CLAIM_SECONDS` of sending at the pool's pace."""
        settings = self.rt.settings
        latency = self._latency
        if latency <= 0:
            return settings.dispatch_batch_size
        pace = settings.worker_concurrency / latency
        return max(settings.worker_concurrency, min(settings.dispatch_batch_size, int(pace * CLAIM_SECONDS)))

    def _claim(self, now: datetime, limit: int | None = None) -> list[int] | None:
        """The next batch; None (logged) when the database cannot be reached."""
        started = time.perf_counter()
        try:
            return claim_due(self.rt, now, limit or self.rt.settings.dispatch_batch_size, self.worker_id,
                             lease_from=self._clock(now))
        except OperationalError as exc:
            log.warning("could not claim due enrollments: database unavailable (%s)", _kind(exc))
            return None
        finally:
            self.phase_seconds["claim"] += time.perf_counter() - started

    # -- phase 1: decide and write the send records (one transaction per chunk) ----------------

    def _prepare_ids(self, ids: list[int], now: datetime) -> tuple[list[_Work], list[str]]:
        """Prepare claimed enrollments; returns the sends to make and the other outcomes."""
        started = time.perf_counter()
        try:
            return self._prepare_parts(ids, now)
        finally:
            self.phase_seconds["prepare"] += time.perf_counter() - started

    def _prepare_parts(self, ids: list[int], now: datetime) -> tuple[list[_Work], list[str]]:
        size = SQLITE_PREPARE_CHUNK if self.rt.engine.dialect.name == "sqlite" else len(ids)
        works: list[_Work] = []
        outcomes: list[str] = []
        for start in range(0, len(ids), max(1, size)):
            part = ids[start:start + size]
            try:
                chunk_works, chunk_outcomes = self._prepare_chunk(part, now)
            except OperationalError as exc:  # the database, not a row: the lease brings them back
                log.warning("could not prepare %s enrollments: database unavailable (%s); they fall due again "
                            "when their lease ends", len(part), _kind(exc))
                outcomes += [Outcome.ERROR] * len(part)
                continue
            except Exception as exc:
                if len(part) == 1:
                    log.error("could not prepare enrollment %s (%s); it falls due again when its lease ends\n%s",
                              part[0], _kind(exc), _stack(exc))
                    outcomes.append(Outcome.ERROR)
                    continue
                # One bad row must not hold the whole batch: find it by preparing them one by one.
                log.warning("preparing a batch of %s failed (%s); retrying one by one", len(part), _kind(exc))
                for enrollment_id in part:
                    one_works, one_outcomes = self._prepare_parts([enrollment_id], now)
                    works += one_works
                    outcomes += one_outcomes
                continue
            works += chunk_works
            outcomes += chunk_outcomes
        return works, outcomes

    def _prepare_chunk(self, ids: Sequence[int], now: datetime) -> tuple[list[_Work], list[str]]:
        rt = self.rt
        outcomes: list[str] = []
        with db.write_transaction(rt.sessions) as session:
            state = _BatchState(session, ids, rt.campaigns)
            if len(state.rows) < len(ids):
                outcomes += [Outcome.LOST_CLAIM] * (len(ids) - len(state.rows))
            ready: list[tuple[Enrollment, Contact, Campaign, Step, Message | None]] = []
            for enrollment, contact in state.rows:
                decided = self._decide(state, enrollment, contact, now)
                if isinstance(decided, str):
                    outcomes.append(decided)
                else:
                    ready.append(decided)
            # Frequency cap: one query for the whole chunk, counting this chunk's own sends too.
            sendable: list[tuple[Enrollment, Contact, Campaign, Step, Message | None]] = []
            contacts = [item[1] for item in ready if item[4] is None]
            for enrollment, contact, campaign, step, message in ready:
                if message is None and state.sent_today(contacts, contact, now) >= campaign.frequency_cap_per_day:
                    _start, later = local_day_bounds(now, contact.timezone)  # tomorrow, local time
                    if campaign.send_window.applies_to(step.channel):
                        later = schedule_into_window(later, contact.timezone, campaign.send_window, enrollment.id)
                    self._defer(enrollment, later)
                    outcomes.append(Outcome.DEFERRED)
                    continue
                if message is None:
                    state.prepared_for[contact.id] += 1
                sendable.append((enrollment, contact, campaign, step, message))
            # New send records: ids first (the links in a message carry its id), then render, then
            # one bulk INSERT of complete rows already marked `sending` for this attempt.
            connection = session.connection()
            new = [item for item in sendable if item[4] is None]
            ids = iter(db.allocate_ids(connection, Message.__table__, len(new)))
            rows: list[tuple[object, ...]] = []
            works: list[_Work] = []
            for enrollment, contact, campaign, step, message in sendable:
                if message is not None:
                    works.append(self._ready(message, enrollment, contact, campaign, step, now))
                    continue
                message_id = next(ids)
                try:
                    subject, html, text, unsubscribe = self._render(message_id, contact, campaign, step)
                except RenderError as exc:
                    log.error("template %s failed for message %s: %s", step.template, message_id, exc)
                    self._defer(enrollment, now + RENDER_RETRY)
                    outcomes.append(Outcome.ERROR)
                    continue
                to = contact.email if step.channel == Channel.EMAIL else contact.phone
                rows.append((message_id, enrollment.id, contact.id, campaign.id, step.id, str(step.channel),
                             str(MessageStatus.SENDING), to, subject, text, html, step.template, "",
                             self._provider_name(step.channel), 1, now, self._clock(now), now))
                works.append(self._work(message_id, enrollment, contact, campaign, step, 1, to, text, subject,
                                        html, unsubscribe, now))
            db.bulk_insert(connection, Message.__table__, _MESSAGE_INSERT, rows)
        return works, outcomes

    def _decide(self, state: _BatchState, enrollment: Enrollment, contact: Contact | None,
                now: datetime) -> str | tuple[Enrollment, Contact, Campaign, Step, Message | None]:
        """Walk one enrollment to the step it must send now, or return why it sends nothing."""
        session = state.session
        if enrollment.claimed_by != self.worker_id:
            return Outcome.LOST_CLAIM
        if enrollment.status != EnrollmentStatus.ACTIVE:
            enrollment.next_due_at = None
            enrollment.claimed_by = None
            return Outcome.EXITED
        campaign = self.rt.campaigns.get(enrollment.campaign_id)
        if contact is None or campaign is None:
            # Campaign file removed while people were enrolled: hold them, do not guess.
            log.error("enrollment %s: campaign %s not loaded; holding", enrollment.id, enrollment.campaign_id)
            self._defer(enrollment, now + RENDER_RETRY)
            return Outcome.ERROR
        while True:
            if enrollment.step_index >= len(campaign.steps):
                self._complete(session, enrollment, now)
                return Outcome.COMPLETED
            if not usable_channels(contact, campaign):
                self._exit_unreachable(session, enrollment, contact, now)
                return Outcome.EXITED
            step = campaign.steps[enrollment.step_index]
            message = state.message(enrollment, step)
            if message is not None and message.status == MessageStatus.UNKNOWN:
                # Fate unknown: wait for the status callback / reconciliation to decide.
                self._defer(enrollment, now + RECONCILE_WAIT)
                return Outcome.UNKNOWN
            if message is not None and message.status not in (MessageStatus.SENDING, MessageStatus.RETRYING):
                self._advance(session, enrollment, campaign, contact, now)  # done already
                if enrollment.status != EnrollmentStatus.ACTIVE:
                    return Outcome.COMPLETED
                if enrollment.next_due_at is not None and enrollment.next_due_at > now:
                    return Outcome.DEFERRED  # the next step is not due yet
                continue
            if message is not None and message.status == MessageStatus.SENDING:
                attempted = message.attempted_at or message.created_at
                if attempted + LEASE > now:
                    self._defer(enrollment, attempted + LEASE)  # someone is still on it
                    return Outcome.DEFERRED
                # Its worker died between commit and outcome: fate unknown. Never resend blindly.
                message.status = MessageStatus.UNKNOWN
                message.last_error = "worker stopped during the provider call; awaiting reconciliation"
                message.updated_at = now
                add_event(session, "message_unknown", now, contact_id=contact.id, enrollment_id=enrollment.id,
                          message_id=message.id, step=step.id, channel=step.channel)
                log.warning("message %s (contact %s) marked unknown after a stalled send", message.id, contact.id)
                self._defer(enrollment, now + RECONCILE_WAIT)
                return Outcome.UNKNOWN
            if step.channel not in usable_channels(contact, campaign):
                self._skip(session, enrollment, contact, step, message, now)
                self._advance(session, enrollment, campaign, contact, now)
                if enrollment.status != EnrollmentStatus.ACTIVE or (
                        enrollment.next_due_at is not None and enrollment.next_due_at > now):
                    return Outcome.SKIPPED  # completed, or the next step waits for its own time
                continue
            break
        if state.paused.get(str(step.channel)):
            self._defer(enrollment, now + PAUSE_RECHECK)
            return Outcome.PAUSED
        window = campaign.send_window
        if window.applies_to(step.channel):
            opening = next_opening(now, contact.timezone, window)
            if opening > now:
                self._defer(enrollment, schedule_into_window(now, contact.timezone, window, enrollment.id))
                return Outcome.DEFERRED
        return enrollment, contact, campaign, step, message

    def _ready(self, message: Message, enrollment: Enrollment, contact: Contact, campaign: Campaign, step: Step,
               now: datetime) -> _Work:
        """Mark an existing send record (a retry) `sending` for this attempt and describe it."""
        message.status = MessageStatus.SENDING
        message.attempts = (message.attempts or 0) + 1
        message.attempted_at = self._clock(now)
        message.updated_at = now
        message.to_address = contact.email if step.channel == Channel.EMAIL else contact.phone
        message.provider = self._provider_name(step.channel)
        if message.body_text is None:  # its first attempt never got as far as rendering
            message.subject, message.body_html, message.body_text, _ = self._render(message.id, contact, campaign,
                                                                                    step)
        return self._work(message.id, enrollment, contact, campaign, step, message.attempts, message.to_address,
                          message.body_text or "", message.subject, message.body_html,
                          self._unsubscribe_url(contact.id, message.id), now)

    def _work(self, message_id: int, enrollment: Enrollment, contact: Contact, campaign: Campaign, step: Step,
              attempts: int, to: str | None, text: str, subject: str | None, html: str | None,
              unsubscribe_url: str, now: datetime) -> _Work:
        # Skipping a step on the way here moved the enrollment on and released it: hold it again
        # until the outcome is recorded, so no other pass picks it up while the send is in flight.
        enrollment.next_due_at = self._clock(now) + LEASE
        enrollment.claimed_by = self.worker_id
        return _Work(
            message_id=message_id,
            enrollment_id=enrollment.id,
            contact_id=contact.id,
            campaign_id=campaign.id,
            step_index=enrollment.step_index,
            step_id=step.id,
            enrolled_at=enrollment.enrolled_at,
            timezone=contact.timezone,
            attempts=attempts,
            outgoing=OutgoingMessage(
                message_id=message_id,
                channel=Channel(step.channel),
                to=to or "",
                text=text,
                subject=subject,
                html=html,
                unsubscribe_url=unsubscribe_url if step.channel == Channel.EMAIL else None,
                categories=(campaign.id, step.id),
            ),
        )

    def _provider_name(self, channel: str) -> str:
        if self.rt.delivery == "outbox":
            return "outbox"
        return "sendgrid" if channel == Channel.EMAIL else "twilio"

    def _render(self, message_id: int, contact: Contact, campaign: Campaign,
                step: Step) -> tuple[str | None, str | None, str, str]:
        """(subject, html, text, unsubscribe URL) of this step for this contact; raises RenderError."""
        context = message_context(self.rt.settings, self.rt.tokens, contact.first_name, contact.id, campaign, step,
                                  message_id)
        if step.channel == Channel.EMAIL:
            email = self._memo.render_email(self.rt.renderer, step.template, context)
            return email.subject, email.html, email.text, context["unsubscribe_link"]
        return None, None, self.rt.renderer.render_sms(step.template, context), context["unsubscribe_link"]

    def _unsubscribe_url(self, contact_id: int, message_id: int) -> str:
        return f"{self.rt.settings.public_url}/u/{self.rt.tokens.unsubscribe(contact_id, message_id)}"

    # -- phase 2: the provider call (pool threads; no database work but the rate limiter) ----------

    def _send(self, work: _Work) -> _Result:
        channel = work.outgoing.channel
        if channel in self._local_pause:
            return _Result(work, error=AuthSendError(f"{channel} paused during this pass"), not_sent=True)
        try:
            self._pace(channel)
        except Exception as exc:
            log.error("rate limiter failed for message %s (%s); not sent, tried again in a minute", work.message_id,
                      _kind(exc))
            return _Result(work, error=TransientSendError("rate limiter unavailable"), not_sent=True)
        started = time.monotonic()
        try:
            provider_id = self.rt.senders[channel].send(work.outgoing)
        except SendError as exc:
            elapsed = time.monotonic() - started
            if isinstance(exc, AuthSendError) or getattr(exc, "affects_all_recipients", False):
                self._local_pause.add(channel)  # stop this pass's other sends on the channel at once
            COUNTERS.observe(channel, _error_result(exc), elapsed)
            return _Result(work, error=exc)
        except Exception as exc:  # a bug below us: the request may have left; never resend blindly
            log.error("unexpected error sending message %s (%s); it becomes unknown when its lease ends\n%s",
                      work.message_id, _kind(exc), _stack(exc))
            COUNTERS.observe(channel, "error", None)
            return _Result(work, unexpected=True)
        elapsed = time.monotonic() - started
        COUNTERS.observe(channel, "sent", elapsed)
        self._latency = elapsed if self._latency <= 0 else 0.9 * self._latency + 0.1 * elapsed
        log.debug("provider call for message %s took %.0f ms", work.message_id, elapsed * 1000)
        return _Result(work, provider_id=provider_id)

    # -- phase 3: record outcomes (one transaction per batch) -------------------------------------

    def _record(self, results: list[_Result], now: datetime) -> list[str]:
        """Write the outcomes of `results`; returns one outcome per result."""
        if not results:
            return []
        started = time.perf_counter()
        try:
            return self._record_retrying(results, now)
        finally:
            self.phase_seconds["record"] += time.perf_counter() - started

    def _record_retrying(self, results: list[_Result], now: datetime) -> list[str]:
        failure: BaseException | None = None
        for attempt in range(1, RECORD_RETRIES + 1):
            try:
                with db.write_transaction(self.rt.sessions) as session:
                    return self._record_in(session, results, now)
            except OperationalError as exc:  # deadlock, serialization failure, SQLite busy: try again
                failure = exc
                if attempt == RECORD_RETRIES:
                    break
                log.warning("recording %s outcomes failed (attempt %s, %s); retrying", len(results), attempt,
                            _kind(exc))
                time.sleep(min(5.0, 0.1 * 2 ** (attempt - 1)))
            except Exception as exc:
                failure = exc
                break
        if len(results) > 1 and not isinstance(failure, OperationalError):
            # A bad row, not the database: find it by recording them one by one.
            log.warning("recording a batch of %s outcomes failed (%s); recording one by one", len(results),
                        _kind(failure))
            return [outcome for result in results for outcome in self._record_retrying([result], now)]
        log.error("could not record the outcome of message(s) %s (%s); unknown when the lease ends, then "
                  "reconciled\n%s", ", ".join(str(r.work.message_id) for r in results), _kind(failure),
                  _stack(failure))
        return [Outcome.ERROR] * len(results)

    def _record_in(self, session: Session, results: list[_Result], now: datetime) -> list[str]:
        outcomes: dict[int, str] = {}
        sent = [r for r in results if r.error is None and not r.unexpected]
        for result in results:
            if result.unexpected:
                outcomes[id(result)] = Outcome.ERROR
            elif result.error is not None:
                outcomes[id(result)] = self._record_failure(session, result, now)
        if sent:
            self._record_sent(session, sent, now)
            for result in sent:
                outcomes[id(result)] = Outcome.SENT
        for result in results:
            if outcomes[id(result)] == Outcome.SENT:
                log.info("sent message %s (%s, step %s) to contact %s", result.work.message_id,
                         result.work.outgoing.channel, result.work.step_id, result.work.contact_id)
        return [outcomes[id(r)] for r in results]

    def _record_sent(self, session: Session, sent: list[_Result], now: datetime) -> None:
        table = Message.__table__
        # A status callback can beat us here (the provider is fast, the batch is not): never move a
        # message back from `delivered` to `sent`, but do store the provider's id.
        session.execute(
            table.update()
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=case((or_(*(table.c.status == str(s) for s in _BEFORE_SENT)), str(MessageStatus.SENT)),
                            else_=table.c.status),
                provider_message_id=bindparam("b_provider_id"),
                sent_at=bindparam("b_now", type_=table.c.sent_at.type),
                updated_at=bindparam("b_now", type_=table.c.updated_at.type),
                last_error=None,
            ),
            [{"b_id": r.work.message_id, "b_provider_id": r.provider_id, "b_now": now} for r in sent],
        )
        events: list[dict[str, object]] = [
            {"kind": "message_sent", "contact_id": r.work.contact_id, "enrollment_id": r.work.enrollment_id,
             "message_id": r.work.message_id, "occurred_at": now,
             "detail": {"step": r.work.step_id, "channel": str(r.work.outgoing.channel)}}
            for r in sent
        ]
        # Lock the enrollments (in id order) so a booking or an unsubscribe arriving now either
        # happened before — we see it and stop — or waits for us and wins afterwards.
        ids = sorted({r.work.enrollment_id for r in sent})
        status_of = dict(session.execute(
            select(Enrollment.id, Enrollment.status).where(Enrollment.id.in_(ids)).order_by(Enrollment.id)
            .with_for_update()
        ).all())
        advanced: list[dict[str, object]] = []
        completed: list[dict[str, object]] = []
        released: list[dict[str, object]] = []
        for result in sent:
            work = result.work
            campaign = self.rt.campaigns.get(work.campaign_id)
            if campaign is None or status_of.get(work.enrollment_id) != EnrollmentStatus.ACTIVE:
                # Booked or stopped while we were sending (or the campaign file went away): hold.
                released.append({"b_id": work.enrollment_id, "b_clear_due": campaign is not None})
                continue
            index = work.step_index + 1
            due = step_due_at(campaign, index, work.enrolled_at, work.timezone, work.enrollment_id)
            if due is None:
                completed.append({"b_id": work.enrollment_id, "b_index": index, "b_now": now})
                events.append({"kind": "enrollment_completed", "contact_id": work.contact_id,
                               "enrollment_id": work.enrollment_id, "message_id": None, "occurred_at": now,
                               "detail": {}})
            else:
                advanced.append({"b_id": work.enrollment_id, "b_index": index, "b_due": due})
        table = Enrollment.__table__
        if advanced:
            session.execute(
                table.update().where(table.c.id == bindparam("b_id")).values(
                    step_index=bindparam("b_index"), next_due_at=bindparam("b_due", type_=table.c.next_due_at.type),
                    claimed_by=None),
                advanced,
            )
        if completed:
            session.execute(
                table.update().where(table.c.id == bindparam("b_id")).values(
                    step_index=bindparam("b_index"), status=str(EnrollmentStatus.COMPLETED), next_due_at=None,
                    claimed_by=None, ended_at=bindparam("b_now", type_=table.c.ended_at.type)),
                completed,
            )
        for clear_due in (True, False):
            ids_ = [row["b_id"] for row in released if row["b_clear_due"] is clear_due]
            if ids_:
                values: dict[str, object] = {"claimed_by": None}
                if clear_due:
                    values["next_due_at"] = None
                session.execute(table.update().where(table.c.id.in_(ids_)).values(**values))
        db.bulk_insert(session.connection(), Event.__table__, ("kind", "contact_id", "enrollment_id", "message_id",
                                                             "occurred_at", "detail"),
                       [(e["kind"], e["contact_id"], e["enrollment_id"], e["message_id"], e["occurred_at"], e["detail"])
                        for e in events])

    def _record_failure(self, session: Session, result: _Result, now: datetime) -> str:
        work, exc = result.work, result.error
        assert exc is not None
        channel = work.outgoing.channel
        message = session.get(Message, work.message_id)
        enrollment = session.get(Enrollment, work.enrollment_id)
        assert message is not None and enrollment is not None
        contact = session.get(Contact, message.contact_id)
        assert contact is not None
        message.updated_at = now
        real_now = self._clock(now)  # waits before the next attempt run in real time
        if result.not_sent:
            # Never reached the provider (channel paused a moment ago, or the limiter failed):
            # this attempt does not count, and a record made for it alone is taken back — as if
            # the pause had been seen when the batch was prepared.
            if message.attempts <= 1 and message.status == MessageStatus.SENDING and message.created_at == now:
                session.delete(message)
            else:
                message.status = MessageStatus.RETRYING
                message.attempts -= 1
                message.last_error = str(exc.reason)[:500]
            if isinstance(exc, AuthSendError):
                enrollment.next_due_at = real_now + PAUSE_RECHECK
                enrollment.claimed_by = None
                return Outcome.PAUSED
            enrollment.next_due_at = real_now + PAUSE_RECHECK
            enrollment.claimed_by = None
            return Outcome.ERROR
        message.last_error = str(exc.reason)[:500]
        message.error_code = None if exc.code is None else str(exc.code)[:40]
        if isinstance(exc, AuthSendError) or getattr(exc, "affects_all_recipients", False):
            # Our account is wrong for everyone: pause the channel, keep this message queued.
            message.status = MessageStatus.RETRYING
            message.attempts -= 1
            db.set_kv(session, pause_key(channel), f"{now:%Y-%m-%d %H:%M} UTC provider refused: {exc}", now)
            add_event(session, "channel_paused", now, contact_id=None, channel=channel, reason=exc.reason)
            enrollment.next_due_at = real_now + PAUSE_RECHECK
            enrollment.claimed_by = None
            log.critical("%s delivery paused: provider refused our account (%s); fix the configuration and "
                         "run `drip resume %s`", channel, exc, channel)
            return Outcome.PAUSED
        if isinstance(exc, TransientSendError) and (
                message.attempts < self.rt.settings.max_attempts or now - message.created_at < RETRY_HORIZON):
            message.status = MessageStatus.RETRYING
            with self._rng_lock:
                delay = backoff_delay(message.attempts, exc.retry_after, self.rng)
            enrollment.next_due_at = real_now + delay
            enrollment.claimed_by = None
            add_event(session, "message_retry", now, contact_id=contact.id, message_id=message.id,
                      attempt=message.attempts, retry_in_seconds=int(delay.total_seconds()), error=exc.reason)
            log.warning("message %s transient failure (attempt %s), retry in %ss: %s", message.id,
                        message.attempts, int(delay.total_seconds()), exc.reason)
            return Outcome.RETRYING
        if isinstance(exc, AmbiguousSendError) and message.status != MessageStatus.SENDING:
            # The provider's receipt arrived before our call gave up: it is settled, not unknown.
            message.sent_at = message.sent_at or now
            self._advance_after_send(session, enrollment, now)
            return Outcome.SENT
        if isinstance(exc, AmbiguousSendError):
            message.status = MessageStatus.UNKNOWN
            add_event(session, "message_unknown", now, contact_id=contact.id, message_id=message.id, error=exc.reason)
            log.warning("message %s outcome unknown (%s); awaiting reconciliation", message.id, exc.reason)
            enrollment.next_due_at = real_now + RECONCILE_WAIT
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


def _kind(exc: BaseException | None) -> str:
    """An exception's type (and the driver's), never its text: SQLAlchemy and the drivers put
    statement parameters — addresses, names, message bodies — into it (STYLE rule 9)."""
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None)
    return type(exc).__name__ + (f": {type(orig).__name__}" if orig is not None else "")


def _stack(exc: BaseException | None) -> str:
    return "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""


def _error_result(exc: SendError) -> str:
    if isinstance(exc, TransientSendError):
        return "transient"
    if isinstance(exc, AmbiguousSendError):
        return "ambiguous"
    if isinstance(exc, AuthSendError):
        return "auth"
    return "permanent"


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
