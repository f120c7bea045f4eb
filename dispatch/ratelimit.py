"""Per-channel send pacing shared by every worker through the database.

A single row per channel holds the next free send slot. A worker reserves a block of slots in one
short transaction and hands them out to its own threads, so the limit holds across all processes
and machines without a database round trip per message. Pacing uses the wall clock: it is about
real provider limits, not about schedule decisions.

A block is sized by what this worker has been using — about a quarter second of its own recent
sending, at most a quarter second of the channel's whole rate, at least one slot. Sizing it by the
channel's rate alone would hand each worker a quarter second of the *whole* capacity: with
several workers and a generous limit they would take turns in quarter-second windows they cannot
fill, and together send far below the limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from patient_drip import db
from patient_drip.models import Channel, RateBucket
from patient_drip.settings import Settings

BLOCK_SECONDS = 0.25
FIRST_BLOCK = 8  # slots in a worker's first reservation, before it knows its own pace


class SharedRateLimiter:
    def __init__(self, sessions: sessionmaker[Session], channel: str, rate_per_second: float, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sessions = sessions
        self.channel = channel
        self.interval = 1.0 / rate_per_second
        self.block = max(1, int(rate_per_second * BLOCK_SECONDS))  # the most one reservation takes
        self.clock = clock
        self.sleep = sleep
        # The reserved block, kept as "next slot + how many are left" rather than a list of
        # timestamps: a high limit (thousands a second) may reserve big blocks.
        self._next = 0.0
        self._left = 0
        self._used = 0  # slots handed out since the last reservation
        self._reserved_at: float | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this process's next slot; returns how long it waited (seconds)."""
        with self._lock:
            now = self.clock()
            if self._left and self._next < now - 1.0:  # stale reservations: drop, reserve fresh
                stale = min(self._left, int((now - 1.0 - self._next) / self.interval) + 1)
                self._next += stale * self.interval
                self._left -= stale
            if not self._left:
                self._reserve(now, self._next_block_size(now))
            slot = self._next
            self._next += self.interval
            self._left -= 1
            self._used += 1
        wait = slot - self.clock()
        if wait > 0:
            self.sleep(wait)
            return wait
        return 0.0

    def _next_block_size(self, now: float) -> int:
        """About BLOCK_SECONDS of this worker's own recent use, within [1, self.block]."""
        if self._reserved_at is None:
            return min(self.block, FIRST_BLOCK)
        elapsed = max(now - self._reserved_at, self.interval, 1e-3)
        wanted = math.ceil(self._used / elapsed * BLOCK_SECONDS)
        return max(1, min(self.block, wanted))

    def _reserve(self, now: float, count: int) -> None:
        moment = datetime.fromtimestamp(now, timezone.utc)
        for attempt in (1, 2):
            try:
                with db.write_transaction(self.sessions) as session:
                    # FOR UPDATE: workers on other machines queue here; SQLite's BEGIN IMMEDIATE
                    # does the same for local processes.
                    bucket = session.get(RateBucket, self.channel, with_for_update=True)
                    if bucket is None:
                        bucket = RateBucket(channel=self.channel, next_slot_at=moment)
                        session.add(bucket)
                    start = max(bucket.next_slot_at, moment)
                    bucket.next_slot_at = start + timedelta(seconds=self.interval * count)
                break
            except IntegrityError:  # two workers created the channel's row at once: it exists now
                if attempt == 2:
                    raise
        self._next = start.timestamp()
        self._left = count
        self._used = 0
        self._reserved_at = now


def build_limiters(settings: Settings, sessions: sessionmaker[Session]) -> dict[Channel, SharedRateLimiter]:
    """The shared rate limit of each channel that reaches a provider; none for the outbox (nothing
    leaves the machine), so a channel missing from the result is not limited."""
    if settings.delivery == "outbox":
        return {}
    return {
        Channel.SMS: SharedRateLimiter(sessions, Channel.SMS, settings.sms_rate_per_second),
        Channel.EMAIL: SharedRateLimiter(sessions, Channel.EMAIL, settings.email_rate_per_second),
    }
