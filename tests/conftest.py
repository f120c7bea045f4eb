"""Shared fixtures: settings, a migrated database (SQLite always, PostgreSQL when reachable) or an
empty one, a virtual clock, a runtime, the provider sandbox, and `srt`/`client` (an initialised SQLite runtime
and a test client of the whole app on it, for the staff UI and API tests). The builders behind them live in
the `support` package; `ROOT`, `START`, `VirtualClock` and `make_settings` are re-exported here
for scripts that tests run in a child process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from patient_drip.runtime import Runtime, build_runtime
from patient_drip.settings import Settings
from support.builders import ROOT, START, VirtualClock, make_settings
from support.databases import POSTGRES_ADMIN_URL, POSTGRES_REACHABLE, TEMPLATES, make_postgres_database, sqlite_url_for
from support.sandbox import make_sandbox, sandbox, webhook_sink
from support.staff import client, srt

# Fixtures defined in support modules, and the builders a child-process script may import from here.
__all__ = ["ROOT", "START", "VirtualClock", "make_settings", "make_sandbox", "sandbox", "webhook_sink", "client", "srt"]

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", autouse=True)
def _migrated_templates() -> Iterator[None]:
    """Drop this run's template databases when the session ends (they are made on first use)."""
    yield
    TEMPLATES.close()


def _require_postgres() -> None:
    if not POSTGRES_REACHABLE:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (CI must test it)")
        pytest.skip("PostgreSQL not reachable")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database with no rows: a SQLite file, and (where reachable) a PostgreSQL database."""
    if request.param == "postgresql":
        _require_postgres()
    with TEMPLATES.migrated(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A migrated PostgreSQL database with no rows, for what only PostgreSQL has (LISTEN/NOTIFY)."""
    _require_postgres()
    with TEMPLATES.migrated("postgresql", tmp_path) as url:
        yield url


@pytest.fixture(params=ENGINES)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema): for the tests of migrations and of `drip init`."""
    if request.param == "sqlite":
        yield sqlite_url_for(tmp_path / "drip.db")
        return
    _require_postgres()
    yield from make_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file with no rows."""
    return TEMPLATES.copy_sqlite(tmp_path / "drip.db")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()



BROWSER_SKIPPED = ROOT / "test-artifacts" / "browser-skipped.txt"  # `make test` prints it last


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """One clear line when the browser tests could not run here (no Chromium or no Playwright): a green
    run without them has not seen the staff UI in a browser. The Makefile repeats it as its last line."""
    if hasattr(config, "workerinput") or config.getoption("markexpr", "") == "exclusive":
        return  # an xdist worker, or the second `make test` run (no browser tests in it)
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "browser" in getattr(report, "keywords", {})]
    BROWSER_SKIPPED.unlink(missing_ok=True)
    if skipped:
        line = (f"BROWSER TESTS SKIPPED: {len(skipped)} browser test(s) did not run (no Chromium at "
                "/usr/bin/chromium or no Playwright). Install Chromium with `apt-get install chromium` "
                "(`.ci/run` does); `make test` installs Playwright.")
        terminalreporter.write_line(line, yellow=True, bold=True)
        BROWSER_SKIPPED.parent.mkdir(exist_ok=True)
        BROWSER_SKIPPED.write_text(line + "\n")
