"""`make bench`: how fast patient-drip delivers, scales out and imports — one run, one table.

Everything runs on this machine against the provider sandbox on loopback (its own process):

1. the raw SDKs alone: N SMS + N emails on the dispatcher's thread-pool size — the physical limit;
2. `drip send-due` (one `Dispatcher.run_once`) delivering the same 2N messages on SQLite and on
   PostgreSQL, as a share of (1) (rate limits set out of the way);
3. 1, 2 and 4 `drip worker` processes on one PostgreSQL database against a provider answering in
   100 ms: speed-up, and duplicates counted at the sandbox;
4. one million enrolled contacts: one claim of a batch, a worker's memory, `drip import` speed;
5. the naive design (one APScheduler job per message in SQLAlchemyJobStore): its rate and what it
   silently skips with APScheduler's default misfire settings;
6. crashes: 3 `drip worker` processes deliver N messages (8 per contact) to a provider answering in
   20 ms and are SIGKILLed 6 times mid-pass (`tests/support/crash_burst.py`): duplicates, sends in
   doubt per kill, messages never delivered, and how long the burst took;
7. speed to lead: consultation requests at a steady rate to a live server; how long until each
   one's first email and first text reach the sandbox (p50, p95, max), for `drip serve` with its
   scheduler on SQLite and for a web process with 2 `drip worker`s on PostgreSQL
   (`bench/speed_to_lead.py`).

Usage: python bench/run.py [--quick] [--only 1,2,3,4,5,6,7] [--postgres URL] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402
    DRIP,
    PYTHON,
    ROOT,
    Databases,
    SandboxProcess,
    fmt_duration,
    loadavg,
    midday_zone,
    peak_rss_mb,
    provider_env,
    run_json,
    seed_enrolled,
    utcnow,
    wait_for,
    workers,
    write_people_csv,
)

from speed_to_lead import phase_speed_to_lead  # noqa: E402

CONCURRENCY = 8  # DRIP_WORKER_CONCURRENCY's default: the raw SDK phase uses the same pool size


@dataclass
class Sizes:
    messages: int  # phases 1-2: contacts (each gets an email and an SMS)
    scale_contacts: int  # phase 3
    million: int  # phase 4
    import_rows: int
    naive: tuple[int, ...]  # phase 5

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(messages=600, scale_contacts=400, million=100_000, import_rows=10_000, naive=(2_000, 10_000))
        return cls(messages=3000, scale_contacts=1200, million=1_000_000, import_rows=100_000, naive=(10_000, 100_000))


@dataclass
class Table:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def add(self, phase: str, measure: str, result: str, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else ("yes" if ok else "NO")
        self.rows.append((phase, measure, result, target, mark))
        print(f"  {phase}: {measure} = {result}" + (f"  (target {target}: {mark})" if target else ""), flush=True)

    def render(self) -> str:
        header = ("phase", "measure", "result", "target", "met")
        widths = [max(len(str(row[i])) for row in [header, *self.rows]) for i in range(5)]
        line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
        out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |", line]
        out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |" for row in self.rows]
        out.append(line)
        return "\n".join(out)


def phase_raw(table: Table, sandbox: SandboxProcess, sizes: Sizes) -> dict[str, float]:
    print(f"[1] raw SDKs: {sizes.messages} SMS + {sizes.messages} emails, {CONCURRENCY} threads", flush=True)
    sandbox.reset()
    timing = run_json([PYTHON, "bench/raw_sdk.py", sandbox.url, str(sizes.messages), str(CONCURRENCY)])
    n = sizes.messages
    rates = {"sms": n / timing["sms_seconds"], "email": n / timing["email_seconds"],
             "combined": 2 * n / (timing["sms_seconds"] + timing["email_seconds"])}
    cpu_ms = 1000 * (timing["sms_cpu_seconds"] + timing["email_cpu_seconds"]) / (2 * n)
    table.results["raw"] = {**rates, **timing, "cpu_ms_per_message": cpu_ms}
    table.add("1 raw SDKs, no DB", "SMS/s | email/s | both (CPU/msg)", f"{rates['sms']:.0f} | {rates['email']:.0f} | "
              f"{rates['combined']:.0f} msg/s ({cpu_ms:.2f} ms)")
    return rates


def phase_dispatch(table: Table, sandbox: SandboxProcess, dbs: Databases, sizes: Sizes, raw: dict[str, float],
                   kinds: list[str]) -> None:
    for kind in kinds:
        print(f"[2] drip send-due on {kind}: {2 * sizes.messages} due messages", flush=True)
        url = dbs.new(kind)
        try:
            subprocess.run(DRIP + ["init"], env=provider_env(url, sandbox), cwd=ROOT, check=True, capture_output=True)
            now = utcnow()
            seed_enrolled(url, sizes.messages, now - timedelta(seconds=5), midday_zone(now))
            sandbox.reset()
            env = provider_env(url, sandbox, DRIP_WORKER_CONCURRENCY=str(CONCURRENCY), DRIP_BATCH_SIZE="200")
            result = run_json([PYTHON, "bench/dispatch_once.py"], env=env)
            summary = sandbox.summary()
            rate = summary["total"] / result["seconds"]
            ratio = rate / raw["combined"]
            cpu_ms = 1000 * result["cpu_seconds"] / max(1, summary["total"])
            table.results[f"dispatch_{kind}"] = {**result, "rate": rate, "ratio": ratio, "sandbox": summary}
            complete = summary["total"] == 2 * sizes.messages and summary["duplicates"] == 0
            table.add(f"2 send-due, {kind}", "msg/s, share of raw (CPU/msg)",
                      f"{rate:.0f} msg/s, {ratio:.2f} ({cpu_ms:.2f} ms)" + (
                          "" if complete else f" [{summary['total']} delivered, {summary['duplicates']} dup]"),
                      ">= 0.80", ratio >= 0.8 and complete)
        finally:
            dbs.drop(url)


def phase_scale(table: Table, sandbox: SandboxProcess, dbs: Databases, sizes: Sizes) -> None:
    contacts = sizes.scale_contacts
    expected = 2 * contacts
    print(f"[3] 1, 2, 4 workers on PostgreSQL, provider latency 100 ms, {expected} messages", flush=True)
    template = dbs.new("postgresql")
    env0 = provider_env(template, sandbox)
    subprocess.run(DRIP + ["init"], env=env0, cwd=ROOT, check=True, capture_output=True)
    now = utcnow()
    far = now + timedelta(days=365)
    seed_enrolled(template, contacts, now - timedelta(seconds=5), midday_zone(now), due=lambda i: far)
    sandbox.latency(100)
    base_rate = None
    try:
        for count in (1, 2, 4):
            url = dbs.new("postgresql", template=template)
            try:
                sandbox.reset()
                env = provider_env(url, sandbox, DRIP_WORKER_CONCURRENCY=str(CONCURRENCY), DRIP_BATCH_SIZE="100",
                                   DRIP_DISPATCH_INTERVAL="0.25")
                with workers(count, env):
                    from sqlalchemy import create_engine, text

                    engine = create_engine(url)
                    started = time.monotonic()
                    with engine.begin() as connection:
                        connection.execute(text("UPDATE enrollment SET next_due_at = now() - interval '1 second'"))
                    delivered = wait_for(lambda: sandbox.summary()["total"] >= expected, timeout=600, interval=0.1)
                    seconds = time.monotonic() - started
                    # let the last outcomes be recorded before the workers stop
                    wait_for(lambda: _unrecorded(engine) == 0, timeout=30, interval=0.1)
                summary = sandbox.summary()
                with engine.connect() as connection:
                    sent = connection.execute(text("SELECT count(*) FROM message WHERE status = 'sent'")).scalar()
                    left = connection.execute(text(
                        "SELECT count(*) FROM enrollment WHERE next_due_at <= now() AND status = 'active'")).scalar()
                engine.dispose()
                rate = summary["total"] / seconds
                base_rate = base_rate or rate
                speedup = rate / base_rate
                table.results[f"workers_{count}"] = {"seconds": seconds, "rate": rate, "speedup": speedup,
                                                     "sandbox": summary, "db_sent": sent, "left_due": left}
                ok = delivered and summary["duplicates"] == 0 and sent == expected and left == 0
                target = ">= 3x, 0 dup" if count == 4 else "0 dup, none left"
                table.add(f"3 {count} worker{'s' if count > 1 else ''}, PG, 100 ms",
                          "msg/s | speed-up | duplicates | left due",
                          f"{rate:.0f} | {speedup:.2f}x | {summary['duplicates']} | {left}",
                          target, ok and (speedup >= 3 if count == 4 else True))
            finally:
                dbs.drop(url)
    finally:
        sandbox.latency(0)
        dbs.drop(template)


def _unrecorded(engine) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM message WHERE status = 'sending'")).scalar() or 0)


def phase_million(table: Table, sandbox: SandboxProcess, dbs: Databases, sizes: Sizes, kinds: list[str]) -> None:
    from sqlalchemy import text

    from patient_drip.dispatch.queue import claim_due
    from patient_drip.runtime import build_runtime
    from patient_drip.settings import Settings

    n = sizes.million
    label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    for kind in kinds:
        print(f"[4] {label} enrolled contacts on {kind}", flush=True)
        url = dbs.new(kind)
        try:
            subprocess.run(DRIP + ["init"], env=provider_env(url, sandbox), cwd=ROOT, check=True, capture_output=True)
            now = utcnow()
            due_now = max(10_000, n // 100)
            started = time.monotonic()
            # 1 % due now, the rest spread over the next two weeks (what a big clinic looks like)
            seed_enrolled(url, n, now - timedelta(seconds=5), midday_zone(now),
                          due=lambda i: now - timedelta(seconds=1) if i < due_now
                          else now + timedelta(seconds=(i * 7919) % (14 * 86400)))
            seeded = time.monotonic() - started
            # one claim of a batch of 200, as a worker does it
            # the key `drip init` was given (provider_env): the runtime refuses a database with other keys
            settings = Settings(database_url=url, secret_key=provider_env(url, sandbox)["DRIP_SECRET_KEY"],
                                _env_file=None)  # type: ignore[call-arg]
            rt = build_runtime(settings)
            timings = []
            for attempt in range(25):
                claim_started = time.perf_counter()
                ids = claim_due(rt, now, 200, f"bench-claim-{attempt}")
                timings.append((time.perf_counter() - claim_started) * 1000)
                assert len(ids) == 200
            with rt.engine.begin() as connection:  # give them back
                connection.execute(text("UPDATE enrollment SET next_due_at = :now, claimed_by = NULL "
                                        "WHERE claimed_by LIKE 'bench-claim-%'"), {"now": now - timedelta(seconds=1)})
            rt.close()
            median, p95 = statistics.median(timings[5:]), sorted(timings[5:])[int(len(timings[5:]) * 0.95) - 1]
            table.add(f"4 {label} contacts, {kind}", "one claim of 200 (median | p95)",
                      f"{median:.1f} ms | {p95:.1f} ms", "< 10 ms", median < 10)
            # a worker's memory while it works through the due ones
            sandbox.reset()
            env = provider_env(url, sandbox, DRIP_DISPATCH_INTERVAL="0.5")
            with workers(1, env) as (process,):
                time.sleep(15)
                rss = peak_rss_mb(process.pid)
                delivered = sandbox.summary()["total"]
            table.add(f"4 {label} contacts, {kind}", "worker peak RSS after 15 s of sending",
                      f"{rss:.0f} MB ({delivered} sent by then)", "< 300 MB", rss < 300)
            # drip import, end to end (process start included)
            csv_path = dbs.folder / f"people-{kind}.csv"
            write_people_csv(csv_path, sizes.import_rows, start=n + 10)
            import_env = provider_env(url, sandbox)
            started = time.monotonic()
            result = subprocess.run(DRIP + ["import", str(csv_path), "--campaign", "ketamine-consult"],
                                    env=import_env, cwd=ROOT, capture_output=True, text=True)
            seconds = time.monotonic() - started
            if result.returncode != 0:
                raise RuntimeError(result.stderr[-2000:])
            rate = sizes.import_rows / seconds
            line = result.stdout.strip().splitlines()[-1]
            table.results[f"million_{kind}"] = {"seed_seconds": seeded, "claim_ms": timings, "rss_mb": rss,
                                               "import_seconds": seconds, "import_rate": rate, "import": line}
            table.add(f"4 {label} contacts, {kind}", f"drip import {sizes.import_rows // 1000}k rows",
                      f"{rate:,.0f} rows/s ({fmt_duration(seconds)})", ">= 10,000/s", rate >= 10_000)
        finally:
            dbs.drop(url)


def phase_naive(table: Table, sandbox: SandboxProcess, dbs: Databases, sizes: Sizes, kind: str) -> None:
    sandbox.latency(0)
    for count in sizes.naive:
        print(f"[5] naive: {count} APScheduler jobs due at once ({kind} job store)", flush=True)
        url = dbs.new(kind)
        try:
            sandbox.reset()
            result = run_json([PYTHON, "bench/naive_apscheduler.py", url, sandbox.url, str(count)],
                              timeout=max(600, count / 50))
            table.results[f"naive_{count}"] = result
            table.add(f"5 naive, {count // 1000}k jobs due", "sent/s | sent | skipped as missed",
                      f"{result['sent_per_second']:.0f} | {result['executed']} | {result['missed']} "
                      f"({100 * result['missed'] / count:.0f} %) in {fmt_duration(result['drain_seconds'])}")
        finally:
            dbs.drop(url)


def phase_crash(table: Table, dbs: Databases, sizes: Sizes) -> None:
    contacts = sizes.messages // 8
    print(f"[6] SIGKILL x6 during a burst of {contacts * 8} messages, provider 20 ms, 3 workers", flush=True)
    url = dbs.new("postgresql")
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
        found = run_json([PYTHON, "-m", "support.crash_burst", url, "--contacts", str(contacts), "--kills", "6",
                          "--latency-ms", "20", "--concurrency", str(CONCURRENCY), "--workers", "3"], env=env)
    finally:
        dbs.drop(url)
    table.results["crash_burst"] = found
    in_doubt = found["in_doubt_per_kill"]
    ok = found["duplicates"] == 0 and found["undelivered"] == 0 and max(in_doubt or [0]) <= CONCURRENCY
    table.add("6 SIGKILL x6, 20 ms", "duplicates | in doubt per kill | never delivered",
              f"{found['duplicates']} | {', '.join(map(str, in_doubt))} | {found['undelivered']}",
              f"0 | <= {CONCURRENCY} | 0", ok)
    table.add("6 SIGKILL x6, 20 ms", "burst time | sent again, never handed | to staff review",
              f"{found['sent_in_burst']} of {found['messages']} in {found['burst_seconds']:.0f} s | "
              f"{found['requeued']} | {found['needs_review']}")


def guarded(table: Table, phase: str, function: Any, *args: Any) -> Any:
    """Run one phase; a failure (say, the database restarted under us) becomes a row, not the end."""
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 - report and go on with the other phases
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        table.add(f"{phase} (failed)", type(exc).__name__, first[:90])
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a couple of minutes)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="phases to run, e.g. 1,2")
    parser.add_argument("--postgres", default=os.environ.get("DRIP_BENCH_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
                        help="an existing database to connect to for creating the benchmark's databases")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    phases = {int(p) for p in args.only.split(",") if p.strip()}
    sizes = Sizes.for_run(args.quick)
    dbs = Databases(args.postgres)
    have_pg = dbs.postgres_available()
    kinds = ["sqlite", "postgresql"] if have_pg else ["sqlite"]
    if not have_pg:
        print(f"PostgreSQL not reachable at {args.postgres}: PostgreSQL rows are skipped", flush=True)
    table = Table()
    sandbox = SandboxProcess()
    started = time.monotonic()
    load_before = loadavg()
    try:
        raw = guarded(table, "1", phase_raw, table, sandbox, sizes) if phases & {1, 2} else {}
        if 2 in phases and raw:
            for kind in kinds:
                guarded(table, "2", phase_dispatch, table, sandbox, dbs, sizes, raw, [kind])
        if 3 in phases and have_pg:
            guarded(table, "3", phase_scale, table, sandbox, dbs, sizes)
        if 4 in phases:
            for kind in kinds:
                guarded(table, "4", phase_million, table, sandbox, dbs, sizes, [kind])
        if 5 in phases:
            guarded(table, "5", phase_naive, table, sandbox, dbs, sizes, "postgresql" if have_pg else "sqlite")
        if 6 in phases and have_pg:
            guarded(table, "6", phase_crash, table, dbs, sizes)
        if 7 in phases:
            guarded(table, "7", phase_speed_to_lead, table, sandbox, dbs, args.quick, kinds)
    finally:
        sandbox.stop()
        dbs.cleanup()
    elapsed = time.monotonic() - started
    cpus = os.cpu_count()
    print()
    print(f"patient-drip benchmark{' (--quick)' if args.quick else ''}: {cpus} CPUs, load average "
          f"{load_before} before / {loadavg()} after, {fmt_duration(elapsed)}; provider = sandbox on loopback")
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps({"sizes": sizes.__dict__, "results": table.results,
                                         "rows": table.rows, "seconds": elapsed}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
