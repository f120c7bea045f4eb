"""Waking the dispatcher of this process: a pass now instead of at the next tick (issue 15).

`Waker` runs one function -- a dispatch pass -- for two kinds of callers: the scheduler's interval
tick (`run`, the safety net) and wakes (`wake`: a commit that made work due now, `due_now`, or a
PostgreSQL notification, `dispatch.listener`). Its promises:

- one pass at a time in the process, whoever asks: a pass asked for while one runs is not started
  beside it (the APScheduler job keeps `max_instances=1`; wakes run on the waker's own thread and
  share the same guard);
- nothing asked for is lost: a wake or tick that arrives during a pass makes exactly one more pass
  after it, however many arrived (a burst of 50 requests costs at most two passes, not 50);
- `wake` never blocks and never touches the database: it runs in the thread that committed.

Double sends stay impossible for the reasons they always were (claims, the send record's unique
key): an extra pass finds nothing to claim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("drip.wake")


class Waker:
    """Runs `run_pass` on demand, one at a time, coalescing requests (see the module docstring).

    `run_pass` must not raise (the scheduler wraps it in `scheduler.guarded`)."""

    def __init__(self, run_pass: Callable[[], None]) -> None:
        self._run_pass = run_pass
        self._lock = threading.Lock()
        self._running = False  # a pass is under way (on the tick's thread or the wake thread)
        self._again = False  # asked for during that pass: run once more after it
        self._asked = threading.Event()  # wake(): the wake thread has work
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.wakes = 0  # how many wakes were asked for (for tests and the log)
        self.passes = 0  # how many passes ran

    def start(self) -> None:
        """Start the thread that runs passes for wakes (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="drip-wake", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """No more passes for wakes; wait for the one the wake thread is running, if any."""
        self._stopping.set()
        self._asked.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Ask for a pass soon. Cheap and non-blocking: callable from any thread, a commit hook included."""
        self.wakes += 1
        self._asked.set()

    def run(self) -> None:
        """Run a pass in the calling thread now -- or, when one is running, have it run once more
        after it and return at once (the caller's request is carried by the running pass)."""
        with self._lock:
            if self._running:
                self._again = True
                return
            self._running = True
        try:
            while True:
                # This pass serves every wake asked for until now: the wake thread need not run another.
                self._asked.clear()
                self._run_pass()
                self.passes += 1
                with self._lock:
                    # Checked and cleared under the lock that `run` callers take: a request that
                    # arrives after this point finds `_running` false and starts its own pass.
                    if not self._again or self._stopping.is_set():
                        self._running = False
                        return
                    self._again = False
        except BaseException:
            with self._lock:
                self._running = False
            raise

    def _loop(self) -> None:
        while True:
            self._asked.wait()
            if self._stopping.is_set():
                return
            # Cleared here too, for when `run` finds a pass running and leaves it to that pass; a
            # wake that arrives during a pass sets it again: one more pass afterwards.
            self._asked.clear()
            self.run()


__all__ = ["Waker"]
