"""Phase 5: the design patient-drip does not use — one APScheduler job per message, kept in
APScheduler's `SQLAlchemyJobStore` — with N messages falling due at the same moment (think: a
marketing push enrolled N people, all due at 09:00).

The N jobs are written into the job store beforehand exactly as `scheduler.add_job` writes them
(a pickled job state per row; inserted in bulk only to keep the set-up short), with `add_job`'s
defaults: misfire_grace_time=1 s, coalesce=False, max_instances=1, the default 10-thread executor.
Each job sends one SMS through the Twilio SDK to the sandbox. We count what ran, and what
APScheduler skipped as "missed" — which it only logs as a warning.

Usage: naive_apscheduler.py JOBSTORE_URL SANDBOX_URL N  → prints one JSON object.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import time
from datetime import datetime, timedelta, timezone


from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED  # noqa: E402
from apscheduler.job import Job  # noqa: E402
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402
from apscheduler.triggers.date import DateTrigger  # noqa: E402
from apscheduler.util import datetime_to_utc_timestamp  # noqa: E402

from patient_drip.providers.twilio import TwilioSender  # noqa: E402
from patient_drip.providers.types import Channel, OutgoingMessage  # noqa: E402
from support import TWILIO_SID, TWILIO_TOKEN, phone_for  # noqa: E402

SENDER: TwilioSender | None = None


def send_one(index: int) -> None:
    """The job: one SMS (what a per-message job would do after loading and rendering it)."""
    assert SENDER is not None
    SENDER.send(OutgoingMessage(index, Channel.SMS, phone_for(index), f"Hello, message {index}. Reply STOP to opt out."))


def main() -> None:
    global SENDER
    url, sandbox_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    SENDER = TwilioSender(TWILIO_SID, TWILIO_TOKEN, from_number="+15005550006",
                          status_callback_base="http://127.0.0.1:9/webhooks/twilio/status", base_url=sandbox_url,
                          timeout=30)
    logging.basicConfig(level=logging.ERROR)  # APScheduler's "was missed by" warnings: thousands of lines
    store = SQLAlchemyJobStore(url=url)
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone=timezone.utc)
    # All N due a few seconds from now, once the scheduler is up and idle.
    due_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=6 + count // 20_000)
    setup_started = time.perf_counter()
    store.start(scheduler, "default")  # creates the table
    rows = []
    for index in range(count):
        job = Job(scheduler, id=f"message-{index}", func=send_one, args=(index,), kwargs={},
                  trigger=DateTrigger(due_at, timezone=timezone.utc), executor="default", name="send_one",
                  misfire_grace_time=1, coalesce=False, max_instances=1, next_run_time=due_at)
        rows.append({"id": job.id, "next_run_time": datetime_to_utc_timestamp(due_at),
                     "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol)})
        if len(rows) == 5000:
            with store.engine.begin() as connection:
                connection.execute(store.jobs_t.insert(), rows)
            rows = []
    if rows:
        with store.engine.begin() as connection:
            connection.execute(store.jobs_t.insert(), rows)
    setup_seconds = time.perf_counter() - setup_started

    lock = threading.Lock()
    counts = {"executed": 0, "missed": 0, "error": 0}
    last_executed = [0.0]
    done = threading.Event()

    def listener(event) -> None:  # type: ignore[no-untyped-def]
        with lock:
            if event.code == EVENT_JOB_EXECUTED:
                counts["executed"] += 1
                last_executed[0] = time.time()
            elif event.code == EVENT_JOB_MISSED:
                counts["missed"] += 1
            else:
                counts["error"] += 1
            if sum(counts.values()) >= count:
                done.set()

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    scheduler.start()
    done.wait(timeout=max(120.0, count / 100))
    finished = time.time()
    scheduler.shutdown(wait=True)
    due = due_at.timestamp()
    executed = counts["executed"]
    print(json.dumps({
        "jobs": count, "setup_seconds": setup_seconds, **counts,
        "drain_seconds": finished - due,
        "sent_per_second": executed / (last_executed[0] - due) if executed and last_executed[0] > due else 0.0,
        "complete": done.is_set(),
    }))


if __name__ == "__main__":
    main()
