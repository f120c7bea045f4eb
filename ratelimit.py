"""Per-channel send pacing shared by every worker through the database.

A single row per channel holds the next free send slot. A worker reserves a small block of slots
in one short transaction (a quarter second's worth, at least one) and hands them out to its own
threads, so the limit holds across all processes and machines without a database round trip per
message. Pacing uses the wall clock: it is about real provider limits, not about schedule decisions.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sqlalchemy.orm import Session, sessionmaker

import db
from models import RateBucket

BLOCK_SECONDS = 0.25


class SharedRateLimiter:
    def __init__(self, sessions: sessionmaker[Session], channel: str, rate_per_second: float, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sessions = sessions
        self.channel = channel
        self.interval = 1.0 / rate_per_second
        self.block = max(1, int(rate_per_second * BLOCK_SECONDS))
        self.clock = clock
        self.sleep = sleep
        self._slots: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this process's next slot; returns how long it waited (seconds)."""
        with self._lock:
            now = self.clock()
            while self._slots and self._slots[0] < now - 1.0:  # stale reservations: drop, reserve fresh
                self._slots.popleft()
            if not self._slots:
                self._reserve(now)
            slot = self._slots.popleft()
        wait = slot - self.clock()
        if wait > 0:
            self.sleep(wait)
            return wait
        return 0.0

    def _reserve(self, now: float) -> None:
        moment = datetime.fromtimestamp(now, timezone.utc)
        with db.write_transaction(self.sessions) as session:
            bucket = session.get(RateBucket, self.channel, with_for_update=True)
            if bucket is None:
                bucket = RateBucket(channel=self.channel, next_slot_at=moment)
                session.add(bucket)
            start = max(bucket.next_slot_at, moment)
            bucket.next_slot_at = start + timedelta(seconds=self.interval * self.block)
        first = start.timestamp()
        self._slots.extend(first + index * self.interval for index in range(self.block))
