"""This process's dispatch counters for `/metrics`: provider calls by channel and result, their
latency (a histogram) and dispatch passes.

Only this process's sends are counted; queue depth and lag come from the database instead
(`web/metrics.py`), so they are right whichever process is scraped.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

from patient_drip.providers.types import (
    AmbiguousSendError,
    AuthSendError,
    SendError,
    TransientSendError,
)


class DispatchCounters:
    """Thread-safe counters; the sending threads `observe`, the scrape takes a `snapshot`."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: Counter[tuple[str, str]] = Counter()  # (channel, result) → count
        self.latency_count: Counter[str] = Counter()
        self.latency_sum: Counter[str] = Counter()
        self.latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(self.LATENCY_BUCKETS))
        self.passes = 0

    def count_pass(self) -> None:
        """One more dispatch pass started."""
        with self._lock:
            self.passes += 1

    def observe(self, channel: str, result: str, seconds: float | None) -> None:
        """One provider call on `channel` ended with `result` (`result_label`, "sent" or "error")
        after `seconds` (None: no latency to report)."""
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
        """A consistent copy of every counter (plain dicts and lists)."""
        with self._lock:
            return {
                "messages": dict(self.messages),
                "latency_count": dict(self.latency_count),
                "latency_sum": dict(self.latency_sum),
                "latency_buckets": {k: list(v) for k, v in self.latency_buckets.items()},
                "passes": self.passes,
            }


def result_label(exc: SendError) -> str:
    """The `result` label of a failed provider call: transient, ambiguous, auth or permanent
    (a refusal of our account that is not about credentials counts as permanent)."""
    if isinstance(exc, TransientSendError):
        return "transient"
    if isinstance(exc, AmbiguousSendError):
        return "ambiguous"
    if isinstance(exc, AuthSendError):
        return "auth"
    return "permanent"


COUNTERS = DispatchCounters()
