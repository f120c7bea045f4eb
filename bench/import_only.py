"""Time `drip import` alone, end to end (process start included), as `bench/run.py` phase 4 does it,
without the million-contact seeding and the worker phases around it.

A database is seeded once per kind with `--existing` enrolled contacts (`seed_enrolled`, as phase 4
does), then each run imports `--rows` new people (`write_people_csv`) into a fresh copy of it
(SQLite: a file copy; PostgreSQL: `CREATE DATABASE … TEMPLATE`), so every run does the same work.
Prints, per run, wall seconds, rows/s, the CPU seconds of the import process and its children
(validation processes included) and of the import process alone; then the median. (The database
server's own CPU, PostgreSQL's, is not in these figures.) `--profile FILE` runs the last import under
cProfile (written per kind as FILE.sqlite / FILE.postgresql, for `python -m pstats`).

Usage: python bench/import_only.py [--rows 100000] [--existing 100000] [--runs 3]
                                   [--kinds sqlite,postgresql] [--postgres URL] [--profile FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402
    DRIP,
    PYTHON,
    ROOT,
    Databases,
    SandboxProcess,
    midday_zone,
    provider_env,
    seed_enrolled,
    utcnow,
    write_people_csv,
)

CAMPAIGN = "ketamine-consult"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_import(url: str, csv_path: Path, sandbox: SandboxProcess,
                profile: Path | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, main process CPU seconds, summary line) of one `drip import`."""
    # As DRIP runs it, plus one line on stderr at exit: the CPU of the import process alone (its
    # validation processes excluded), the part no second core can take over.
    command = [PYTHON, "-c", "import atexit, resource, sys; atexit.register(lambda: print('main-cpu', sum("
               "resource.getrusage(resource.RUSAGE_SELF)[:2]), file=sys.stderr)); sys.argv[0] = 'drip'; "
               "from patient_drip.cli import main; main()", "import", str(csv_path), "--campaign", CAMPAIGN]
    if profile is not None:
        # click's main() ends in sys.exit: run it standalone_mode=False so the profile is written.
        command = [PYTHON, "-c", "import cProfile, sys; out = sys.argv[1]; sys.argv = ['drip', *sys.argv[2:]]; "
                   "from patient_drip.cli import main; cProfile.run('main(standalone_mode=False)', out)",
                   str(profile), "import", str(csv_path), "--campaign", CAMPAIGN]
    cpu_before = _children_cpu()
    started = time.monotonic()
    result = subprocess.run(command, env=provider_env(url, sandbox), cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    main_cpu = next((float(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("main-cpu ")),
                    float("nan"))
    return seconds, cpu, main_cpu, result.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the imported file")
    parser.add_argument("--existing", type=int, default=100_000, help="enrolled contacts already in the database")
    parser.add_argument("--runs", type=int, default=3, help="imports per database kind (each into a fresh copy)")
    parser.add_argument("--kinds", default="sqlite,postgresql", help="database kinds, comma-separated")
    parser.add_argument("--postgres", default=os.environ.get("DRIP_BENCH_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
                        help="an existing database to connect to for creating the benchmark's databases")
    parser.add_argument("--profile", type=Path, help="also run one import under cProfile, written to FILE.<kind>")
    args = parser.parse_args()
    dbs = Databases(args.postgres)
    sandbox = SandboxProcess()  # provider_env wants its URLs; the import itself sends nothing
    try:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            if kind == "postgresql" and not dbs.postgres_available():
                print(f"PostgreSQL not reachable at {args.postgres}: skipped", flush=True)
                continue
            template = dbs.new(kind)
            subprocess.run(DRIP + ["init"], env=provider_env(template, sandbox), cwd=ROOT, check=True,
                           capture_output=True)
            now = utcnow()
            seed_enrolled(template, args.existing, now - timedelta(seconds=5), midday_zone(now))
            csv_path = dbs.folder / f"people-{kind}.csv"
            write_people_csv(csv_path, args.rows, start=args.existing + 10)
            rates, cpus = [], []
            for run in range(args.runs + (1 if args.profile else 0)):
                url = dbs.new(kind, template=template)
                profile = None
                if args.profile and run == args.runs:
                    profile = args.profile.with_name(f"{args.profile.name}.{kind}")
                try:
                    seconds, cpu, main_cpu, line = time_import(url, csv_path, sandbox, profile)
                finally:
                    dbs.drop(url)
                label = "profiled" if profile else f"run {run + 1}"
                print(f"{kind} {label}: {seconds:.2f} s, {args.rows / seconds:,.0f} rows/s, CPU {cpu:.2f} s "
                      f"({1e6 * cpu / args.rows:.0f} µs/row; main process {main_cpu:.2f} s) | {line}", flush=True)
                if profile is None:
                    rates.append(args.rows / seconds)
                    cpus.append(cpu)
            dbs.drop(template)
            if rates:
                print(f"{kind}: median {statistics.median(rates):,.0f} rows/s, CPU {statistics.median(cpus):.2f} s "
                      f"({args.rows:,} rows into {args.existing:,} existing contacts)", flush=True)
    finally:
        sandbox.stop()
        dbs.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
