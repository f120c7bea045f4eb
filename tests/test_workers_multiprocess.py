"""Several real `drip worker` processes on one database (PostgreSQL, and one SQLite file) share the
work: every due message reaches the provider exactly once — counted at the provider sandbox — and
none is left behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from patient_drip import db
from support.builders import ROOT, add_contact, make_settings, midday_zone
from support.chaos import all_at_once_campaign, provider_env
from patient_drip.models import Enrollment, EnrollmentStatus, Message, MessageStatus
from patient_drip.runtime import build_runtime, utcnow

WORKERS = 3
CONTACTS = 30
STEPS = 8
# The real templates, every step due at once, all day, uncapped: plenty of concurrent work.
CAMPAIGN = all_at_once_campaign("all-at-once", "All at once",
                                "every step of the sequence at once, for the multi-process test")
_TOKEN = re.compile(r"(/[bu]/)[A-Za-z0-9._-]+")


def _worker_env(database_url: str, campaigns: Path, sandbox) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return provider_env(database_url, "https://clinic.test", sandbox.url, sandbox.public_key, campaigns,
                        DRIP_SECRET_KEY="test-secret-key-for-links", DRIP_SMS_RATE="5000", DRIP_EMAIL_RATE="5000",
                        DRIP_BATCH_SIZE="7", DRIP_WORKER_CONCURRENCY="4", DRIP_PROVIDER_TIMEOUT="10",
                        DRIP_LOG_FORMAT="text", PYTHONPATH=str(ROOT))


def _finished(rt) -> bool:  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        open_enrollments = session.scalar(select(func.count()).select_from(Enrollment).where(
            Enrollment.status != EnrollmentStatus.COMPLETED))
        in_flight = session.scalar(select(func.count()).select_from(Message).where(
            Message.status == MessageStatus.SENDING))
    return open_enrollments == 0 and in_flight == 0


def test_workers_share_the_queue_without_duplicates_or_leftovers(database_url, make_sandbox, tmp_path):
    sandbox = make_sandbox(twilio_status_callbacks=False)
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "all-at-once.yaml").write_text(CAMPAIGN, encoding="utf-8")
    settings = make_settings(database_url, campaigns_dir=campaigns)
    db.upgrade(database_url)
    rt = build_runtime(settings)
    now = utcnow()
    for index in range(CONTACTS):
        add_contact(rt, now, email=f"pat{index}@example.com", phone=f"+1312555{5000 + index}", first_name="Pat",
                    campaign="all-at-once", timezone=midday_zone(now))
    env = _worker_env(database_url, campaigns, sandbox)
    workers = [subprocess.Popen([sys.executable, "-c", "from patient_drip.cli import main; main()", "worker"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
    try:
        deadline = time.monotonic() + 45
        while not _finished(rt) and time.monotonic() < deadline:
            assert all(w.poll() is None for w in workers), "a worker died"
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        logs = [worker.communicate(timeout=30) for worker in workers]
    expected = CONTACTS * STEPS
    assert _finished(rt), f"not finished in time; logs:\n{logs[0][1][-3000:]}"
    assert all(worker.returncode == 0 for worker in workers), [log[1][-2000:] for log in logs]

    # At the provider: each (recipient, content) exactly once; each of our message ids once.
    received = [m for m in sandbox.messages() if m.get("direction") == "outbound-api"]
    by_content = Counter((m["provider"], m["to"], _TOKEN.sub(r"\1*", m.get("subject") or m["text"])) for m in received)
    assert len(received) == expected and set(by_content.values()) == {1}
    ours = Counter((m.get("custom_args") or {}).get("drip_message_id") or (m.get("status_callback") or "").split("m=")[-1]
                   for m in received)
    assert len(ours) == expected and set(ours.values()) == {1}
    # In our database: every step sent once, nothing due, nothing left in flight.
    with rt.sessions() as session:
        statuses = Counter(session.scalars(select(Message.status)))
        assert statuses == {MessageStatus.SENT: expected}
        assert session.scalar(select(func.count()).select_from(Enrollment).where(
            Enrollment.next_due_at.is_not(None))) == 0
    # The work really was shared.
    senders = [len(re.findall(r"sent message \d+", err)) for _out, err in logs]
    assert sum(senders) == expected
    assert sum(1 for count in senders if count) >= 2, senders
    rt.close()


@pytest.mark.parametrize("processes", [3])
def test_claims_from_several_processes_never_overlap(database_url, tmp_path, processes):
    """The claim alone, hammered by several processes at once: every due enrollment is claimed by
    exactly one of them."""
    db.upgrade(database_url)
    settings = make_settings(database_url)
    rt = build_runtime(settings)
    now = utcnow()
    for index in range(60):
        add_contact(rt, now, email=f"c{index}@example.com", phone=None, consent=("email",))
    with rt.sessions() as session, session.begin():  # due now, whatever the hour of the test run
        session.execute(update(Enrollment).values(next_due_at=now - timedelta(seconds=1)))
    rt.close()
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'tests')!r}]\n"
        "from support.builders import make_settings\n"
        "from patient_drip.dispatch.queue import claim_due\n"
        "from patient_drip.runtime import build_runtime, utcnow\n"
        "rt = build_runtime(make_settings(sys.argv[1]))\n"
        "got = []\n"
        "while True:\n"
        "    ids = claim_due(rt, utcnow(), 3, sys.argv[2])\n"
        "    if not ids: break\n"
        "    got += ids\n"
        "print(json.dumps(got))\n"
    )
    children = [subprocess.Popen([sys.executable, "-c", script, database_url, f"p{i}"], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
    claimed: list[int] = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        claimed += __import__("json").loads(out)
    assert len(claimed) == 60 and len(set(claimed)) == 60
