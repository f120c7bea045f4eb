"""`drip migrate-data --from URL --to URL`: move an installation to another database.

The usual move is from the embedded SQLite file to PostgreSQL when one machine is no longer
enough (docs/scaling.md). The target gets the current schema (Alembic), then every table is copied
in foreign-key order, in batches read by primary key (memory stays flat whatever the size), written
at driver speed (COPY on PostgreSQL), then PostgreSQL's id sequences are moved past the copied ids.

Stop `drip serve` and every `drip worker` first: rows written to the source during the copy would
be left behind. The target must be empty — do not run `drip init` on it; this command creates the
schema, and the secret and suppression keys come over with the data (suppression hashes depend on
them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import click
from sqlalchemy import Connection, Integer, MetaData, Table, func, select, text, tuple_
from sqlalchemy.exc import OperationalError, ProgrammingError

from patient_drip import db
from patient_drip.models import Base

BATCH = 5000


class MigrateError(Exception):
    """The copy cannot start or go on; the message says why and what to do."""


@dataclass
class MigrateReport:
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here, as in DRIP_DATABASE_URL."""
    url = url.strip()
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def copy_order(metadata: MetaData = Base.metadata) -> list[Table]:
    """Every table, parents before children (what foreign keys need)."""
    return list(metadata.sorted_tables)


def reset_sequences(connection: Connection, tables: list[Table] | None = None) -> None:
    """Move PostgreSQL's id sequences past the ids present (after rows were inserted with explicit
    ids); nothing to do on SQLite, which takes max(rowid) + 1."""
    if connection.dialect.name != "postgresql":
        return
    for table in tables or copy_order():
        id_column = table.c.get("id")
        if id_column is None or not isinstance(id_column.type, Integer):
            continue
        sequence = connection.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}).scalar()
        if sequence:
            connection.execute(
                text(f'SELECT setval(:s, COALESCE((SELECT MAX(id) FROM "{table.name}"), 0) + 1, false)'),
                {"s": sequence},
            )


def migrate_data(source_url: str, target_url: str, *, batch: int = BATCH,
                 progress: Callable[[str, int, int], None] | None = None) -> MigrateReport:
    """Copy every row of `source_url` into the empty database at `target_url`.

    `progress(table, rows_copied_so_far, rows_in_table)` is called after each batch."""
    source_url, target_url = normalize_url(source_url), normalize_url(target_url)
    if source_url == target_url:
        raise MigrateError("--from and --to are the same database")
    source = db.make_engine(source_url)
    try:
        if not db.schema_is_current(source):
            raise MigrateError(f"{_describe(source_url)} has no patient-drip schema (is it the right database?)")
        source_version = _version(source)
    except (OperationalError, ProgrammingError) as exc:
        source.dispose()
        raise MigrateError(f"cannot read {_describe(source_url)}: {_first_line(exc)}") from None
    try:
        try:
            db.upgrade(target_url)  # creates the schema; harmless when it is there already
        except (OperationalError, ProgrammingError) as exc:
            raise MigrateError(f"cannot open {_describe(target_url)}: {_first_line(exc)}") from None
        target = db.make_engine(target_url)
        try:
            if _version(target) != source_version:
                raise MigrateError(
                    f"the source schema is at revision {source_version}, this version of patient-drip writes "
                    f"{_version(target)}: run `drip init` with DRIP_DATABASE_URL set to the source first")
            tables = copy_order()
            with target.connect() as connection:
                for table in tables:
                    if connection.execute(select(1).select_from(table).limit(1)).first() is not None:
                        raise MigrateError(
                            f"{_describe(target_url)} already has rows in {table.name}; migrate into an empty "
                            "database (do not run `drip init` on it first)")
            report = MigrateReport()
            for table in tables:
                report.rows[table.name] = _copy_table(source, target, table, batch, progress)
            with target.begin() as connection:
                reset_sequences(connection, tables)
            return report
        finally:
            target.dispose()
    finally:
        source.dispose()


def _copy_table(source, target, table: Table, batch: int,  # type: ignore[no-untyped-def]
                progress: Callable[[str, int, int], None] | None) -> int:
    key = list(table.primary_key.columns)
    columns = [column.name for column in table.columns]
    with source.connect() as reader:
        total = reader.execute(select(func.count()).select_from(table)).scalar() or 0
        copied = 0
        if progress:
            progress(table.name, 0, total)
        last: tuple[object, ...] | None = None
        while True:
            # Keyset pagination on the primary key: each batch is an index range scan, and the
            # source is never asked to hold a cursor open across the whole copy.
            query = select(*table.columns).order_by(*key).limit(batch)
            if last is not None:
                if len(key) == 1:
                    query = query.where(key[0] > last[0])
                else:
                    query = query.where(tuple_(*key) > tuple_(*last))
            rows = reader.execute(query).all()
            if not rows:
                break
            with target.begin() as writer:
                db.bulk_insert(writer, table, columns, [tuple(row) for row in rows])
            copied += len(rows)
            last = tuple(getattr(rows[-1], column.name) for column in key)
            if progress:
                progress(table.name, copied, total)
    return copied


def _version(engine) -> str | None:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _describe(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def _first_line(exc: Exception) -> str:
    text_ = str(getattr(exc, "orig", None) or exc)
    return text_.splitlines()[0] if text_ else type(exc).__name__


@click.command("migrate-data")
@click.option("--from", "source_url", required=True, metavar="URL",
              help="The database to copy from, e.g. sqlite:///./drip.db")
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The empty database to copy into, e.g. postgresql+psycopg://drip@db-host/drip")
@click.option("--batch-size", default=BATCH, show_default=True, type=click.IntRange(100, 100_000),
              help="Rows read and written per batch.")
def migrate_data_command(source_url: str, target_url: str, batch_size: int) -> None:
    """Copy every table from one database into an empty one (e.g. SQLite to PostgreSQL).

    Stop `drip serve` and all workers first. The target gets the schema itself: do not run
    `drip init` on it. Afterwards point DRIP_DATABASE_URL at the target."""
    bars: dict[str, object] = {}
    shown: dict[str, int] = {}

    def progress(table: str, copied: int, total: int) -> None:
        if table not in bars:
            for bar in bars.values():
                bar.__exit__(None, None, None)  # type: ignore[attr-defined]
            bars.clear()
            bar = click.progressbar(length=max(total, 1), label=f"{table:<18}", show_pos=True, file=sys.stderr)
            bar.__enter__()
            bars[table], shown[table] = bar, 0
        bars[table].update(copied - shown[table])  # type: ignore[attr-defined]
        shown[table] = copied

    try:
        report = migrate_data(source_url, target_url, batch=batch_size, progress=progress)
    except MigrateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for bar in bars.values():
            bar.__exit__(None, None, None)  # type: ignore[attr-defined]
    click.echo(f"migrate-data: {report.total} rows in {len(report.rows)} tables copied to "
               f"{_describe(normalize_url(target_url))}; now set DRIP_DATABASE_URL to it")
