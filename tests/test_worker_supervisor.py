"""`drip worker --processes N`: one supervisor, N real dispatcher processes on PostgreSQL. They share
the queue (each message reaches the sandbox once, sent by several of them), SIGTERM stops them all
cleanly, a SIGKILLed child is started again, and SQLite runs one process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from patient_drip import db
from patient_drip.models import Enrollment, EnrollmentStatus, Message, MessageStatus
from patient_drip.runtime import build_runtime, utcnow
from support.builders import ROOT, add_contact, make_settings, midday_zone
from support.chaos import all_at_once_campaign, provider_env
from support.databases import POSTGRES_REACHABLE, make_postgres_database
from support.live import wait_until

pytestmark = [pytest.mark.slow]

CONTACTS = 24
STEPS = 8
CAMPAIGN = all_at_once_campaign("all-at-once", "All at once", "every step at once, for the supervisor test")
DRIP = [sys.executable, "-c", "from patient_drip.cli import main; main()", "worker"]


@pytest.fixture
def pg_url():
    if not POSTGRES_REACHABLE:
        pytest.skip("PostgreSQL not reachable")
    yield from make_postgres_database()


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (from /proc: no third-party process library)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _setup(database_url: str, tmp_path: Path, sandbox, contacts: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "all-at-once.yaml").write_text(CAMPAIGN, encoding="utf-8")
    db.upgrade(database_url)
    rt = build_runtime(make_settings(database_url, campaigns_dir=campaigns))
    now = utcnow()
    for index in range(contacts):
        add_contact(rt, now, email=f"pat{index}@example.com", phone=f"+1312555{5000 + index}", first_name="Pat",
                    campaign="all-at-once", timezone=midday_zone(now))
    rt.close()
    env = provider_env(database_url, "https://clinic.test", sandbox.url, sandbox.public_key, campaigns,
                       DRIP_SECRET_KEY="test-secret-key-for-links", DRIP_BATCH_SIZE="5", DRIP_WORKER_CONCURRENCY="2",
                       PYTHONPATH=str(ROOT))
    del env["DRIP_WORKER_PROCESSES"]  # the option decides
    return env


def _finished(database_url: str) -> bool:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            open_enrollments = connection.scalar(select(func.count()).select_from(Enrollment).where(
                Enrollment.status != EnrollmentStatus.COMPLETED))
            in_flight = connection.scalar(select(func.count()).select_from(Message).where(
                Message.status == MessageStatus.SENDING))
        return open_enrollments == 0 and in_flight == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_three_processes_share_the_queue_and_sigterm_stops_them_all(pg_url, make_sandbox, tmp_path):
    sandbox = make_sandbox(twilio_status_callbacks=False)
    env = _setup(pg_url, tmp_path, sandbox, CONTACTS)
    supervisor = subprocess.Popen(DRIP + ["--processes", "3"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(_children(supervisor.pid)) == 3, timeout=30)
        children = _children(supervisor.pid)
        wait_until(lambda: _finished(pg_url), timeout=90, interval=0.2)
        assert _children(supervisor.pid) == children  # none died along the way
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, err = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, err[-3000:]
    assert not any(_alive(pid) for pid in children)  # every child stopped, none left orphaned
    assert "3 dispatcher processes" in out

    expected = CONTACTS * STEPS
    received = [m for m in sandbox.messages() if m.get("direction") == "outbound-api"]
    ours = Counter((m.get("custom_args") or {}).get("drip_message_id") or (m.get("status_callback") or "").split("m=")[-1]
                   for m in received)
    assert len(received) == expected and set(ours.values()) == {1}  # each message once, none twice
    engine = db.make_engine(pg_url)
    with engine.connect() as connection:
        assert Counter(connection.scalars(select(Message.status))) == {MessageStatus.SENT: expected}
        workers = Counter(connection.scalars(select(Message.worker_id)))
    engine.dispose()
    assert len(workers) >= 2, workers  # the work was shared between the processes
    assert {re.sub(r".*:", "", worker) for worker in workers} <= {str(pid) for pid in children}


@pytest.mark.postgres
def test_a_sigkilled_child_is_started_again(pg_url, make_sandbox, tmp_path):
    sandbox = make_sandbox(twilio_status_callbacks=False)
    env = _setup(pg_url, tmp_path, sandbox, 0)
    supervisor = subprocess.Popen(DRIP + ["--processes", "2"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(_children(supervisor.pid)) == 2, timeout=30)
        first = _children(supervisor.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_children(supervisor.pid) - first) == 1 and len(_children(supervisor.pid)) == 2,
                   timeout=30)
        assert victim not in _children(supervisor.pid)
        survivors = _children(supervisor.pid)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _out, err = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0
    assert f"(pid {victim}) killed by signal 9" in err and "restarting it" in err
    assert not any(_alive(pid) for pid in survivors)


@pytest.mark.postgres
def test_children_stop_by_themselves_when_the_supervisor_is_killed(pg_url, make_sandbox, tmp_path):
    sandbox = make_sandbox(twilio_status_callbacks=False)
    env = _setup(pg_url, tmp_path, sandbox, 0)
    supervisor = subprocess.Popen(DRIP + ["--processes", "2"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    wait_until(lambda: len(_children(supervisor.pid)) == 2, timeout=30)
    children = _children(supervisor.pid)
    supervisor.kill()
    supervisor.wait(timeout=10)
    try:
        wait_until(lambda: not any(_alive(pid) for pid in children), timeout=30)
    finally:  # never leave a worker behind, even when the test fails
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sqlite_runs_one_dispatcher_and_says_why(tmp_path, make_sandbox):
    sandbox = make_sandbox(twilio_status_callbacks=False)
    url = f"sqlite:///{tmp_path / 'drip.db'}"
    env = _setup(url, tmp_path, sandbox, 0)
    worker = subprocess.Popen(DRIP + ["--processes", "4"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = worker.stdout.readline() if worker.stdout else ""
        second = worker.stdout.readline() if worker.stdout else ""
        assert "SQLite has one writer: running 1 dispatcher process, not 4" in first
        assert second.startswith("worker worker:")  # the dispatcher itself, in this process
        assert _children(worker.pid) == set()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0
