"""Database trouble: PostgreSQL restarted in the middle of a dispatch by real worker processes, and
SQLite held locked by another process for longer than its busy timeout.

Workers reconnect and carry on; nothing is lost or sent twice; the web app answers 503 (with
Retry-After) while the database is away instead of crashing or half-storing a request.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

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
from support.live import LiveApp, free_port
from support.builders import add_contact, make_settings, midday_zone
from support.databases import POSTGRES_REACHABLE
from patient_drip.models import Contact, Enrollment, Message, MessageStatus
from patient_drip.runtime import build_runtime, utcnow

CONTACTS = 60


def _pg_version() -> str:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        pytest.skip("no local PostgreSQL cluster to restart")
    return versions[-1]


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False).returncode == 0


def _ensure_pg_running(version: str) -> None:
    if not _pg_ready():
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
    for _ in range(60):
        if _pg_ready():
            return
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back")


class FreshDatabase:
    """A new PostgreSQL database, dropped afterwards, through an engine that survives a restart
    (pool_pre_ping), unlike conftest's, whose pooled connection the restart kills."""

    def __init__(self) -> None:
        from support.databases import POSTGRES_ADMIN_URL

        self.name = f"drip_test_{uuid.uuid4().hex[:12]}"
        self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{self.name}"

    def drop(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"))
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


def _steady(count, quiet_seconds: float, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Wait until `count()` stops changing for `quiet_seconds` (or `timeout`)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            value = count()
        except Exception:  # the database may still be coming back
            value = last
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet_seconds:
            return
        time.sleep(0.25)


def sent_count(rt) -> int:  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return session.scalar(select(func.count()).select_from(Message).where(
            Message.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]))) or 0


def _wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # the database may be restarting under us
            pass
        time.sleep(interval)
    return False


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.exclusive  # restarts the shared PostgreSQL server: `make test` runs it after the parallel part, alone
def test_postgres_restart_mid_dispatch_workers_reconnect_and_nothing_is_lost_or_doubled(tmp_path):
    if not POSTGRES_REACHABLE:
        pytest.skip("PostgreSQL not reachable")
    version = _pg_version()
    database = FreshDatabase()
    pg_url = database.url
    campaigns = write_chaos_campaign(tmp_path / "campaigns")
    app_port = free_port()
    public_url = f"http://127.0.0.1:{app_port}"
    box = SandboxProcess(tmp_path, callback_delay_ms=20, sendgrid_event_url=f"{public_url}/webhooks/sendgrid/events")
    box.faults({"latency_ms": {"twilio": 20, "sendgrid": 20}})
    settings = make_settings(
        pg_url, delivery="providers", public_url=public_url, secret_key="chaos-secret-key-for-links",
        twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN, twilio_from_number=FROM_NUMBER,
        twilio_base_url=box.url, sendgrid_api_key=SENDGRID_KEY, from_email="Riverside Wellness <care@clinic.test>",
        sendgrid_base_url=box.url, sendgrid_webhook_public_key=box.public_key, campaigns_dir=campaigns,
        sms_rate_per_second=1000, email_rate_per_second=1000, provider_timeout_seconds=2,
    )
    db.upgrade(pg_url)
    rt = build_runtime(settings)
    pool = WorkerPool(provider_env(pg_url, public_url, box.url, box.public_key, campaigns,
                                   DRIP_BATCH_SIZE="10", DRIP_WORKER_CONCURRENCY="4",
                                   DRIP_TEST_LEASE_SECONDS="6", DRIP_TEST_RECONCILE_WAIT_SECONDS="2",
                                   DRIP_TEST_SMS_LIST_GRACE_SECONDS="3", DRIP_TEST_RECONCILE_SECONDS="2"),
                      tmp_path, size=2)
    restarted_at = 0
    try:
        with LiveApp(rt, utcnow):
            now = utcnow()
            for index in range(CONTACTS):
                add_contact(rt, now, email=f"pg{index}@example.com", phone=f"+1312555{4000 + index}",
                            first_name="Pat", campaign="chaos", timezone=midday_zone(now))
            expected = CONTACTS * CHAOS_STEPS
            pool.start()
            # A worker that cannot reach the database while starting up exits (its supervisor
            # restarts it): restart PostgreSQL only once all three are running.
            pool.wait_started(90)
            assert _wait_for(lambda: sent_count(rt) >= expected // 5, 90), "workers did not start sending"
            restarted_at = sent_count(rt)
            started = time.monotonic()
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                           check=True, capture_output=True, timeout=120)
            restart_seconds = time.monotonic() - started
            _ensure_pg_running(version)
            # They carry on by themselves: no restart of the workers, no help from the test.
            _steady(lambda: sent_count(rt), quiet_seconds=4, timeout=45)
            sent_after_restart_by_workers = sent_count(rt) - restarted_at
            crashed = pool.crashed()
            pool.stop()
            box.wait_for_callbacks()
            final = settle_in_virtual_time(rt, utcnow() + timedelta(minutes=10), between=box.wait_for_callbacks)
            box.wait_for_callbacks()
            time.sleep(0.3)

        records = box.messages()
        audit = audit_sandbox(records)
        received = Counter(drip_message_id(r) for r in records)
        with rt.sessions() as session:
            messages = list(session.scalars(select(Message)))
            enrollments = Counter(str(s) for s in session.scalars(select(Enrollment.status)))
        statuses = Counter(str(m.status) for m in messages)
        record_figures("postgres_restart", {
            "messages": expected, "sent_before_restart": restarted_at, "restart_seconds": round(restart_seconds, 1),
            "sent_by_workers_after_restart": sent_after_restart_by_workers, "statuses": dict(statuses),
            "duplicates": len(audit.duplicates_by_id) + len(audit.duplicates_by_content), "final_pass": final,
        })
        assert crashed == [], f"a worker died with the database restart:\n{pool.logs()[-4000:]}"
        assert sent_after_restart_by_workers > 0
        assert audit.duplicates_by_id == {} and audit.duplicates_by_content == {}
        assert len(messages) == expected and enrollments == {"completed": CONTACTS}
        assert set(statuses) <= {"sent", "delivered", "needs_review"}, statuses
        for message in messages:
            if message.status != MessageStatus.NEEDS_REVIEW:
                assert received[message.id] == 1
        # A restart is not a crash of ours: at most the handful of sends whose outcome could not be
        # written while the database was down end in staff review.
        assert statuses.get("needs_review", 0) <= 2 * 10 * 2, statuses
    finally:
        pool.stop()
        box.stop()
        rt.close()
        _ensure_pg_running(version)
        database.drop()


# -- SQLite busy -----------------------------------------------------------------------------------------


class Locker:
    """Another process's write transaction on the SQLite file, held for `seconds`."""

    def __init__(self, path: str, seconds: float) -> None:
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 5})
        self.seconds = seconds
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = self.engine.raw_connection()
        try:
            connection.isolation_level = None
            connection.execute("BEGIN EXCLUSIVE")
            self.locked.set()
            time.sleep(self.seconds)
            connection.execute("COMMIT")
        finally:
            connection.close()
            self.engine.dispose()

    def __enter__(self) -> Locker:
        self.thread.start()
        assert self.locked.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=self.seconds + 5)


def test_sqlite_locked_briefly_the_dispatcher_waits_its_turn(sqlite_url, clock):
    settings = make_settings(sqlite_url)
    db.upgrade(sqlite_url)
    rt = build_runtime(settings)
    try:
        for index in range(5):
            add_contact(rt, clock.now, email=f"busy{index}@example.com", phone=f"+1312555{5000 + index}")
        from patient_drip.dispatch.pipeline import Dispatcher

        with Locker(sqlite_url.removeprefix("sqlite:///"), 1.0):
            summary = Dispatcher(rt, "w").run_once(clock.now)
        assert summary.outcomes["sent"] == 10
    finally:
        rt.close()


def test_sqlite_busy_longer_than_the_timeout_is_retried_by_the_next_tick_not_a_crash(sqlite_url, tmp_path,
                                                                                     monkeypatch, caplog):
    from apscheduler.schedulers.background import BackgroundScheduler

    from patient_drip import scheduler

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    # Real time here (the scheduler's ticks): a campaign that may send at any hour.
    settings = make_settings(sqlite_url, dispatch_interval_seconds=0.2,
                             campaigns_dir=write_chaos_campaign(tmp_path / "campaigns"))
    db.upgrade(sqlite_url)
    rt = build_runtime(settings)
    for index in range(5):
        add_contact(rt, utcnow(), email=f"busy{index}@example.com", phone=f"+1312555{5100 + index}",
                    campaign="chaos", timezone=midday_zone(utcnow()))
    background = BackgroundScheduler(timezone="UTC")
    try:
        with caplog.at_level(logging.WARNING), Locker(sqlite_url.removeprefix("sqlite:///"), 1.5):
            scheduler.add_jobs(background, rt, "tick-worker")
            background.start()
            time.sleep(1.0)
            assert background.running
        assert _wait_for(lambda: sent_count(rt) == 5 * CHAOS_STEPS, 30)
        busy = [r for r in caplog.records if r.name == "drip.scheduler" and "database" in r.getMessage()]
        assert busy, "the failed ticks should say why"
        assert not any(r.exc_info for r in caplog.records if r.name.startswith("apscheduler"))
    finally:
        background.shutdown(wait=True)
        rt.close()
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 5 * CHAOS_STEPS


def test_web_answers_503_while_sqlite_is_locked_and_stores_nothing_half_way(sqlite_url, clock, monkeypatch):
    from patient_drip.web.app import create_app

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    settings = make_settings(sqlite_url)
    db.upgrade(sqlite_url)
    rt = build_runtime(settings)
    try:
        with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as client:
            with Locker(sqlite_url.removeprefix("sqlite:///"), 1.5):
                response = client.post("/api/consultations", json={
                    "first_name": "Dana", "email": "dana@example.com", "consent_email": True})
            assert response.status_code == 503, response.text
            assert response.headers.get("retry-after")
            assert "try again" in response.json()["error"].lower()
            with rt.sessions() as session:
                assert session.scalar(select(func.count()).select_from(Contact)) == 0
            again = client.post("/api/consultations", json={
                "first_name": "Dana", "email": "dana@example.com", "consent_email": True})
            assert again.status_code == 202
    finally:
        rt.close()
