"""APScheduler wiring: a few interval jobs drive dispatch, reconciliation and housekeeping (public
requests left unprocessed by a stopped process).

The schedule itself lives in our tables (SPEC decision 1); these jobs only tick. The job store is
in memory, so any number of processes can run this against one PostgreSQL database.

Speed to lead (issue 15): the dispatch job's passes also run when work becomes due now -- a commit
in this process that called `due_now.mark_due` and, on PostgreSQL, a NOTIFY from any process
(`dispatch.listener`) -- through one `dispatch.wake.Waker`, so passes never overlap and a burst
coalesces. The interval tick stays as the safety net.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, EVENT_SCHEDULER_START, SchedulerEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy.exc import OperationalError

from patient_drip import due_now
from patient_drip.contacts.intake import process_leftovers
from patient_drip.dispatch.listener import DueListener
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.dispatch.wake import Waker
from patient_drip.runtime import Runtime, utcnow

log = logging.getLogger("drip.scheduler")

INTAKE_BUCKETS_SECONDS = 600  # forget the public form's recovered limit rows
RECONCILE_SECONDS = 60


def guarded(name: str, tick: Callable[[], None]) -> Callable[[], None]:
    """`tick`, never raising: the next tick simply tries again.

    A database that is restarting, unreachable or (SQLite) busy past its timeout is expected
    weather: one warning line. Anything else is a bug: logged with its stack, but without the
    exception's text -- SQLAlchemy and the drivers put statement parameters and row values
    (addresses, names, message bodies) into it, and logs must not carry patient data.
    """

    def run() -> None:
        try:
            tick()
        except OperationalError as exc:
            cause = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
            log.warning("%s tick: database unavailable (%s); the next tick tries again", name, cause)
        except Exception as exc:  # noqa: BLE001 - a worker must outlive any one failed tick
            stack = "".join(traceback.format_tb(exc.__traceback__))
            log.error("%s tick failed with %s; the next tick tries again\n%s", name, type(exc).__name__, stack)

    run.__name__ = run.__qualname__ = f"{name}_tick"  # the job's name in APScheduler's own log lines
    return run


def add_jobs(scheduler: BaseScheduler, rt: Runtime, worker_id: str) -> Dispatcher:
    dispatcher = Dispatcher(rt, worker_id)

    def dispatch_pass() -> None:
        summary = dispatcher.run_once(utcnow())
        if summary.claimed:
            log.info("dispatch: %s", summary.line())

    waker = Waker(guarded("dispatch", dispatch_pass))

    def dispatch_tick() -> None:
        waker.run()  # a pass now, or one more after the pass a wake is running

    dispatch_tick.__qualname__ = "dispatch_tick"  # the job's name in APScheduler's own log lines

    def reconcile_tick() -> None:
        from patient_drip.dispatch.reconcile import reconcile_unknown

        resolved = reconcile_unknown(rt, utcnow())
        if resolved:
            log.info("reconcile: %s", resolved)

    def intake_buckets_tick() -> None:
        from patient_drip.contacts.intake_limits import forget_expired

        with rt.sessions() as session, session.begin():
            forget_expired(session, utcnow())

    def intake_tick() -> None:
        # Public requests whose process stopped between its answer and the work (contacts.intake).
        picked = process_leftovers(rt, utcnow())
        if picked:
            log.info("intake: %s request(s) left over were processed", picked)

    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(dispatch_tick, "interval", seconds=rt.settings.dispatch_interval_seconds, id="dispatch",
                      next_run_time=utcnow(), **common)
    scheduler.add_job(guarded("reconcile", reconcile_tick), "interval", seconds=RECONCILE_SECONDS, id="reconcile", **common)
    scheduler.add_job(guarded("intake-buckets", intake_buckets_tick), "interval", seconds=INTAKE_BUCKETS_SECONDS,
                      id="intake-buckets", **common)
    scheduler.add_job(guarded("intake", intake_tick), "interval", seconds=RECONCILE_SECONDS, id="intake", **common)
    wire_wakes(scheduler, rt, waker)
    return dispatcher


def wire_wakes(scheduler: BaseScheduler, rt: Runtime, waker: Waker) -> None:
    """Wake `waker` while `scheduler` runs: after this process's commits that made work due now,
    and (PostgreSQL) on notifications from other processes. Started and stopped with the scheduler,
    so `drip serve` and `drip worker` need nothing more."""
    listener = DueListener(rt.engine, waker.wake) if rt.engine.dialect.name == "postgresql" else None
    removers: list[Callable[[], None]] = []

    def started(_event: SchedulerEvent) -> None:
        waker.start()
        removers.append(due_now.on_commit(rt.sessions, waker.wake))
        if listener is not None:
            listener.start()

    def stopped(_event: SchedulerEvent) -> None:
        while removers:
            removers.pop()()
        if listener is not None:
            listener.stop()
        waker.stop()  # after the scheduler's own jobs: waits for a pass the wake thread is running

    scheduler.add_listener(started, EVENT_SCHEDULER_START)
    scheduler.add_listener(stopped, EVENT_SCHEDULER_SHUTDOWN)


def start_background(rt: Runtime, worker_id: str) -> BackgroundScheduler:
    """For `drip serve`: ticks in a background thread beside the web server."""
    scheduler = BackgroundScheduler(timezone="UTC")
    add_jobs(scheduler, rt, worker_id)
    scheduler.start()
    return scheduler


def run_blocking(rt: Runtime, worker_id: str, announce: Callable[[], None] | None = None) -> None:
    """For `drip worker`: runs until SIGTERM/SIGINT, finishing the sends in flight first. `announce`
    (the start-up line) runs once the signals are ours: a supervisor or a test that stops the worker
    as soon as it has said it runs gets a clean stop, never the default death by SIGTERM."""
    scheduler = BlockingScheduler(timezone="UTC")
    dispatcher = add_jobs(scheduler, rt, worker_id)
    stopping = threading.Event()

    def shutdown_once_running() -> None:
        deadline = time.monotonic() + 30
        while not scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)  # a signal between the handlers and `start`: stop right after it starts
        if scheduler.running:
            scheduler.shutdown(wait=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing in-flight sends, then stopping", signum)
        stopping.set()
        dispatcher.stop_requested.set()  # return after the sends in flight, not after the whole queue
        threading.Thread(target=shutdown_once_running, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if announce is not None:
        announce()
    if not stopping.is_set():
        scheduler.start()
