"""SIGKILL during a burst: real `drip worker` processes deliver a burst of messages to the provider
sandbox (its own process, answering after a set latency) and are killed with SIGKILL several times,
each time while they hold sends in flight. Shared by the chaos test (a small burst) and
`bench/run.py` phase 6 (3,000 messages); what it returns is counts — the test asserts on those,
the bench also prints the timings.

For each kill it counts, the moment the worker is dead, the victim's send records that are still
`sending`: handed to the provider (`handed_at` set — in doubt) and not handed (sure never to have
left, sent again once the lease runs out). At the end: duplicates at the sandbox, sends reconciled
or put in review, and messages never delivered — after staff settled the review queue the way a
person with the provider's activity log would (received → "mark as sent", not received → "send
again").
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from support.builders import add_contact, make_settings, midday_zone
from support.chaos import (
    CHAOS_STEPS,
    FROM_NUMBER,
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    SandboxProcess,
    WorkerPool,
    audit_sandbox,
    drip_message_id,
    provider_env,
    settle_in_virtual_time,
    write_chaos_campaign,
)
from support.live import LiveApp, free_port


@dataclass
class BurstFigures:
    """What one burst gave. `in_doubt_per_kill[i]` is the victim's handed-but-unrecorded sends at
    kill i; `not_handed_per_kill[i]` what it had claimed and written but not handed (safe)."""

    messages: int
    workers: int
    concurrency: int
    latency_ms: int
    kills: int = 0
    in_doubt_per_kill: list[int] = field(default_factory=list)
    not_handed_per_kill: list[int] = field(default_factory=list)
    received_by_provider: int = 0
    duplicates: int = 0
    requeued: int = 0  # stalled sends never handed: sent again
    unknown: int = 0  # stalled sends that had been handed: reconciled (callback, Twilio) or reviewed
    unknown_timeouts: int = 0  # provider calls that timed out after the request left (not a kill)
    needs_review: int = 0  # in front of staff before they settled them
    review_marked_sent: int = 0
    review_sent_again: int = 0
    undelivered_before_review: int = 0
    undelivered: int = 0  # never received by the provider, after staff settled the queue
    enrollments: dict[str, int] = field(default_factory=dict)
    burst_seconds: float = 0.0  # from the workers' start until the last message sent in real time
    sent_in_burst: int = 0  # sent by then (the rest waited on reconciliation, run in virtual time)
    total_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worker_id(pid: int) -> str:
    return f"worker:{socket.gethostname()}:{pid}"  # as `drip worker` names itself (cli._worker_id)


def run_crash_burst(pg_url: str, work_dir: Path, *, contacts: int, kills: int, latency_ms: int = 20,
                    concurrency: int = 8, workers: int = 3, batch_size: int = 200, seed: int = 11,
                    timeout: float = 600.0) -> BurstFigures:
    """Deliver `contacts` × 8 messages with `workers` worker processes, SIGKILLing one `kills` times
    while it holds sends in flight; then recover, settle the review queue, and count."""
    from patient_drip import db
    from patient_drip.dispatch.reconcile import ReviewAction, settle_by_staff
    from patient_drip.models import Enrollment, Event, Message, MessageStatus
    from patient_drip.runtime import build_runtime, utcnow

    started = time.monotonic()
    campaigns = write_chaos_campaign(work_dir / "campaigns")
    public_url = f"http://127.0.0.1:{free_port()}"
    box = SandboxProcess(work_dir, callback_delay_ms=20, sendgrid_event_url=f"{public_url}/webhooks/sendgrid/events",
                         twilio_inbound_url=f"{public_url}/webhooks/twilio/sms")
    box.faults({"latency_ms": {"twilio": latency_ms, "sendgrid": latency_ms}})
    settings = make_settings(
        pg_url, delivery="providers", public_url=public_url, secret_key="chaos-secret-key-for-links",
        twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_base_url=box.url, sendgrid_api_key=SENDGRID_KEY, from_email="Riverside Wellness <care@clinic.test>",
        sendgrid_base_url=box.url, sendgrid_webhook_public_key=box.public_key, campaigns_dir=campaigns,
        sms_rate_per_second=100_000, email_rate_per_second=100_000, provider_timeout_seconds=5,
    )
    db.upgrade(pg_url)
    rt = build_runtime(settings)
    pool = WorkerPool(
        provider_env(pg_url, public_url, box.url, box.public_key, campaigns,
                     DRIP_BATCH_SIZE=str(batch_size), DRIP_WORKER_CONCURRENCY=str(concurrency),
                     DRIP_SMS_RATE="100000", DRIP_EMAIL_RATE="100000", DRIP_PROVIDER_TIMEOUT="5",
                     DRIP_TEST_LEASE_SECONDS="6", DRIP_TEST_RECONCILE_WAIT_SECONDS="2",
                     DRIP_TEST_SMS_LIST_GRACE_SECONDS="3", DRIP_TEST_RECONCILE_SECONDS="2", DRIP_LOG_LEVEL="WARNING"),
        work_dir, size=workers, rng=random.Random(seed),
    )
    expected = contacts * CHAOS_STEPS
    figures = BurstFigures(messages=expected, workers=workers, concurrency=concurrency, latency_ms=latency_ms)

    def count(*where: Any) -> int:
        with rt.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Message).where(*where)) or 0)

    def sent() -> int:
        return count(Message.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]))

    try:
        with LiveApp(rt, utcnow):  # our webhooks: the sandbox's callbacks settle sends
            now = utcnow()
            for index in range(contacts):
                # a zone where it is midday now: the texting law's quiet hours must not hold the burst at night
                add_contact(rt, now, email=f"burst{index}@example.com", phone=f"+1312{5550000 + index:07d}",
                            first_name="Pat", campaign="chaos", timezone=midday_zone(now))
            pool.start()
            pool.wait_started(120)
            burst_started = time.monotonic()
            deadline = burst_started + timeout
            # Kill at evenly spaced points of the burst, each time a worker that has sends in flight.
            for kill in range(kills):
                mark = expected * (kill + 1) // (kills + 2)
                while sent() < mark and time.monotonic() < deadline:
                    time.sleep(0.02)
                victim = _busy_worker(rt, pool, deadline)
                if victim is None:
                    break
                pool.kill_process(victim)
                wid = _worker_id(victim.process.pid)
                figures.in_doubt_per_kill.append(count(Message.worker_id == wid, Message.status == MessageStatus.SENDING,
                                                       Message.handed_at.is_not(None)))
                figures.not_handed_per_kill.append(count(Message.worker_id == wid,
                                                         Message.status == MessageStatus.SENDING,
                                                         Message.handed_at.is_(None)))
            figures.kills = pool.kills
            # The survivors finish in real time (the victims' claims fall due after the 6 s lease),
            # until nothing more is sent for 8 s: what is left waits on reconciliation's longer waits.
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - last_change < 8:
                current = sent()
                if current != last:
                    last, last_change = current, time.monotonic()
                if current >= expected:
                    break
                time.sleep(0.2)
            figures.burst_seconds = round(last_change - burst_started, 1)
            figures.sent_in_burst = last
            pool.stop()
            box.wait_for_callbacks(60)
            # Reconciliation waits in virtual time (an email without any event goes to review after 30 min).
            settle_in_virtual_time(rt, utcnow() + timedelta(minutes=10), between=box.wait_for_callbacks)
            box.wait_for_callbacks(60)
            time.sleep(0.3)
            received = Counter(drip_message_id(r) for r in box.messages())
            with rt.sessions() as session:
                ids = set(session.scalars(select(Message.id)))
                review = list(session.scalars(select(Message.id).where(Message.status == MessageStatus.NEEDS_REVIEW)))
            figures.needs_review = len(review)
            figures.undelivered_before_review = expected - len(ids & set(received))
            # Staff settle the queue as the provider's activity log tells them.
            for message_id in review:
                action = ReviewAction.MARK_SENT if received[message_id] else ReviewAction.SEND_AGAIN
                with rt.sessions() as session, session.begin():
                    settle_by_staff(session, rt.campaigns, message_id, action, "user:chaos-staff", utcnow())
                if action == ReviewAction.MARK_SENT:
                    figures.review_marked_sent += 1
                else:
                    figures.review_sent_again += 1
            settle_in_virtual_time(rt, utcnow() + timedelta(hours=4), between=box.wait_for_callbacks)
            box.wait_for_callbacks(60)
        records = box.messages()
        audit = audit_sandbox(records)
        received = Counter(drip_message_id(r) for r in records)
        with rt.sessions() as session:
            ids = set(session.scalars(select(Message.id)))
            kinds = Counter(session.scalars(select(Event.kind).where(Event.kind == "message_requeued")))
            details = list(session.scalars(select(Event.detail).where(Event.kind == "message_unknown")))
            figures.enrollments = dict(Counter(str(s) for s in session.scalars(select(Enrollment.status))))
        figures.received_by_provider = audit.received
        figures.duplicates = len(audit.duplicates_by_id) + len(audit.duplicates_by_content) + len(audit.unknown_ids)
        figures.unknown = sum(1 for detail in details if "error" not in detail)
        figures.unknown_timeouts = len(details) - figures.unknown
        figures.requeued = kinds["message_requeued"]
        figures.undelivered = expected - len(ids & set(received))
        figures.total_seconds = round(time.monotonic() - started, 1)
        return figures
    finally:
        pool.stop()
        box.stop()
        rt.close()


def _busy_worker(rt: Any, pool: WorkerPool, deadline: float) -> Any:
    """A live worker with sends in flight right now (so the kill lands mid-pass), or None at the deadline."""
    from patient_drip.models import Message, MessageStatus

    while time.monotonic() < deadline:
        by_id = {_worker_id(w.process.pid): w for w in pool.workers if w.process.poll() is None}
        with rt.sessions() as session:
            busy = [wid for wid, in session.execute(select(Message.worker_id).where(
                Message.status == MessageStatus.SENDING, Message.worker_id.in_(list(by_id))).distinct())]
        if busy:
            return by_id[sorted(busy)[0]]
        time.sleep(0.01)
    return None


def main(argv: list[str] | None = None) -> int:
    """`python -m support.crash_burst POSTGRES_URL [--contacts N] [--kills K] …` (tests/ on
    PYTHONPATH): one burst against an empty PostgreSQL database, figures as one JSON line."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m support.crash_burst")
    parser.add_argument("url", help="an empty PostgreSQL database (postgresql+psycopg://…)")
    parser.add_argument("--contacts", type=int, default=375, help="each gets 8 messages (375 → 3,000)")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--latency-ms", type=int, default=20, help="the sandbox's answer time")
    parser.add_argument("--concurrency", type=int, default=8, help="DRIP_WORKER_CONCURRENCY of each worker")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drip-crash-burst-") as work_dir:
        figures = run_crash_burst(args.url, Path(work_dir), contacts=args.contacts, kills=args.kills,
                                  latency_ms=args.latency_ms, concurrency=args.concurrency, workers=args.workers)
    print(json.dumps(figures.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
