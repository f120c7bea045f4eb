"""Database engine, sessions and schema migrations.

SQLite is the embedded default: WAL so readers do not block the dispatcher, a busy timeout so
concurrent local processes wait instead of failing, and foreign keys on. PostgreSQL is the
production option; several workers on several machines share one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from models import KeyValue

ROOT = Path(__file__).resolve().parent
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for `url`, with SQLite tuned for several local processes."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        # pysqlite's own transaction handling delays BEGIN and cannot do BEGIN IMMEDIATE; take
        # control of it (SQLAlchemy's documented recipe) so claims can lock up front.
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # survive a PostgreSQL restart: stale connections are replaced
        pool_recycle=1800,
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # IMMEDIATE by default: a DEFERRED transaction that reads and then writes cannot wait for the
    # lock (SQLite returns "database is locked" at once rather than risk a deadlock), so under
    # concurrent webhooks and dispatch threads every transaction takes the write lock up front and
    # waits its turn (busy_timeout). WAL keeps plain readers outside transactions unaffected.
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction takes the write lock at once on SQLite (BEGIN IMMEDIATE).

    Used for claims: two local processes never read the same due rows and then both update them.
    On PostgreSQL it is an ordinary transaction (claims there use FOR UPDATE SKIP LOCKED).
    """
    session = factory()
    try:
        # Must be the first use of the session: the option is read when the transaction begins.
        session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every migration (harmless when already at head)."""
    command.upgrade(alembic_config(url), "head")


def schema_is_current(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version") and inspect(engine).has_table("message")


def get_kv(session: Session, key: str) -> str | None:
    row = session.get(KeyValue, key)
    return row.value if row else None


def set_kv(session: Session, key: str, value: str, now: datetime) -> None:
    row = session.get(KeyValue, key)
    if row is None:
        session.add(KeyValue(key=key, value=value, updated_at=now))
    else:
        row.value = value
        row.updated_at = now


def delete_kv(session: Session, key: str) -> None:
    row = session.get(KeyValue, key)
    if row is not None:
        session.delete(row)
