"""Database engine, sessions and schema migrations.

SQLite is the embedded default: WAL so readers do not block the dispatcher, a busy timeout so
concurrent local processes wait instead of failing, and foreign keys on. PostgreSQL is the
production option; several workers on several machines share one database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from patient_drip.models import KeyValue

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent
SQLITE_BUSY_TIMEOUT_MS = 30_000


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite file database, or None (PostgreSQL, in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def secure_sqlite_file(url: str) -> None:
    """Make the SQLite database file, and its -wal and -shm files, readable by the owner only (0600).

    The file is created here, 0600, before SQLite opens it: SQLite creates the -wal and -shm files
    with the database file's permissions, so they follow. Files an older version left 0644 are
    tightened. PostgreSQL keeps its files in its own data directory (0700 by default)."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except FileNotFoundError:
        return  # the folder does not exist: SQLite's own error ("unable to open") says so on connect
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for `url`, with SQLite tuned for several local processes (its files 0600)."""
    if url.startswith("sqlite"):
        secure_sqlite_file(url)
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


def bulk_insert(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert many rows at driver speed, inside `connection`'s transaction.

    PostgreSQL: `COPY … FROM STDIN` (psycopg formats the rows in C). SQLite: multi-row INSERT
    statements. Values go through each column type's bind processing first, so they are
    stored exactly as an ORM insert would store them (e.g. UTC datetimes, JSON text)."""
    if not rows:
        return
    dbapi = connection.dialect.loaded_dbapi
    try:
        _bulk_insert(connection, table, columns, rows)
    except dbapi.IntegrityError as exc:  # as SQLAlchemy would raise it, so callers catch one type
        raise IntegrityError(f"bulk insert into {table.name}", None, exc) from exc


def _bulk_insert(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    dialect = connection.dialect
    types = [table.c[name].type for name in columns]
    raw = connection.connection.driver_connection
    if dialect.name == "postgresql":
        # COPY's text format: JSON must be text; everything else psycopg dumps itself.
        json_positions = [i for i, type_ in enumerate(types) if isinstance(type_, JSON)]
        names = ", ".join(f'"{name}"' for name in columns)
        dumped: dict[int, tuple[Any, str]] = {}  # id(value) → (value, JSON): shared dicts once
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                if json_positions:
                    row = list(row)
                    for i in json_positions:
                        value = row[i]
                        if value is not None:
                            cached = dumped.get(id(value))
                            if cached is None or cached[0] is not value:
                                cached = dumped[id(value)] = (value, json.dumps(value))
                            row[i] = cached[1]
                copy.write_row(row)
        return
    # Each column's bind processing (datetime → text, JSON → text...), a column at a time: most
    # values repeat (the same `now` on every row, one detail dict shared by thousands of rows), so
    # each distinct one is processed once.
    values = list(zip(*rows))
    for i, type_ in enumerate(types):
        process = type_.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            values[i] = _processed(values[i], process, by_identity=isinstance(type_, JSON))
    processed = list(zip(*values))
    # Multi-row INSERT … VALUES (…), (…): SQLite runs a whole statement's rows in one step, about a
    # third cheaper per row than executemany's step per row (and with the GIL released throughout).
    per_statement = max(1, min(_SQLITE_ROWS_PER_INSERT,
                               raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns)))
    names = ", ".join(f'"{name}"' for name in columns)
    one = "(" + ", ".join("?" for _ in columns) + ")"
    for start in range(0, len(processed), per_statement):
        part = processed[start:start + per_statement]
        raw.execute(f'INSERT INTO "{table.name}" ({names}) VALUES ' + ", ".join([one] * len(part)),
                    list(chain.from_iterable(part)))


_SQLITE_ROWS_PER_INSERT = 500  # past a few hundred rows a statement, longer statements gain nothing


def _processed(values: Sequence[Any], process: Callable[[Any], Any], *, by_identity: bool) -> list[Any]:
    """`[process(v) for v in values]`, calling `process` once per distinct value (the first of equal
    ones, as the row-at-a-time loop this replaces did). A JSON value (a dict: not hashable) is known
    by its identity; the rows hold it, so its id is not reused meanwhile."""
    keys = list(map(id, values)) if by_identity else values
    first = dict(zip(reversed(keys), reversed(values)))  # the first value of each key wins
    done = {key: process(value) for key, value in first.items()}
    return list(map(done.__getitem__, keys))


def allocate_ids(connection: Connection, table: Table, count: int) -> list[int]:
    """`count` new primary keys for `table`, as its own inserts would get them.

    PostgreSQL: from the column's sequence, so concurrent writers never collide. SQLite: the
    next rowids (max + 1, + 2, ...), which is what SQLite itself would assign — only safe inside a
    transaction that holds the write lock (`write_transaction`: BEGIN IMMEDIATE) until it commits."""
    if count == 0:
        return []
    if connection.dialect.name == "postgresql":
        return list(connection.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
            {"table": table.name, "count": count},
        ).scalars())
    highest = connection.execute(select(func.max(table.c.id))).scalar() or 0
    return list(range(highest + 1, highest + 1 + count))


def alembic_config(url: str) -> Config:
    # Imported here: alembic is a third of the start-up time of every `drip` command, and only
    # `drip init` and the migration helpers need it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every migration (harmless when already at head)."""
    secure_sqlite_file(url)
    from alembic import command

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
