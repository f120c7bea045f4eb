"""Processes for the chaos tests: the provider sandbox in its own process, real `drip worker`
processes that a test kills and restarts, and a checker that compares what the sandbox received
with what the database says.

Run as a module (``python -m support.chaos worker`` with ``tests/`` on PYTHONPATH) it is `drip worker` with shorter
claim lease and reconciliation waits, read from ``DRIP_TEST_*`` variables: the real entry point,
so that a crash test does not need to wait five real minutes for a lease to run out.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from support.builders import ROOT
from support.live import free_port

PYTHON = sys.executable
TESTS = Path(__file__).resolve().parents[1]

def all_at_once_campaign(campaign_id: str, name: str, description: str) -> str:
    """A campaign (YAML) whose eight steps -- the real templates -- are all due at once, all day,
    uncapped: a big dispatch that real-time workers get through in seconds."""
    return f"""\
id: {campaign_id}
name: {name}
description: {description}
send_window: {{start: "00:00", end: "24:00", email: true, spread_minutes: 0}}
frequency_cap_per_day: 100
email_requires_consent: true
exit_on: [booked, unsubscribed]
steps:
  - {{id: welcome-email,      delay: 0m, channel: email, template: email/01-welcome.html}}
  - {{id: welcome-sms,        delay: 0m, channel: sms,   template: sms/01-welcome.txt}}
  - {{id: stress-brain-email, delay: 0m, channel: email, template: email/02-stress-brain.html}}
  - {{id: checkin-sms,        delay: 0m, channel: sms,   template: sms/02-checkin.txt}}
  - {{id: how-it-works-email, delay: 0m, channel: email, template: email/03-how-it-works.html}}
  - {{id: results-email,      delay: 0m, channel: email, template: email/04-results.html}}
  - {{id: reminder-sms,       delay: 0m, channel: sms,   template: sms/03-reminder.txt}}
  - {{id: consult-email,      delay: 0m, channel: email, template: email/05-consultation.html}}
"""


CHAOS_CAMPAIGN = all_at_once_campaign("chaos", "Chaos campaign",
                                      "every step of the real sequence at once, for crash tests")
CHAOS_STEPS = 8

TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "sandbox-twilio-auth-token"
SENDGRID_KEY = "SG.sandbox-api-key"
FROM_NUMBER = "+15005550006"


# The figures of the last run, for docs/guarantees.md (not part of any assertion).
FIGURES_FILE = Path(os.environ.get("DRIP_GUARANTEE_FIGURES")
                    or Path(tempfile.gettempdir()) / "patient-drip-guarantee-figures.json")


def record_figures(name: str, figures: Mapping[str, Any]) -> None:
    """Add one test's figures to the shared file (best effort). Test processes run in parallel, so the
    read-modify-write holds a lock and the new file replaces the old one whole."""
    try:
        with open(FIGURES_FILE.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
            except ValueError:
                data = {}
            data[name] = {**figures, "recorded_at": datetime.now().isoformat(timespec="seconds")}
            partial = FIGURES_FILE.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
            os.replace(partial, FIGURES_FILE)
    except OSError:
        pass


def write_chaos_campaign(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chaos.yaml").write_text(CHAOS_CAMPAIGN, encoding="utf-8")
    return directory


def _http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read() or b"null")


# -- the sandbox, in its own process -----------------------------------------------------------------


_SANDBOX_MAIN = """
import json, os
from patient_drip.providers import sandbox
sandbox.run_sandbox(port=int(os.environ["CHAOS_SANDBOX_PORT"]), announce=None, log_level="warning",
                    **json.loads(os.environ["CHAOS_SANDBOX_CONFIG"]))
"""


class SandboxProcess:
    """`drip sandbox` in a child process: killing workers never touches what it recorded."""

    def __init__(self, log_dir: Path, **config: Any) -> None:
        from patient_drip.providers.sandbox import SendGridSigner

        signer = SendGridSigner()
        self.config = {"sendgrid_private_key_pem": signer.private_key_pem(), **config}
        self.public_key = signer.public_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir / "sandbox.log").open("w")
        env = {**_clean_env(), "CHAOS_SANDBOX_PORT": str(self.port), "CHAOS_SANDBOX_CONFIG": json.dumps(self.config)}
        self.process = subprocess.Popen([PYTHON, "-c", _SANDBOX_MAIN], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.stats()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sandbox process did not start") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        return _http("GET", f"{self.url}/_sandbox/stats")  # type: ignore[no-any-return]

    def faults(self, body: dict[str, Any]) -> None:
        _http("POST", f"{self.url}/_sandbox/faults", body)

    def clear_faults(self) -> None:
        _http("DELETE", f"{self.url}/_sandbox/faults")

    def configure(self, **changes: Any) -> None:
        _http("POST", f"{self.url}/_sandbox/config", changes)

    def messages(self) -> list[dict[str, Any]]:
        found = _http("GET", f"{self.url}/_sandbox/messages?limit=1000000", timeout=60)
        return [m for m in found["messages"] if m.get("direction") == "outbound-api"]

    def wait_for_callbacks(self, timeout: float = 30.0) -> None:
        """Until every status callback / event webhook it owes has been made."""
        deadline = time.monotonic() + timeout
        while self.stats().get("pending_callbacks", 0):
            if time.monotonic() > deadline:
                raise AssertionError("sandbox callbacks still pending")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def _clean_env() -> dict[str, str]:
    """The environment without any DRIP_/TWILIO_/SENDGRID_ setting of the caller's."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("DRIP_", "TWILIO_", "SENDGRID_"))}


def provider_env(database_url: str, public_url: str, sandbox_url: str, public_key: str, campaigns_dir: Path,
                 **extra: str) -> dict[str, str]:
    """Settings (as environment variables) for a worker in providers mode against the sandbox."""
    return {
        **_clean_env(),
        "DRIP_DATABASE_URL": database_url,
        "DRIP_DELIVERY": "providers",
        "DRIP_PUBLIC_URL": public_url,
        "DRIP_SECRET_KEY": "chaos-secret-key-for-links",
        "DRIP_BOOKING_URL": "https://book.clinic.test/consult",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "DRIP_TWILIO_BASE_URL": sandbox_url,
        "SENDGRID_API_KEY": SENDGRID_KEY,
        "DRIP_FROM_EMAIL": "Riverside Wellness <care@clinic.test>",
        "DRIP_SENDGRID_BASE_URL": sandbox_url,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key,
        "DRIP_CAMPAIGNS_DIR": str(campaigns_dir),
        "DRIP_TEMPLATES_DIR": str(ROOT / "templates"),
        "DRIP_POLICY_DIR": str(ROOT / "policy"),
        "DRIP_SMS_RATE": "1000",
        "DRIP_EMAIL_RATE": "1000",
        "DRIP_DISPATCH_INTERVAL": "0.2",
        "DRIP_PROVIDER_TIMEOUT": "2",
        "DRIP_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # One dispatcher per process: these tests start, kill and count worker processes themselves.
        "DRIP_WORKER_PROCESSES": "1",
        **extra,
    }


# -- workers -------------------------------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float


@dataclass
class WorkerPool:
    """`size` real worker processes; `kill_one` SIGKILLs one and starts a replacement."""

    env: dict[str, str]
    log_dir: Path
    size: int = 3
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    workers: list[Worker] = field(default_factory=list)
    kills: int = 0
    starts: int = 0
    exit_codes: Counter[int] = field(default_factory=Counter)

    def start(self) -> WorkerPool:
        for index in range(self.size):
            self.workers.append(self._spawn(index))
        return self

    def _spawn(self, index: int) -> Worker:
        self.starts += 1
        log = (self.log_dir / f"worker-{index}-{self.starts}.log").open("wb")
        env = {**self.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), self.env.get("PYTHONPATH")]))}
        process = subprocess.Popen([PYTHON, "-m", "support.chaos", "worker"], cwd=self.log_dir,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return Worker(index, process, time.monotonic())

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until every current worker has finished starting up (printed its banner)."""
        deadline = time.monotonic() + timeout
        while True:
            banners = [path.read_text(errors="replace") for path in self.log_dir.glob("worker-*.log")]
            started = sum("dispatching every" in text for text in banners)
            if started >= self.starts:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {started} of {self.starts} workers started:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def kill_process(self, victim: Worker) -> None:
        """SIGKILL this worker (waiting until it is gone) and start another in its place."""
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.kills += 1
        self.workers[self.workers.index(victim)] = self._spawn(victim.index)

    def kill_one(self, min_age: float = 0.0) -> bool:
        """SIGKILL a random worker that has run at least `min_age` seconds; start another."""
        now = time.monotonic()
        candidates = [w for w in self.workers if now - w.started >= min_age]
        if not candidates:
            return False
        self.kill_process(self.rng.choice(candidates))
        return True

    def crashed(self) -> list[int]:
        """Workers that exited by themselves (not killed by us): a worker must never die."""
        return [w.process.returncode for w in self.workers if w.process.poll() is not None]

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            self.exit_codes[worker.process.returncode] += 1

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("worker-*.log")))


# -- checking ------------------------------------------------------------------------------------------


def drip_message_id(record: Mapping[str, Any]) -> int | None:
    """Our send-record id as the provider received it (SendGrid custom arg, Twilio callback ?m=)."""
    if record["provider"] == "sendgrid":
        value = (record.get("custom_args") or {}).get("drip_message_id")
        return int(value) if value and str(value).isdigit() else None
    query = dict(parse_qsl(urlsplit(record.get("status_callback") or "").query))
    return int(query["m"]) if query.get("m", "").isdigit() else None


def received_content(record: Mapping[str, Any]) -> tuple[str, str]:
    """(recipient, what they read): the subject for an email, the text for an SMS."""
    if record["provider"] == "sendgrid":
        return record["to"], str(record.get("subject"))
    return record["to"], str(record.get("body") or record.get("text"))


@dataclass
class Audit:
    """What the sandbox received against what the database recorded."""

    received: int
    duplicates_by_id: dict[int, int]
    duplicates_by_content: dict[tuple[str, str], int]
    unknown_ids: list[int]


def audit_sandbox(records: Iterable[Mapping[str, Any]]) -> Audit:
    records = list(records)
    by_id = Counter(drip_message_id(r) for r in records)
    by_content = Counter(received_content(r) for r in records)
    return Audit(
        received=len(records),
        duplicates_by_id={k: v for k, v in by_id.items() if k is not None and v > 1},
        duplicates_by_content={k: v for k, v in by_content.items() if v > 1},
        unknown_ids=[k for k in by_id if k is None],
    )


def settle_in_virtual_time(rt: Any, start: datetime, *, step: timedelta = timedelta(minutes=5),
                           horizon: timedelta = timedelta(hours=3),
                           between: Callable[[], None] | None = None) -> dict[str, int]:
    """After the chaos: dispatch and reconcile in-process with a clock running ahead of the real one
    (leases end, reconciliation grace periods pass) until nothing is due or unknown."""
    from sqlalchemy import func, select

    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.models import Enrollment, Message, MessageStatus
    from patient_drip.dispatch.reconcile import reconcile_unknown

    dispatcher = Dispatcher(rt, "chaos-final")
    totals: Counter[str] = Counter()
    now = start
    while now <= start + horizon:
        totals.update(reconcile_unknown(rt, now))
        totals.update(dispatcher.run_once(now).outcomes)
        if between is not None:
            between()
        with rt.sessions() as session:
            open_messages = session.scalar(select(func.count()).select_from(Message).where(
                Message.status.in_([MessageStatus.SENDING, MessageStatus.RETRYING, MessageStatus.UNKNOWN])))
            due = session.scalar(select(func.count()).select_from(Enrollment).where(
                Enrollment.next_due_at.is_not(None)))
        if not open_messages and not due:
            break
        now += step
    return dict(totals)


# -- the worker entry point with test-sized waits ------------------------------------------------------


def _worker_main() -> None:
    from patient_drip.dispatch import queue as dispatch
    from patient_drip.dispatch import reconcile
    from patient_drip import scheduler

    def seconds(name: str) -> timedelta | None:
        value = os.environ.get(name)
        return timedelta(seconds=float(value)) if value else None

    if (lease := seconds("DRIP_TEST_LEASE_SECONDS")) is not None:
        dispatch.LEASE = lease
    if (wait := seconds("DRIP_TEST_RECONCILE_WAIT_SECONDS")) is not None:
        dispatch.RECONCILE_WAIT = wait
    if (grace := seconds("DRIP_TEST_SMS_LIST_GRACE_SECONDS")) is not None:
        reconcile.SMS_LIST_GRACE = grace
    if (tick := seconds("DRIP_TEST_RECONCILE_SECONDS")) is not None:
        scheduler.RECONCILE_SECONDS = tick.total_seconds()
    from patient_drip import cli

    cli.main(["worker"], prog_name="drip")


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        _worker_main()
    else:
        raise SystemExit("usage: python -m support.chaos worker")
