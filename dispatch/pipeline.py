"""The dispatch pipeline: claim due enrollments, write the send record, render, deliver, record.

Delivery semantics (README "Delivery semantics"):
- A message row is committed with status `sending` *before* the provider is called; the unique key
  (enrollment, step, channel) makes a second row — and so a second send — of the same step impossible.
- Just before the provider call the worker commits `handed_at` on the rows it hands over, only once
  the answers of the previous ones are noted (same transaction): at most `DRIP_WORKER_CONCURRENCY`
  rows are ever handed without a noted answer — all a SIGKILL can leave in doubt.
- A row found still `sending` after its lease ran out belongs to a worker that died. Not handed:
  the request never left, so it is sent again (same record). Handed: it is marked `unknown` and
  reconciled (status callback, or asking Twilio, else staff review), never sent again blindly.
- What each step does is decided in `step.py`; what a provider's answer does in `outcome.py`; the
  SQL is in `queue.py`. This module only moves batches between them.

How a pass is organised (the shape is about database round trips, not about semantics):

1. *Claim* a batch of due enrollments in one statement (`queue.claim_due`).
2. *Prepare* it `PREPARE_CHUNK` enrollments per write transaction: load the enrollments, contacts,
   current send records and pause flags with a handful of set-based queries, decide each enrollment
   (`step.decide`), insert the new send records, render them and commit them as `sending`.
3. *Hand over*: whenever pool threads are free, one short write transaction notes the answers
   that came back (`sent`; failures recorded in full) and marks the next sends `handed_at`
   (`_note_and_hand`), then those are submitted to the pool.
4. *Send* on a bounded thread pool (`DRIP_WORKER_CONCURRENCY`): only the provider call and the
   shared rate limiter run there; no database work.
5. *Record* the accepted sends in full — enrollments moved on, events — in batches, one write
   transaction per up to `RECORD_BATCH` results or `RECORD_DELAY`.

The main thread prepares the next chunk while the pool sends, in pieces small enough that freed
threads get new work soon.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, object_session

from patient_drip import db
from patient_drip.logs import error_kind, error_stack
from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.context import unsubscribe_url
from patient_drip.content.render_memo import MemoRenderer
from patient_drip.content.rendering import RenderError
from patient_drip.dispatch import queue
from patient_drip.dispatch.ratelimit import build_limiters
from patient_drip.dispatch.render_step import StepRenderer, record_name_dropped
from patient_drip.dispatch.counters import COUNTERS, result_label
from patient_drip.dispatch.outcome import (
    BackoffChooser,
    FailurePolicy,
    SendResult,
    Work,
    record_failure,
    record_sent,
)
from patient_drip.dispatch.step import BatchState, Outcome, Ready, decide, defer, defer_over_cap, hold
from patient_drip.models import Channel, Contact, Enrollment, Message, MessageStatus
from patient_drip.providers.types import AccountSendError, AuthSendError, OutgoingMessage, SendError, TransientSendError
from patient_drip.runtime import Runtime

log = logging.getLogger("drip.dispatch")

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
HAND_LINGER = 0.01  # at most this long (and a quarter of a provider round trip) to gather answers
# A pooled pass prepares at most this many claimed enrollments before it looks at the pool again:
# a thread that finished is only given its next send after its answer is recorded (the bound on
# what a crash leaves in doubt), so the dispatching thread must not be away for long.
PREPARE_CHUNK = 50
# Outcomes are kept in memory and retried this many times, with backoff from 0.1 s (about 25 s in
# all), when the database is unreachable: a restart of PostgreSQL must not turn sent messages
# into `unknown` ones that need reconciling.
RECORD_RETRIES = 9


@dataclass
class DispatchSummary:
    """What one pass did: how many enrollments it claimed and how each turn ended (`Outcome`)."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    def merge(self, other: DispatchSummary) -> None:
        self.claimed += other.claimed
        self.outcomes.update(other.outcomes)

    def line(self) -> str:
        """One log/CLI line: "12 claimed, 3 deferred, 9 sent"."""
        parts = [f"{self.claimed} claimed"] + [f"{count} {name}" for name, count in sorted(self.outcomes.items())]
        return ", ".join(parts)


class Dispatcher:
    """Runs dispatch passes for one worker.

    `run_once` is meant to be called by one thread at a time (the scheduler's dispatch job runs
    with max_instances=1); inside it, provider calls run on a pool of
    `DRIP_WORKER_CONCURRENCY` threads."""

    def __init__(self, rt: Runtime, worker_id: str, *, rng: random.Random | None = None) -> None:
        self.rt = rt
        self.worker_id = worker_id
        self._backoff = BackoffChooser(rng or random.Random())
        self._renderer = StepRenderer(rt)
        self._limiters = build_limiters(rt.settings, rt.sessions)  # pacing shared with every worker
        self._local_pause: set[str] = set()
        # Where the dispatching thread spends its time (seconds, cumulative): claim, prepare,
        # record, idle (waiting for the provider calls). For profiling and the benchmark.
        self.phase_seconds: Counter[str] = Counter()
        self._latency = 0.0  # moving average of provider round trips (seconds), for sizing claims
        self._pass_started = time.monotonic()
        self.stop_requested = threading.Event()  # set to finish the sends in flight and return early

    # -- public -----------------------------------------------------------------------------

    @property
    def render_memo(self) -> MemoRenderer:
        """The memo that renders each step once (hits, misses, bypassed: for the benchmark)."""
        return self._renderer.memo

    def run_once(self, now: datetime, *, max_batches: int | None = None) -> DispatchSummary:
        """Claim and process batches until nothing is due at `now` (or `max_batches` ran).

        Returns early, after recording every send in flight, once `stop_requested` is set."""
        summary = DispatchSummary()
        self._pass_started = time.monotonic()
        self.rt.refresh()
        self._local_pause.clear()
        COUNTERS.count_pass()
        if self.rt.settings.worker_concurrency == 1:
            self._run_serial(now, max_batches, summary)
        else:
            self._run_pooled(now, max_batches, summary)
        return summary

    # -- the pass ---------------------------------------------------------------------------

    def _more_batches(self, batches: int, max_batches: int | None) -> bool:
        return (max_batches is None or batches < max_batches) and not self.stop_requested.is_set()

    def _record_all(self, results: list[SendResult], now: datetime, summary: DispatchSummary) -> None:
        for start in range(0, len(results), RECORD_BATCH):
            for outcome in self._record(results[start:start + RECORD_BATCH], now):
                summary.add(outcome)

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
            results: list[SendResult] = []
            answered: list[SendResult] = []
            for work in works:  # one in doubt at a time: each answer is noted as the next is handed
                results = [self._send(w) for w in self._note_and_hand(results, [work], answered, now, summary)]
            self._note_and_hand(results, [], answered, now, summary)
            self._record_all(answered, now, summary)

    def _run_pooled(self, now: datetime, max_batches: int | None, summary: DispatchSummary) -> None:
        concurrency = self.rt.settings.worker_concurrency
        batches = 0
        claimed: deque[int] = deque()  # claimed enrollments not prepared yet
        ready: deque[Work] = deque()  # send records committed as `sending`, not handed yet
        inflight: set[Future[SendResult]] = set()  # handed, no answer noted: at most `concurrency`
        answered: list[SendResult] = []  # accepted and noted `sent`; enrollments not moved on yet
        oldest_answer = 0.0
        drained = False  # the last claim found nothing and nothing was recorded since

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="drip-send") as pool:
            while True:
                done = {f for f in inflight if f.done()}
                inflight -= done
                hand = [ready.popleft() for _ in range(min(concurrency - len(inflight), len(ready)))]
                if done or hand:
                    if not answered:
                        oldest_answer = time.monotonic()
                    inflight.update(pool.submit(self._send, work) for work in self._note_and_hand(
                        [f.result() for f in done], hand, answered, now, summary))
                if answered and (len(answered) >= RECORD_BATCH or not inflight
                                 or time.monotonic() - oldest_answer >= RECORD_DELAY):
                    self._record_all(answered, now, summary)
                    answered = []
                    # Recording can make the next step due at `now` (day 0 sends an email and
                    # an SMS): the next claim may find work again.
                    drained = False
                if claimed and self.stop_requested.is_set():
                    self._release(list(claimed), now)  # stopping: due again now, not after the lease
                    claimed.clear()
                if claimed and len(ready) < max(2 * concurrency, PREPARE_CHUNK):
                    part = [claimed.popleft() for _ in range(min(PREPARE_CHUNK, len(claimed)))]
                    works, outcomes = self._prepare_ids(part, now)
                    ready.extend(works)
                    for outcome in outcomes:
                        summary.add(outcome)
                    continue
                more = self._more_batches(batches, max_batches)
                # Keep about one claim's worth queued behind what is being sent: the pool never
                # starves and memory stays bounded whatever the length of the queue.
                limit = self._claim_size()
                if not claimed and not drained and more and len(ready) + len(inflight) < limit:
                    ids = self._claim(now, limit)
                    if ids is None:  # the database is away: finish what is in flight, then stop
                        max_batches, ids = batches, []
                    if ids:
                        batches += 1
                        summary.claimed += len(ids)
                        claimed.extend(ids)
                        continue
                    drained = True
                if not inflight and not ready and not claimed and not answered:
                    if drained or not more:
                        return
                    continue
                if inflight and (len(inflight) == concurrency or not ready):
                    started = time.perf_counter()
                    finished, _ = wait(inflight, timeout=RECORD_DELAY, return_when=FIRST_COMPLETED)
                    if finished and ready and len(finished) < concurrency // 2:
                        # Let a few more answers come so that one hand-over transaction serves
                        # several threads: a short wait costs less than a round trip per send.
                        wait(inflight, timeout=min(HAND_LINGER, self._latency / 4), return_when=ALL_COMPLETED)
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
            return queue.claim_due(self.rt, now, limit or self.rt.settings.dispatch_batch_size, self.worker_id,
                                   lease_from=self._clock(now))
        except OperationalError as exc:
            log.warning("could not claim due enrollments: database unavailable (%s)", error_kind(exc))
            return None
        finally:
            self.phase_seconds["claim"] += time.perf_counter() - started

    # -- phase 1: decide and write the send records (one transaction per chunk) ----------------

    def _prepare_ids(self, ids: list[int], now: datetime) -> tuple[list[Work], list[str]]:
        """Prepare claimed enrollments; returns the sends to make and the other outcomes."""
        started = time.perf_counter()
        try:
            return self._prepare_parts(ids, now)
        finally:
            self.phase_seconds["prepare"] += time.perf_counter() - started

    def _prepare_parts(self, ids: list[int], now: datetime) -> tuple[list[Work], list[str]]:
        size = SQLITE_PREPARE_CHUNK if self.rt.engine.dialect.name == "sqlite" else len(ids)
        works: list[Work] = []
        outcomes: list[str] = []
        for start in range(0, len(ids), max(1, size)):
            part = ids[start:start + size]
            try:
                chunk_works, chunk_outcomes = self._prepare_chunk(part, now)
            except OperationalError as exc:  # the database, not a row: the lease brings them back
                log.warning("could not prepare %s enrollments: database unavailable (%s); they fall due again "
                            "when their lease ends", len(part), error_kind(exc))
                outcomes += [Outcome.ERROR] * len(part)
                continue
            except Exception as exc:
                if len(part) == 1:
                    log.error("could not prepare enrollment %s (%s); it falls due again when its lease ends\n%s",
                              part[0], error_kind(exc), error_stack(exc))
                    outcomes.append(Outcome.ERROR)
                    continue
                # One bad row must not hold the whole batch: find it by preparing them one by one.
                log.warning("preparing a batch of %s failed (%s); retrying one by one", len(part), error_kind(exc))
                for enrollment_id in part:
                    one_works, one_outcomes = self._prepare_parts([enrollment_id], now)
                    works += one_works
                    outcomes += one_outcomes
                continue
            works += chunk_works
            outcomes += chunk_outcomes
        return works, outcomes

    def _prepare_chunk(self, ids: Sequence[int], now: datetime) -> tuple[list[Work], list[str]]:
        outcomes: list[str] = []
        with db.write_transaction(self.rt.sessions) as session:
            state = BatchState(session, ids, self.rt.campaigns)
            if len(state.rows) < len(ids):
                outcomes += [Outcome.LOST_CLAIM] * (len(ids) - len(state.rows))
            ready: list[Ready] = []
            for enrollment, contact in state.rows:
                decided = decide(state, enrollment, contact, now, worker_id=self.worker_id,
                                 campaigns=self.rt.campaigns)
                if isinstance(decided, Ready):
                    ready.append(decided)
                else:
                    outcomes.append(decided)
            sendable, deferred = defer_over_cap(state, ready, now)
            outcomes += deferred
            works, failed = self._write_send_records(session, sendable, now)
            outcomes += failed
        return works, outcomes

    def _write_send_records(self, session: Session, sendable: list[Ready],
                            now: datetime) -> tuple[list[Work], list[str]]:
        """Mark retries `sending`; for new sends take ids first (the links in a message carry its
        id), render, then insert all complete rows already `sending` for this attempt at once."""
        new_ids = iter(queue.new_message_ids(session, sum(1 for item in sendable if item.message is None)))
        rows: list[tuple[object, ...]] = []
        held: list[tuple[Ready, int, tuple[str | None, str | None, str], str]] = []
        works: list[Work] = []
        outcomes: list[str] = []
        names_dropped: list[tuple[int, Enrollment, Step, int]] = []
        for item in sendable:
            enrollment, contact, campaign, step = item.enrollment, item.contact, item.campaign, item.step
            if item.message is not None:
                works.append(self._ready(item.message, enrollment, contact, campaign, step, now))
                continue
            message_id = next(new_ids)
            try:
                rendered = self._renderer.render(message_id, contact, campaign, step, item.language)
            except RenderError as exc:
                log.error("template %s failed for message %s: %s", step.template, message_id, exc)
                defer(enrollment, now + queue.RENDER_RETRY)
                outcomes.append(Outcome.ERROR)
                continue
            if rendered.hold_reason is not None:  # a content rule failed on the real values: never sent
                held.append((item, message_id, (rendered.subject, rendered.html, rendered.text),
                             rendered.hold_reason))
                outcomes.append(Outcome.HELD)
                continue
            to = contact.email if step.channel == Channel.EMAIL else contact.phone
            rows.append((message_id, enrollment.id, contact.id, campaign.id, step.id, str(step.channel),
                         str(MessageStatus.SENDING), to, rendered.subject, rendered.text, rendered.html,
                         step.template, "", self._provider_name(step.channel), 1, now, self._clock(now), now,
                         self.worker_id, enrollment.entry, item.variant, item.language))
            works.append(self._work(message_id, enrollment, contact, campaign, step, 1, to, rendered.text,
                                    rendered.subject, rendered.html, rendered.unsubscribe, now))
            if rendered.segments_with_name:
                names_dropped.append((message_id, enrollment, step, rendered.segments_with_name))
        queue.insert_messages(session, rows)
        for message_id, enrollment, step, segments in names_dropped:  # after the rows they point at exist
            record_name_dropped(session, message_id, enrollment, step, segments, now)
        for item, message_id, rendered, reason in held:  # after the insert: ids are taken in order
            hold(session, item, message_id, rendered, reason, now)
        return works, outcomes

    def _ready(self, message: Message, enrollment: Enrollment, contact: Contact, campaign: Campaign, step: Step,
               now: datetime) -> Work:
        """Mark an existing send record (a retry) `sending` for this attempt and describe it."""
        message.status = MessageStatus.SENDING
        message.attempts = (message.attempts or 0) + 1
        message.attempted_at = self._clock(now)
        message.handed_at = None  # this attempt is not handed over yet
        message.worker_id = self.worker_id
        message.updated_at = now
        message.to_address = contact.email if step.channel == Channel.EMAIL else contact.phone
        message.provider = self._provider_name(step.channel)
        if message.body_text is None:  # its first attempt never got as far as rendering
            # A retry goes out as first rendered (and checked); one never rendered is rendered and checked
            # now, and if it breaks a content rule it fails like a broken template: not sent, tried later.
            rendered = self._renderer.render(message.id, contact, campaign, step, message.language or "en")
            if rendered.hold_reason is not None:
                raise RenderError(step.template, rendered.hold_reason)
            message.subject, message.body_html, message.body_text = rendered.subject, rendered.html, rendered.text
            if rendered.segments_with_name:
                record_name_dropped(object_session(message), message.id, enrollment, step,
                                    rendered.segments_with_name, now)
        return self._work(message.id, enrollment, contact, campaign, step, message.attempts, message.to_address,
                          message.body_text or "", message.subject, message.body_html,
                          unsubscribe_url(self.rt.settings, self.rt.tokens, contact.id, message.id), now)

    def _work(self, message_id: int, enrollment: Enrollment, contact: Contact, campaign: Campaign, step: Step,
              attempts: int, to: str | None, text: str, subject: str | None, html: str | None,
              unsubscribe: str, now: datetime) -> Work:
        # Skipping a step on the way here moved the enrollment on and released it: hold it again
        # until the outcome is recorded, so no other pass picks it up while the send is in flight.
        enrollment.next_due_at = self._clock(now) + queue.LEASE
        enrollment.claimed_by = self.worker_id
        return Work(
            message_id=message_id,
            enrollment_id=enrollment.id,
            contact_id=contact.id,
            campaign_id=campaign.id,
            campaign_version=enrollment.campaign_version,
            step_index=enrollment.step_index,
            step_id=step.id,
            enrolled_at=enrollment.enrolled_at,
            timezone=contact.timezone,
            phone=contact.phone,
            attempts=attempts,
            outgoing=OutgoingMessage(
                message_id=message_id,
                channel=Channel(step.channel),
                to=to or "",
                text=text,
                subject=subject,
                html=html,
                unsubscribe_url=unsubscribe if step.channel == Channel.EMAIL else None,
                categories=(campaign.id, step.id),
            ),
        )

    def _provider_name(self, channel: str) -> str:
        return self.rt.senders[Channel(channel)].provider

    # -- phase 2: the provider call (pool threads; no database work but the rate limiter) ----------

    def _send(self, work: Work) -> SendResult:
        channel = work.outgoing.channel
        if channel in self._local_pause:
            return SendResult(work, error=AuthSendError(f"{channel} paused during this pass"), not_sent=True)
        try:
            limiter = self._limiters.get(channel)
            if limiter is not None:  # hold the channel's configured rate across all workers
                limiter.acquire()
        except Exception as exc:
            log.error("rate limiter failed for message %s (%s); not sent, tried again in a minute", work.message_id,
                      error_kind(exc))
            return SendResult(work, error=TransientSendError("rate limiter unavailable"), not_sent=True)
        started = time.monotonic()
        try:
            provider_id = self.rt.senders[channel].send(work.outgoing)
        except SendError as exc:
            elapsed = time.monotonic() - started
            if isinstance(exc, AccountSendError):
                self._local_pause.add(channel)  # stop this pass's other sends on the channel at once
            COUNTERS.observe(channel, result_label(exc), elapsed)
            return SendResult(work, error=exc)
        except Exception as exc:  # a bug below us: the request may have left; never resend blindly
            log.error("unexpected error sending message %s (%s); it becomes unknown when its lease ends\n%s",
                      work.message_id, error_kind(exc), error_stack(exc))
            COUNTERS.observe(channel, "error", None)
            return SendResult(work, unexpected=True)
        elapsed = time.monotonic() - started
        COUNTERS.observe(channel, "sent", elapsed)
        self._latency = elapsed if self._latency <= 0 else 0.9 * self._latency + 0.1 * elapsed
        log.debug("provider call for message %s took %.0f ms", work.message_id, elapsed * 1000)
        return SendResult(work, provider_id=provider_id)

    # -- phase 3: record outcomes and hand over the next sends (one transaction) --------------------

    def _note_and_hand(self, results: list[SendResult], hand: list[Work], answered: list[SendResult],
                       now: datetime, summary: DispatchSummary) -> list[Work]:
        """In one short transaction: note the accepted `results` as `sent` and mark `hand` handed
        over (`queue.note_and_hand`; the accepted join `answered`, whose enrollments `_record_all`
        moves on later, in batches), and record the failed ones in full. Returns the
        works this worker may now send; a send another worker took over after our lease ran out is
        left out (`LOST_CLAIM`).

        Noting an answer before the next send is handed keeps the bound: handed sends without a
        noted answer never number more than the pool. If the transaction fails, the results are
        recorded in full on their own (with the retries and the one-by-one search of `_record`)
        and the hand-over is tried alone; a hand-over that cannot be written is not sent: still
        `sending` and never handed, it falls due again after the lease and is sent then."""
        if not results and not hand:
            return []
        accepted = [r for r in results if r.error is None and not r.unexpected]
        failed = [r for r in results if r.error is not None or r.unexpected]
        ids = [work.message_id for work in hand]
        started = time.perf_counter()
        try:
            with db.write_transaction(self.rt.sessions) as session:
                handed: set[int] | None = queue.note_and_hand(
                    session, [r.work.message_id for r in accepted], ids, self.worker_id, now, self._clock(now))
                outcomes = self._record_in(session, failed, now) if failed else []
            answered.extend(accepted)
        except Exception as exc:
            log.warning("noting %s answers and handing over %s sends failed (%s); doing each alone",
                        len(results), len(hand), error_kind(exc))
            outcomes = self._record(results, now)
            handed = self._hand_alone(ids, now)
        finally:
            self.phase_seconds["record"] += time.perf_counter() - started
        for outcome in outcomes + [Outcome.ERROR] * (len(hand) if handed is None else 0):
            summary.add(outcome)
        if handed is None:
            return []
        for work in hand:
            if work.message_id not in handed:
                log.warning("message %s was taken over by another worker before we handed it over; not sent "
                            "by this one", work.message_id)
                summary.add(Outcome.LOST_CLAIM)
        return [work for work in hand if work.message_id in handed]

    def _hand_alone(self, ids: list[int], now: datetime) -> set[int] | None:
        try:
            with db.write_transaction(self.rt.sessions) as session:
                return queue.mark_handed(session, ids, self.worker_id, self._clock(now))
        except Exception as exc:
            log.warning("could not hand over message(s) %s (%s); not sent now, sent again when the lease ends",
                        ", ".join(map(str, ids)), error_kind(exc))
            return None

    def _release(self, ids: list[int], now: datetime) -> None:
        try:
            with db.write_transaction(self.rt.sessions) as session:
                queue.release_claims(session, ids, self.worker_id, self._clock(now))
        except Exception as exc:  # they fall due when the lease ends instead
            log.warning("could not give back %s claims (%s); due again when their lease ends", len(ids), error_kind(exc))

    def _record(self, results: list[SendResult], now: datetime) -> list[str]:
        """Write the outcomes of `results`; returns one outcome per result."""
        if not results:
            return []
        started = time.perf_counter()
        try:
            return self._record_retrying(results, now)
        finally:
            self.phase_seconds["record"] += time.perf_counter() - started

    def _record_retrying(self, results: list[SendResult], now: datetime) -> list[str]:
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
                            error_kind(exc))
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

    def _record_in(self, session: Session, results: list[SendResult], now: datetime) -> list[str]:
        outcomes: dict[int, str] = {}
        sent = [r for r in results if r.error is None and not r.unexpected]
        # The pause is recorded as this worker's doing; waits before the next attempt run in real time.
        policy = FailurePolicy(max_attempts=self.rt.settings.max_attempts, campaigns=self.rt.campaigns,
                               actor=f"worker:{self.worker_id}", backoff=self._backoff)
        for result in results:
            if result.unexpected:
                outcomes[id(result)] = Outcome.ERROR
            elif result.error is not None:
                outcomes[id(result)] = record_failure(session, result, now, self._clock(now), policy)
        if sent:
            record_sent(session, sent, now, self.rt.campaigns)
            for result in sent:
                outcomes[id(result)] = Outcome.SENT
        for result in results:
            if outcomes[id(result)] == Outcome.SENT:
                log.info("sent message %s (%s, step %s) to contact %s", result.work.message_id,
                         result.work.outgoing.channel, result.work.step_id, result.work.contact_id)
        return [outcomes[id(r)] for r in results]
