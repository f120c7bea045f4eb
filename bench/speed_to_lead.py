"""Phase 7, speed to lead: how long after a consultation request its first email and its first text
(for a new person, the "Reply YES" confirmation text) reach the provider (issue 15).

Requests are POSTed to a live server at a steady rate, each naming a new person with both boxes
ticked; the latency of a channel is the sandbox's clock when the message arrived minus ours just
before the POST (one machine, one clock). Two deployment shapes:

- `drip serve` with its own scheduler on SQLite (the dispatcher is woken in process);
- `drip serve --no-scheduler` and two `drip worker`s on PostgreSQL (LISTEN/NOTIFY).

`DRIP_DISPATCH_INTERVAL` is 30 s, so a p95 under 2 s is the wake's doing, not the tick's. The campaign
is the real one with its send window open all day (the requests' Chicago numbers set their zone, and
the run must not depend on the hour); the form's per-address limits are lifted (every request comes
from 127.0.0.1).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from support import DRIP, ROOT, Databases, SandboxProcess, phone_for, provider_env, wait_for, workers

TICK_SECONDS = "30"
TARGET_P95 = 2.0
LIFTED_LIMITS = {"DRIP_INTAKE_FORM_LIMIT": "1000000/1s", "DRIP_INTAKE_SMS_PER_NUMBER": "1000000/1s",
                 "DRIP_INTAKE_SMS_PER_NETWORK": "1000000/1s", "DRIP_INTAKE_SMS_GLOBAL": "1000000/1s"}


class Rows(Protocol):
    """What this phase needs of `run.Table` (kept as a protocol: run.py imports this module)."""

    results: dict[str, Any]

    def add(self, phase: str, measure: str, result: str, target: str = "", ok: bool | None = None) -> None: ...


@dataclass(frozen=True)
class Load:
    rate: float  # requests per second
    seconds: float

    @classmethod
    def for_run(cls, quick: bool) -> Load:
        return cls(rate=2.0, seconds=10.0) if quick else cls(rate=2.0, seconds=30.0)


@dataclass(frozen=True)
class Sent:
    email: str
    phone: str
    at: float  # time.time() just before the POST
    status: int


def all_day_campaigns(folder: Path) -> Path:
    """The real campaign with its send window open all day (00:00-24:00, no spread)."""
    text = (ROOT / "campaigns" / "ketamine-consult.yaml").read_text(encoding="utf-8")
    for old, new in (('start: "09:00"', 'start: "00:00"'), ('end: "20:00"', 'end: "24:00"'),
                     ("spread_minutes: 20", "spread_minutes: 0")):
        if old not in text:
            raise RuntimeError(f"campaigns/ketamine-consult.yaml changed: {old!r} not found")
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ketamine-consult.yaml").write_text(text, encoding="utf-8")
    return folder


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # noqa: S310 (loopback)
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextmanager
def serving(env: dict[str, str], port: int, *, scheduler: bool) -> Iterator[str]:
    """`drip serve` (with or without its scheduler) on `port`; yields its base URL once it answers."""
    args = DRIP + ["serve", "--port", str(port)] + ([] if scheduler else ["--no-scheduler"])
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(lambda: _healthy(base) or process.poll() is not None, timeout=60) or process.poll() is not None:
            raise RuntimeError(f"drip serve did not start: {process.stderr.read()[-2000:] if process.stderr else ''}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _post(base: str, index: int, first: int) -> Sent:
    email, phone = f"lead{first + index}@speed.example", phone_for(first + index)
    body = json.dumps({"first_name": "Robin", "email": email, "phone": phone, "consent_email": True,
                       "consent_sms": True}).encode()
    request = urllib.request.Request(f"{base}/api/consultations", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    at = time.time()
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return Sent(email, phone, at, status)


def post_steadily(base: str, load: Load, first: int) -> list[Sent]:
    """`load.rate` requests a second for `load.seconds`, on schedule (a slow answer does not delay
    the next request: they go out from a small pool)."""
    count = int(load.rate * load.seconds)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for index in range(count):
            delay = started + index / load.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_post, base, index, first))
        return [future.result() for future in futures]


def _receipts(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sandbox.control}/receipts", timeout=30) as answer:  # noqa: S310 (loopback)
        return json.loads(answer.read())  # type: ignore[no-any-return]


def first_receipts(sandbox: SandboxProcess) -> tuple[dict[str, float], dict[str, float]]:
    """When each address got its first campaign email and its first text (sandbox clock)."""
    emails: dict[str, float] = {}
    texts: dict[str, float] = {}
    for receipt in _receipts(sandbox):
        if receipt["provider"] == "sendgrid" and "confirm" not in (receipt.get("subject") or "").lower():
            emails.setdefault(receipt["to"], receipt["created_ts"])
        elif receipt["provider"] == "twilio":
            texts.setdefault(receipt["to"], receipt["created_ts"])
    return emails, texts


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _row(table: Rows, phase: str, channel: str, latencies: list[float], expected: int) -> bool:
    if not latencies:
        table.add(phase, f"{channel}: p50 | p95 | max", f"none of {expected} arrived", f"p95 <= {TARGET_P95:g} s", False)
        return False
    p50, p95, worst = percentile(latencies, 0.5), percentile(latencies, 0.95), max(latencies)
    ok = p95 <= TARGET_P95 and len(latencies) == expected
    table.add(phase, f"{channel}: p50 | p95 | max", f"{p50:.2f} | {p95:.2f} | {worst:.2f} s ({len(latencies)}/{expected})",
              f"p95 <= {TARGET_P95:g} s", ok)
    return ok


def measure(table: Rows, sandbox: SandboxProcess, base: str, load: Load, first: int, phase: str, key: str) -> None:
    """Post the load to `base`, wait for every first message, add the two rows."""
    sandbox.reset()
    sent = post_steadily(base, load, first)
    accepted = [s for s in sent if s.status == 202]
    if len(accepted) != len(sent):
        raise RuntimeError(f"{len(sent) - len(accepted)} of {len(sent)} requests refused "
                           f"(statuses {sorted({s.status for s in sent})})")

    def arrived() -> bool:
        emails, texts = first_receipts(sandbox)
        return all(s.email in emails and s.phone in texts for s in accepted)

    # Past the tick: a message the wake missed still arrives, and its latency shows the miss.
    wait_for(arrived, timeout=float(TICK_SECONDS) * 2 + 10, interval=0.25)
    emails, texts = first_receipts(sandbox)
    email_latency = [emails[s.email] - s.at for s in accepted if s.email in emails]
    text_latency = [texts[s.phone] - s.at for s in accepted if s.phone in texts]
    table.results[key] = {"requests": len(accepted), "rate": load.rate, "email_latency": email_latency,
                          "text_latency": text_latency}
    _row(table, phase, "first email", email_latency, len(accepted))
    _row(table, phase, "first text (YES request)", text_latency, len(accepted))


def phase_speed_to_lead(table: Rows, sandbox: SandboxProcess, dbs: Databases, quick: bool, kinds: list[str]) -> None:
    load = Load.for_run(quick)
    campaigns = all_day_campaigns(dbs.folder / "speed-campaigns")
    shapes = [("sqlite", "serve + its scheduler, SQLite")]
    if "postgresql" in kinds:
        shapes.append(("postgresql", "serve --no-scheduler + 2 workers, PG"))
    for index, (kind, label) in enumerate(shapes):
        print(f"[7] speed to lead: {int(load.rate * load.seconds)} requests at {load.rate:g}/s, {label}, "
              f"tick {TICK_SECONDS} s", flush=True)
        url = dbs.new(kind)
        port = _free_port()
        try:
            env = provider_env(url, sandbox, DRIP_PUBLIC_URL=f"http://127.0.0.1:{port}", DRIP_CAMPAIGNS_DIR=str(campaigns),
                               DRIP_DISPATCH_INTERVAL=TICK_SECONDS, **LIFTED_LIMITS)
            subprocess.run(DRIP + ["init"], env=env, cwd=ROOT, check=True, capture_output=True)
            with ExitStack() as stack:
                if kind == "postgresql":
                    stack.enter_context(workers(2, env))
                base = stack.enter_context(serving(env, port, scheduler=kind == "sqlite"))
                measure(table, sandbox, base, load, 1_000_000 * (index + 1), f"7 speed to lead, {label}",
                        f"speed_to_lead_{kind}")
        finally:
            dbs.drop(url)


__all__ = ["Load", "phase_speed_to_lead"]
