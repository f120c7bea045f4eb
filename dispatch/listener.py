"""PostgreSQL LISTEN for work due now: wakes this process's dispatcher when another process commits
an enrollment that is due at once (`due_now`: the web process NOTIFYs inside its transaction).

One dedicated autocommit psycopg connection per process, outside SQLAlchemy's pool (a pooled
connection would be handed to other work, and a LISTEN belongs to its session). It:

- runs `LISTEN drip_due` and calls `wake` for every notification (the `Waker` coalesces them);
- wakes once after every (re)connect: a commit may have happened while it was not listening;
- checks the link every `IDLE_CHECK_SECONDS` without traffic (a silently dropped connection would
  otherwise never raise);
- when the connection is lost (PostgreSQL restarts, `pg_terminate_backend`, a network cut) logs one
  warning line for the outage -- the error's class only: driver messages can carry statement values --
  and reconnects with capped, jittered backoff. Meanwhile the interval tick still dispatches.

May import `due_now` and the SQLAlchemy engine it is given; nothing else of ours.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine

from patient_drip.due_now import listen_statement

log = logging.getLogger("drip.listener")

APPLICATION_NAME = "drip-listener"  # shows in pg_stat_activity: operators (and tests) can find it
CONNECT_TIMEOUT_SECONDS = 5
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
POLL_SECONDS = 1.0  # how often the thread looks up from waiting (to notice `stop`)
IDLE_CHECK_SECONDS = 30.0


def connect_arguments(engine: Engine) -> tuple[list[Any], dict[str, Any]]:
    """psycopg's connect arguments for the engine's URL (host, port, user, password, database and any
    query options such as sslmode), as SQLAlchemy's dialect derives them."""
    args, params = engine.dialect.create_connect_args(engine.url)
    return list(args), dict(params)


class DueListener:
    """A thread that LISTENs for `due_now.CHANNEL` on its own connection and calls `wake`."""

    def __init__(self, engine: Engine, wake: Callable[[], None], *, rng: random.Random | None = None) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
        self._args, self._params = connect_arguments(engine)
        self._wake = wake
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # set while LISTEN is in place (for tests and health)
        self.connects = 0  # successful (re)connections so far
        self.notifications = 0

    def start(self) -> DueListener:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drip-listener", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        in_outage = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(*self._args, **{**self._params, "autocommit": True,
                                                     "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                                                     "application_name": APPLICATION_NAME}) as connection:
                    connection.execute(listen_statement())
                    self.connects += 1
                    self.connected.set()
                    if in_outage:
                        log.info("listener: listening again; dispatch wakes on new requests")
                    in_outage, delay = False, BACKOFF_FIRST_SECONDS
                    self._wake()  # whatever was committed while nobody listened
                    self._listen(connection)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure; wakes are its only job
                self.connected.clear()
                if self._stopping.is_set():
                    return
                if not in_outage:  # one line per outage, not one per attempt
                    if isinstance(exc, psycopg.Error):
                        log.warning("listener: PostgreSQL connection lost (%s); reconnecting with backoff, "
                                    "the dispatch tick still runs meanwhile", type(exc).__name__)
                    else:  # a bug, not weather: say so louder, but keep trying like the ticks do
                        log.error("listener failed with %s; retrying with backoff, the dispatch tick still runs",
                                  type(exc).__name__)
                    in_outage = True
                self._stopping.wait(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        self.connected.clear()

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        idle = 0.0
        while not self._stopping.is_set():
            heard = False
            for _notification in connection.notifies(timeout=POLL_SECONDS):
                # At once, not when the poll ends: the waker coalesces a burst into one more pass.
                self.notifications += 1
                self._wake()
                heard = True
            if heard:
                idle = 0.0
                continue
            idle += POLL_SECONDS
            if idle >= IDLE_CHECK_SECONDS:
                connection.execute("SELECT 1")  # raises on a dead link, which `_run` reconnects
                idle = 0.0


__all__ = ["APPLICATION_NAME", "DueListener", "connect_arguments"]
