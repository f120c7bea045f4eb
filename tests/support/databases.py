"""Test databases: PostgreSQL reachability, fresh PostgreSQL databases, and the migrated templates.

Running Alembic from empty costs 0.1-0.4 s per database, so the schema is migrated once per test
run into a template -- a SQLite file that each test copies, a PostgreSQL database cloned with
``CREATE DATABASE … TEMPLATE`` -- and only the tests about migrations and `drip init` start from
an empty database. A PostgreSQL clone is emptied and reused after each test (creating one costs
about 0.2 s); all of them and the template are dropped when the run ends.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, literal, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from patient_drip import db
from patient_drip.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "DRIP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


POSTGRES_REACHABLE = _postgres_reachable()


def _admin_engine() -> Engine:
    # pre_ping: the engine lives for the whole run, and test_database_trouble restarts PostgreSQL,
    # which leaves its pooled connection dead for whichever test comes next.
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _postgres_url(name: str) -> str:
    return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def _drop_postgres(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        # A test may leave a connection open (a worker process, a runtime it did not close).
        connection.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def make_postgres_database(template: str | None = None) -> Iterator[str]:
    """Yield the URL of a new PostgreSQL database (a clone of `template` when given, else empty);
    drop it when the generator is resumed or closed. Use as ``yield from`` in a fixture."""
    name = f"drip_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    clause = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    try:
        yield _postgres_url(name)
    finally:
        _drop_postgres(admin, name)
        admin.dispose()


def sqlite_url_for(path: Path) -> str:
    return f"sqlite:///{path}"


# The schema as the catalogue describes it (tables, columns, indexes, sequences, constraints) and
# Alembic's version: a reused database must still match the template's.
_SCHEMA_FINGERPRINT = """
SELECT md5(
  (SELECT string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(a.attname, '') || ':'
                     || coalesce(format_type(a.atttypid, a.atttypmod), '') || ':' || coalesce(a.attnotnull::text, ''),
                     ',' ORDER BY c.relname, a.attnum)
     FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = 'public'::regnamespace)
  || (SELECT coalesce(string_agg(conname || pg_get_constraintdef(oid), ',' ORDER BY conname), '')
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace)
  || (SELECT string_agg(version_num, ',') FROM alembic_version))
"""


# Above this many rows a used database is emptied with TRUNCATE rather than DELETE.
_DELETE_AT_MOST = 2_000


def _checkpoint(path: Path) -> None:
    """Fold SQLite's write-ahead log into the file, so that copying the file alone copies it all."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


class Templates:
    """The migrated templates of this test run, each made on first use and removed by `close()`."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._sqlite: Path | None = None
        self._derived: dict[str, Path] = {}
        self._admin_engine: Engine | None = None
        self._postgres: str | None = None  # the template's name
        self._schema = ""  # its fingerprint (_SCHEMA_FINGERPRINT)
        self._databases: list[str] = []  # every clone that exists
        self._idle: list[str] = []  # clones with no rows, ready for the next test

    def _workdir(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="drip-test-templates-"))
        return self._folder

    def sqlite_template(self) -> Path:
        """The migrated SQLite file (schema only, no rows but Alembic's version)."""
        if self._sqlite is None:
            path = self._workdir() / "migrated.db"
            db.upgrade(sqlite_url_for(path))
            _checkpoint(path)
            self._sqlite = path
        return self._sqlite

    def derived_sqlite(self, name: str, prepare: Callable[[str], None]) -> Path:
        """A copy of the migrated SQLite file that `prepare(url)` filled in, made once per run and
        cached under `name` (e.g. "initialised": what `drip init` leaves)."""
        if name not in self._derived:
            path = self._workdir() / f"{name}.db"
            shutil.copyfile(self.sqlite_template(), path)
            prepare(sqlite_url_for(path))
            _checkpoint(path)
            self._derived[name] = path
        return self._derived[name]

    def copy_sqlite(self, path: Path, template: Path | None = None) -> str:
        """Copy a migrated SQLite file (the schema template unless `template` is given) to `path`;
        return its URL."""
        shutil.copyfile(template or self.sqlite_template(), path)
        return sqlite_url_for(path)

    def _admin(self) -> Engine:
        if self._admin_engine is None:
            self._admin_engine = _admin_engine()
        return self._admin_engine

    def postgres_template(self) -> str:
        """The name of the migrated PostgreSQL template database."""
        if self._postgres is None:
            name = f"drip_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            with self._admin().connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                db.upgrade(_postgres_url(name))
                # Both engines use NullPool: no connection to the template stays open, which
                # CREATE DATABASE … TEMPLATE requires.
                engine = create_engine(_postgres_url(name), poolclass=NullPool)
                with engine.connect() as connection:
                    self._schema = connection.execute(text(_SCHEMA_FINGERPRINT)).scalar_one()
                engine.dispose()
            except BaseException:
                _drop_postgres(self._admin(), name)
                raise
            self._postgres = name
        return self._postgres

    @contextmanager
    def postgres(self) -> Iterator[str]:
        """A migrated PostgreSQL database with no rows for the block.

        Creating a database costs more than a typical test (about 0.2 s), so databases are reused:
        afterwards every connection to it is ended and every row deleted, its sequences restarted --
        the state of a fresh clone -- unless the test changed the schema, when it is dropped."""
        name = self._idle.pop() if self._idle else self._clone()
        try:
            yield _postgres_url(name)
        finally:
            if self._emptied(name):
                self._idle.append(name)
            else:
                _drop_postgres(self._admin(), name)
                self._databases.remove(name)

    def _clone(self) -> str:
        name = f"drip_test_{uuid.uuid4().hex[:12]}"
        template = self.postgres_template()
        with self._admin().connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        self._databases.append(name)
        return name

    def _emptied(self, name: str) -> bool:
        """Put `name` back in the state of a fresh clone; False when that is not possible."""
        with self._admin().connect() as connection:
            connection.execute(text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        engine = create_engine(_postgres_url(name), poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if connection.execute(text(_SCHEMA_FINGERPRINT)).scalar_one() != self._schema:
                    return False
                tables = list(reversed(Base.metadata.sorted_tables))
                rows = connection.execute(select(sum((select(func.count()).select_from(table).scalar_subquery()
                                                      for table in tables), literal(0)))).scalar_one()
                if rows > _DELETE_AT_MOST:
                    # TRUNCATE costs a fixed 50-100 ms; DELETE, a few ms for a typical test's rows
                    # but seconds for a bulk import's.
                    names = ", ".join(f'"{table.name}"' for table in tables)
                    connection.execute(text(f"TRUNCATE {names}"))
                else:
                    for table in tables:
                        connection.execute(table.delete())
                connection.execute(text("SELECT setval(oid, 1, false) FROM pg_class "
                                        "WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"))
            return True
        except SQLAlchemyError:
            return False
        finally:
            engine.dispose()

    @contextmanager
    def migrated(self, engine: str, folder: Path, name: str = "drip.db") -> Iterator[str]:
        """A migrated database with no rows for the block: `engine` "sqlite" is a copy of the template
        at `folder / name`, "postgresql" a clone of its template (dropped afterwards)."""
        if engine == "sqlite":
            yield self.copy_sqlite(folder / name)
        else:
            with self.postgres() as url:
                yield url

    def close(self) -> None:
        """Drop every database made from the PostgreSQL template, the template, and the SQLite files."""
        if self._admin_engine is not None:
            for name in [*self._databases, *filter(None, [self._postgres])]:
                _drop_postgres(self._admin_engine, name)
            self._admin_engine.dispose()
            self._admin_engine = None
            self._databases, self._idle, self._postgres = [], [], None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = self._sqlite = None
            self._derived.clear()


# One per test run: conftest closes it when the session ends.
TEMPLATES = Templates()
