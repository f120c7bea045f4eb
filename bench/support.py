"""Plumbing for the benchmark: the sandbox process, throw-away databases, fast seeding, test data."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from sqlalchemy import create_engine, text  # noqa: E402

from names import first_name  # noqa: E402  (bench/ is on sys.path: run.py and the helpers run from it)
from patient_drip import db  # noqa: E402
from patient_drip.models import Contact, Enrollment  # noqa: E402

PYTHON = sys.executable
DRIP = [PYTHON, "-c", "import sys; sys.argv[0] = 'drip'; from patient_drip.cli import main; main()"]
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "sandbox-twilio-auth-token"
SENDGRID_KEY = "SG.sandbox-api-key"
CAMPAIGN = "ketamine-consult"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def midday_zone(now: datetime) -> str:
    """An IANA zone where it is about noon right now, so every send window is open whatever the
    hour the benchmark runs at (Etc/GMT-3 is UTC+3: the sign is inverted by POSIX convention)."""
    offset = 12 - now.hour
    if offset < -12:
        offset += 24
    if offset > 14:
        offset -= 24
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def _http(method: str, url: str, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


class SandboxProcess:
    """`bench/sandbox_proc.py` running beside us."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([PYTHON, str(ROOT / "bench" / "sandbox_proc.py")], stdout=subprocess.PIPE,
                                        text=True, cwd=ROOT)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError("the sandbox did not start")
        info = json.loads(line)
        self.url, self.control, self.public_key = info["url"], info["control"], info["public_key"]

    def summary(self) -> dict[str, Any]:
        return _http("GET", f"{self.control}/summary")  # type: ignore[no-any-return]

    def reset(self) -> None:
        _http("POST", f"{self.control}/reset")

    def latency(self, ms: int) -> None:
        _http("POST", f"{self.control}/latency?ms={ms}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def provider_env(database_url: str, sandbox: SandboxProcess, **extra: str) -> dict[str, str]:
    """Environment for a `drip` process delivering to the sandbox, with pacing out of the way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIP_", "TWILIO_", "SENDGRID_"))}
    env.update({
        "DRIP_DATABASE_URL": database_url, "DRIP_DELIVERY": "providers", "DRIP_PUBLIC_URL": "http://127.0.0.1:9",
        "DRIP_SECRET_KEY": "benchmark-secret-key-for-links", "DRIP_BOOKING_URL": "https://clinic.example/book",
        "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "TWILIO_FROM_NUMBER": "+15005550006",
        "SENDGRID_API_KEY": SENDGRID_KEY, "DRIP_FROM_EMAIL": "Riverside Wellness <care@clinic.example>",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": sandbox.public_key,
        "DRIP_TWILIO_BASE_URL": sandbox.url, "DRIP_SENDGRID_BASE_URL": sandbox.url,
        "DRIP_SMS_RATE": "1000000", "DRIP_EMAIL_RATE": "1000000", "DRIP_PROVIDER_TIMEOUT": "30",
        "DRIP_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
        "DRIP_WORKER_PROCESSES": "1",  # `workers(n)` starts n processes itself
    })
    env.update(extra)
    return env


# -- databases -------------------------------------------------------------------------------------


class Databases:
    """Throw-away databases: SQLite files in a temporary folder, PostgreSQL databases `bench_*`."""

    def __init__(self, postgres_admin_url: str | None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="drip-bench-"))
        self.admin_url = postgres_admin_url
        self.created: list[str] = []

    def postgres_available(self) -> bool:
        if not self.admin_url:
            return False
        try:
            engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            engine.dispose()
            return True
        except Exception:
            return False

    def new(self, kind: str, *, template: str | None = None) -> str:
        if kind == "sqlite":
            path = self.folder / f"bench-{uuid.uuid4().hex[:8]}.db"
            if template:
                shutil.copy(template.removeprefix("sqlite:///"), path)
            return f"sqlite:///{path}"
        assert self.admin_url
        name = f"bench_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""))
        self.created.append(name)
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def drop(self, url: str) -> None:
        if url.startswith("sqlite"):
            for suffix in ("", "-wal", "-shm"):
                Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
            return
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def _admin(self, statement: str) -> None:
        assert self.admin_url
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(statement))
        engine.dispose()

    def cleanup(self) -> None:
        for name in list(self.created):
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


def phone_for(index: int) -> str:
    return f"+1312{2_000_000 + index:07d}"


def seed_enrolled(url: str, count: int, now: datetime, zone: str, *, due: Any = None, start: int = 0,
                  chunk: int = 50_000) -> None:
    """`count` contacts with email and SMS consent, enrolled in the campaign at `now`, inserted at
    driver speed (COPY on PostgreSQL). `due(index)` gives each enrollment's next_due_at (default:
    due now). Sequences are moved past the explicit ids afterwards."""
    from patient_drip.migrate_data import reset_sequences

    engine = db.make_engine(url)
    rng = random.Random(start)
    try:
        for first in range(start, start + count, chunk):
            last = min(start + count, first + chunk)
            with engine.begin() as connection:
                db.bulk_insert(connection, Contact.__table__, (
                    "id", "first_name", "last_name", "email", "phone", "timezone", "source", "email_consent",
                    "sms_consent", "preferred_channel", "created_at", "updated_at"), [
                    (i + 1, first_name(i), f"Bench{i}", f"p{i}@bench.example", phone_for(i), zone, "bench",
                     True, True, "", now, now) for i in range(first, last)])
                db.bulk_insert(connection, Enrollment.__table__, (
                    "id", "contact_id", "campaign_id", "status", "step_index", "enrolled_at", "next_due_at",
                    "source"), [
                    (i + 1, i + 1, CAMPAIGN, "active", 0, now, due(i) if due else now, "bench")
                    for i in range(first, last)])
        with engine.begin() as connection:
            reset_sequences(connection)
            if connection.dialect.name == "postgresql":
                connection.execute(text("ANALYZE"))
            else:
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def write_people_csv(path: Path, count: int, start: int) -> None:
    """A CSV like a clinic's export: unique, valid addresses; one row in three without SMS consent."""
    rng = random.Random(start)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("first_name,last_name,email,phone,timezone,consent_email,consent_sms,source\n")
        for i in range(start, start + count):
            handle.write(f"{first_name(i)},Import{i},person{i}@example{i % 97}.com,{phone_for(i)},,yes,"
                         f"{'no' if i % 3 == 0 else 'yes'},bench\n")


# -- processes -------------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a running process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_json(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run a helper script that prints one JSON object as its last line."""
    result = subprocess.run(list(args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@contextmanager
def workers(count: int, env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    """`count` real `drip worker` processes, started and ready (banner printed); stopped after."""
    processes = [subprocess.Popen(DRIP + ["worker"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for process in processes:
            banner = process.stdout.readline() if process.stdout else ""
            if "worker" not in banner:
                raise RuntimeError(f"a worker did not start: {banner}{process.stderr.read() if process.stderr else ''}")
        time.sleep(0.5)  # the scheduler's first tick
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def fmt_duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else str(timedelta(seconds=int(seconds)))
