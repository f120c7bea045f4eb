"""`drip worker --processes N`: N dispatcher processes under one supervisor, so one machine uses all
its cores (one Python process runs on one core at a time: the interpreter lock).

Each child is a complete `drip worker --processes 1` — its own interpreter, worker id (host and
pid), `Runtime` and database connections — started as a new process, never forked from this one
(a forked database connection or lock is shared by accident). The children share the work through
the database exactly as workers on several machines do (claims with FOR UPDATE SKIP LOCKED), so
the supervisor holds no queue and no database connection of its own.

What the supervisor does, and nothing else:
- start N children, each in its own process group (a Ctrl-C at the terminal reaches the supervisor
  alone, which passes it on once: a child never sees a stop twice);
- on SIGTERM or SIGINT, pass SIGTERM to every child (each finishes its sends in flight, then exits:
  `scheduler.run_blocking`) and exit when all have; a second signal is passed on again;
- restart a child that exits when it was not asked to, after a backoff that doubles from
  `RESTART_DELAY` to `MAX_RESTART_DELAY` (and starts over once a child has run `STEADY_SECONDS`):
  a child that dies at once (a database that is away, say) does not spin;
- children stop by themselves when the supervisor is gone (SIGKILLed): each watches its parent
  (`watch_parent`), so no orphan keeps sending unsupervised.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger("drip.supervisor")

RESTART_DELAY = 1.0  # seconds before the first restart of a child that died
MAX_RESTART_DELAY = 60.0
STEADY_SECONDS = 60.0  # a child that ran this long before dying is restarted after RESTART_DELAY again
POLL_SECONDS = 0.2  # how often children are looked at (a signal wakes the loop at once)
PARENT_ENV = "DRIP_SUPERVISOR_PID"  # set in each child: the pid whose end stops it

# A child: this interpreter running the CLI (not `drip` on PATH: the same installation for sure).
CHILD_COMMAND = (sys.executable, "-c", "from patient_drip.cli import main; main()", "worker", "--processes", "1")


@dataclass
class Child:
    """One dispatcher process slot: restarted in place when its process dies."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    restart_at: float | None = None  # when a died child is started again
    starts: int = 0


@dataclass
class Supervisor:
    """Runs `count` children of `command` until told to stop (`run`)."""

    count: int
    command: Sequence[str] = CHILD_COMMAND
    env: dict[str, str] | None = None
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    _wake: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        """Start the children, supervise them, return 0 once a signal stopped them all."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.children = [Child(index) for index in range(self.count)]
            for child in self.children:
                self._start(child)
            while not self.stopping or any(c.process is not None and c.process.poll() is None for c in self.children):
                self._look_after(time.monotonic())
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()
            log.info("all %s dispatcher processes stopped", self.count)
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Ask every child to finish its sends in flight and exit; `run` returns when they have."""
        self.stopping = True
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        self._wake.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping %s dispatcher processes after their sends in flight", signum, self.count)
        self.stop()

    def _start(self, child: Child) -> None:
        env = dict(self.env if self.env is not None else os.environ)
        env[PARENT_ENV] = str(os.getpid())
        # Own process group: a terminal's Ctrl-C goes to the supervisor only, which passes it on once.
        child.process = subprocess.Popen(list(self.command), env=env, process_group=0)
        child.started = time.monotonic()
        child.restart_at = None
        child.starts += 1
        log.info("dispatcher process %s started (pid %s)", child.index + 1, child.process.pid)

    def _look_after(self, now: float) -> None:
        for child in self.children:
            process = child.process
            if self.stopping or process is None:
                continue
            code = process.poll()
            if code is None:
                continue
            if child.restart_at is None:
                lived = now - child.started
                if lived >= STEADY_SECONDS:
                    child.delay = RESTART_DELAY
                how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                log.warning("dispatcher process %s (pid %s) %s after %.0f s; restarting it in %.0f s",
                            child.index + 1, process.pid, how, lived, child.delay)
                child.restart_at = now + child.delay
                child.delay = min(MAX_RESTART_DELAY, child.delay * 2)
            elif now >= child.restart_at:
                self._start(child)


def watch_parent(interval: float = 1.0) -> None:
    """In a child of the supervisor (`PARENT_ENV` set): SIGTERM ourselves — the graceful stop —
    when the supervisor is gone, so a SIGKILLed supervisor leaves no worker running unsupervised."""
    expected = os.environ.get(PARENT_ENV)
    if not expected or not expected.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(interval)
        log.warning("the supervisor (pid %s) is gone; stopping after the sends in flight", expected)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="drip-parent-watch", daemon=True).start()
