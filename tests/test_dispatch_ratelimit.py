"""The per-channel rate limit holds across worker processes together: it lives in the database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patient_drip import db
from support.builders import ROOT
from patient_drip.dispatch.ratelimit import SharedRateLimiter

RATE = 20.0  # slots a second for all processes together
PER_PROCESS = 15
PROCESSES = 3

CHILD = """
import json, sys, time
sys.path[:0] = [{root!r}]
from patient_drip import db
from patient_drip.dispatch.ratelimit import SharedRateLimiter
url = sys.argv[1]
engine = db.make_engine(url)
limiter = SharedRateLimiter(db.make_session_factory(engine), "sms", {rate})
print("ready", flush=True)  # imported and connected: the parent starts everyone at once
sys.stdin.readline()
times = []
for _ in range({count}):
    limiter.acquire()
    times.append(time.time())
print(json.dumps(times))
"""


def test_three_processes_share_one_limit(database_url: str, tmp_path: Path) -> None:
    db.upgrade(database_url)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), rate=RATE, count=PER_PROCESS), encoding="utf-8")
    children = [subprocess.Popen([sys.executable, str(script), database_url], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
    for child in children:  # wait until every child is imported and connected, then start them together
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    stamps: list[float] = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        stamps += json.loads(out)
    stamps.sort()
    total = PROCESSES * PER_PROCESS
    block = int(RATE * 0.25)  # each process may start its reserved block at once
    # All together they took as long as the shared limit demands (one process alone: a third).
    assert stamps[-1] - stamps[0] >= (total - PROCESSES * block) / RATE
    # No one-second window holds more than the limit plus the blocks reserved ahead.
    for index, first in enumerate(stamps):
        inside = sum(1 for t in stamps[index:] if t < first + 1.0)
        assert inside <= RATE + PROCESSES * block, (inside, first)


def test_a_high_limit_costs_little_and_blocks_follow_the_workers_own_pace(sqlite_url: str) -> None:
    """A limit of a million a second: reservations are sized by what this worker uses, so several
    workers do not take turns in quarter-second windows of the whole capacity."""
    db.upgrade(sqlite_url)
    limiter = SharedRateLimiter(db.make_session_factory(db.make_engine(sqlite_url)), "email", 1_000_000)
    started = time.perf_counter()
    for _ in range(1000):
        limiter.acquire()
    assert time.perf_counter() - started < 0.5
    assert limiter.block == 250_000 and limiter._left < 250_000


def test_another_workers_reservation_does_not_make_this_one_wait_at_a_high_limit(sqlite_url: str) -> None:
    db.upgrade(sqlite_url)
    sessions = db.make_session_factory(db.make_engine(sqlite_url))
    first, second = (SharedRateLimiter(sessions, "sms", 100_000) for _ in range(2))
    for _ in range(50):
        first.acquire()
    waited = sum(second.acquire() for _ in range(50))
    assert waited < 0.05


@pytest.mark.parametrize("rate", [2.0, 50.0])
def test_one_process_is_paced_at_the_rate(sqlite_url: str, rate: float) -> None:
    db.upgrade(sqlite_url)
    clock = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = SharedRateLimiter(db.make_session_factory(db.make_engine(sqlite_url)), "sms", rate,
                                clock=lambda: clock[0], sleep=sleep)
    for _ in range(int(rate * 2)):
        limiter.acquire()
    assert clock[0] - 1000.0 == pytest.approx((rate * 2 - 1) / rate, abs=1e-6)
