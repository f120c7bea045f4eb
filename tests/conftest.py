"""Shared fixtures: settings, an isolated database (SQLite always, PostgreSQL when reachable),
a virtual clock, a runtime, a web client and the provider sandbox."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from patient_drip import db
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get(
    "DRIP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# A Monday, 09:30 in Chicago (CST, UTC-6): inside the default send window.
START = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)


@dataclass
class VirtualClock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def _postgres_reachable() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


_PG = _postgres_reachable()


def make_postgres_database() -> Iterator[str]:
    name = f"drip_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, and (where reachable) a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'drip.db'}"
        return
    if not _PG:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (CI must test it)")
        pytest.skip("PostgreSQL not reachable")
    yield from make_postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'drip.db'}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "public_url": "https://clinic.test",
        "secret_key": "test-secret-key-for-links",
        "booking_url": "https://book.clinic.test/consult",
        "clinic_name": "Riverside Wellness",
        "clinic_address": "12 River Road, Springfield, IL 62701",
        "clinic_phone": "+1 217 555 0100",
        "clinic_timezone": "America/Chicago",
        "campaigns_dir": ROOT / "campaigns",
        "templates_dir": ROOT / "templates",
        "policy_dir": ROOT / "policy",
        "worker_concurrency": 1,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


from sandbox_fixture import make_sandbox, sandbox, webhook_sink  # noqa: E402,F401
