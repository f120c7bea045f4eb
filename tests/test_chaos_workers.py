"""Crashes: real `drip worker` processes are killed with SIGKILL at random moments, many times,
during a large dispatch against the provider sandbox (its own process, so it keeps what it got),
and restarted. Afterwards every message reached its patient exactly once, or — when its fate was
truly unknown at a kill — was settled by the provider's callback, by asking Twilio, or is listed
for staff review. Never lost silently, never resent blindly.

The workers run with a 6-second claim lease (instead of 5 minutes) so that recovery happens while
they are still being killed; the last pass runs in-process with a clock ahead of the real one.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from patient_drip import db
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
    record_figures,
    settle_in_virtual_time,
    write_chaos_campaign,
)
from support.crash_burst import run_crash_burst
from support.live import LiveApp, free_port
from support.builders import add_contact, make_settings, midday_zone
from support.databases import POSTGRES_REACHABLE, make_postgres_database
from patient_drip.models import Enrollment, EnrollmentStatus, Event, Message, MessageStatus
from patient_drip.runtime import build_runtime, utcnow

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CONTACTS = 100
WORKERS = 3
KILLS = 40  # the kills stop after this many, or when everything is sent
CHAOS_SECONDS = 50


@pytest.fixture
def pg_url():
    if not POSTGRES_REACHABLE:
        pytest.skip("PostgreSQL not reachable")
    yield from make_postgres_database()


def test_sigkilled_workers_never_send_twice_and_never_lose_a_message(pg_url, tmp_path):
    campaigns = write_chaos_campaign(tmp_path / "campaigns")
    app_port = free_port()
    public_url = f"http://127.0.0.1:{app_port}"
    box = SandboxProcess(
        tmp_path, callback_delay_ms=20,
        sendgrid_event_url=f"{public_url}/webhooks/sendgrid/events",
        twilio_inbound_url=f"{public_url}/webhooks/twilio/sms",
    )
    # Each provider call takes a little while, so kills land in the middle of calls too.
    box.faults({"latency_ms": {"twilio": 40, "sendgrid": 40}})
    settings = make_settings(
        pg_url, delivery="providers", public_url=public_url, secret_key="chaos-secret-key-for-links",
        twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_base_url=box.url, sendgrid_api_key=SENDGRID_KEY, from_email="Riverside Wellness <care@clinic.test>",
        sendgrid_base_url=box.url, sendgrid_webhook_public_key=box.public_key, campaigns_dir=campaigns,
        sms_rate_per_second=1000, email_rate_per_second=1000, provider_timeout_seconds=2,
    )
    db.upgrade(pg_url)
    rt = build_runtime(settings)
    pool = WorkerPool(
        provider_env(pg_url, public_url, box.url, box.public_key, campaigns,
                     DRIP_BATCH_SIZE="10", DRIP_WORKER_CONCURRENCY="4",
                     DRIP_TEST_LEASE_SECONDS="6", DRIP_TEST_RECONCILE_WAIT_SECONDS="2",
                     DRIP_TEST_SMS_LIST_GRACE_SECONDS="3", DRIP_TEST_RECONCILE_SECONDS="2"),
        tmp_path, size=WORKERS, rng=random.Random(20260302),
    )
    rng = random.Random(1)
    try:
        with LiveApp(rt, utcnow):  # our webhooks, so the sandbox's callbacks settle messages
            now = utcnow()
            for index in range(CONTACTS):
                add_contact(rt, now, email=f"chaos{index}@example.com", phone=f"+1312555{1000 + index}",
                            first_name="Pat", campaign="chaos", timezone=midday_zone(now))
            expected = CONTACTS * CHAOS_STEPS

            pool.start()
            deadline = time.monotonic() + CHAOS_SECONDS
            sent_during_chaos = 0
            started = time.monotonic()
            while time.monotonic() < deadline and pool.kills < KILLS:
                time.sleep(rng.uniform(0.2, 1.0))
                pool.kill_one(min_age=rng.uniform(0.3, 2.5))
                with rt.sessions() as session:
                    sent_during_chaos = session.scalar(select(func.count()).select_from(Message).where(
                        Message.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]))) or 0
                if sent_during_chaos >= expected:
                    break
            chaos_seconds = time.monotonic() - started
            crashed = pool.crashed()
            # Let the survivors finish what is recoverable in real time, then stop them cleanly.
            wait_until = time.monotonic() + 15
            while time.monotonic() < wait_until:
                with rt.sessions() as session:
                    active = session.scalar(select(func.count()).select_from(Enrollment).where(
                        Enrollment.status == EnrollmentStatus.ACTIVE))
                if not active:
                    break
                time.sleep(0.5)
            recovery_seconds = time.monotonic() - started - chaos_seconds
            with rt.sessions() as session:
                sent_live = session.scalar(select(func.count()).select_from(Message).where(
                    Message.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]))) or 0
            pool.stop()
            box.wait_for_callbacks()

            # Leases and reconciliation waits in virtual time, then a last look for callbacks.
            final = settle_in_virtual_time(rt, utcnow() + timedelta(minutes=10), between=box.wait_for_callbacks)
            box.wait_for_callbacks()
            time.sleep(0.3)

        records = box.messages()
        audit = audit_sandbox(records)
        with rt.sessions() as session:
            messages = list(session.scalars(select(Message)))
            statuses = Counter(str(m.status) for m in messages)
            enrollments = Counter(str(s) for s in session.scalars(select(Enrollment.status)))
            events = Counter(session.scalars(select(Event.kind).where(Event.kind.in_(
                ["message_unknown", "message_reconciled", "message_needs_review"]))))
            reconciled_found = session.scalar(select(func.count()).select_from(Event).where(
                Event.kind == "message_reconciled", Event.detail["found"].as_boolean().is_(True)))
        by_id = {m.id: m for m in messages}
        received_ids = Counter(drip_message_id(r) for r in records)

        figures = {
            "contacts": CONTACTS, "messages_expected": expected, "workers": WORKERS, "sigkills": pool.kills,
            "worker_starts": pool.starts, "received_by_sandbox": audit.received,
            "chaos_seconds": round(chaos_seconds, 1), "sent_during_chaos": sent_during_chaos,
            "live_recovery_seconds": round(recovery_seconds, 1), "sent_by_live_workers": sent_live,
            "duplicates": len(audit.duplicates_by_id) + len(audit.duplicates_by_content),
            "statuses": dict(statuses), "unknown_after_kill": events["message_unknown"],
            "reconciled": events["message_reconciled"], "reconciled_found_at_twilio": reconciled_found,
            "needs_review": statuses.get("needs_review", 0), "final_pass": final,
        }
        record_figures("chaos_workers", figures)
        print("chaos figures:", json.dumps(figures, default=str))

        assert pool.kills >= KILLS // 2, f"only {pool.kills} kills: the dispatch ended too soon to test anything"
        assert crashed == [], f"workers exited by themselves: {crashed}\n{pool.logs()[-5000:]}"
        # Zero duplicates: no send record reached the provider twice, no patient read a step twice.
        assert audit.duplicates_by_id == {} and audit.duplicates_by_content == {}
        assert audit.unknown_ids == []
        # Every step of every contact has exactly one send record (the unique key), and every
        # sequence ran to its end.
        assert len(messages) == expected
        assert enrollments == {"completed": CONTACTS}
        # Nothing lost: each record was delivered, or is in front of staff as "needs review".
        assert set(statuses) <= {"sent", "delivered", "needs_review"}, statuses
        for message in messages:
            if message.status in (MessageStatus.SENT, MessageStatus.DELIVERED):
                assert received_ids[message.id] == 1, f"message {message.id} is {message.status} but not received"
            else:
                assert message.channel == "email", "an SMS of unknown fate must be settled by asking Twilio"
                assert "needs review" in (message.last_error or "")
        # Whatever the sandbox received is recorded as sent (or, for email, flagged for review).
        for message_id in received_ids:
            assert by_id[message_id].status in (MessageStatus.SENT, MessageStatus.DELIVERED,
                                                MessageStatus.NEEDS_REVIEW)
    finally:
        pool.stop()
        box.stop()
        rt.close()


# -- SIGKILL during a burst: what a kill leaves in doubt ---------------------------------------------

BURST_CONTACTS = 60  # 480 messages; bench/run.py phase 6 runs the full 3,000
BURST_CONCURRENCY = 4


def test_six_sigkills_during_a_burst_leave_at_most_the_concurrency_in_doubt(pg_url, tmp_path):
    figures = run_crash_burst(pg_url, tmp_path, contacts=BURST_CONTACTS, kills=6, latency_ms=20,
                              concurrency=BURST_CONCURRENCY, workers=3, batch_size=200)
    record_figures("crash_burst", figures.as_dict())
    print("crash burst figures:", json.dumps(figures.as_dict()))
    assert figures.kills == 6, figures
    # Each kill landed mid-pass, and only what the victim had handed to the provider is in doubt:
    # never more than its concurrency. Everything else it held is sure never to have left.
    assert len(figures.in_doubt_per_kill) == 6
    assert max(figures.in_doubt_per_kill) <= BURST_CONCURRENCY, figures.in_doubt_per_kill
    # Nothing sent twice, nothing lost: every step of every contact reached the provider once.
    assert figures.duplicates == 0, figures
    assert figures.undelivered == 0, figures
    assert figures.enrollments == {"completed": BURST_CONTACTS}, figures
