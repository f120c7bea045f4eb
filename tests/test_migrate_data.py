"""`drip migrate-data`: an installation moves from SQLite to PostgreSQL (or another SQLite file) whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from patient_drip import db
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.contacts.blocks import suppress
from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.fields import ZoneSource
from patient_drip.migrate_data import copy_order, migrate_data, migrate_data_command
from patient_drip.models import Channel, Contact, Message
from patient_drip.runtime import build_runtime


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return {table.name: [tuple(row) for row in connection.execute(
                select(table).order_by(*table.primary_key.columns))] for table in copy_order()}
    finally:
        engine.dispose()


@pytest.fixture
def source(tmp_path: Path, clock) -> str:  # type: ignore[no-untyped-def]
    url = TEMPLATES.copy_sqlite(tmp_path / "source.db")
    rt = build_runtime(make_settings(url))
    for index in range(5):
        add_contact(rt, clock.now, email=f"m{index}@example.com", phone=f"+1312555{6000 + index}")
    Dispatcher(rt, "w").run_once(clock.now)
    with rt.sessions() as session, session.begin():
        suppress(session, rt.suppression_key, Channel.EMAIL, "gone@example.com", "hard bounce", clock.now)
    rt.close()
    return url


def test_everything_is_copied_and_new_rows_continue_after_the_copied_ids(source, empty_database_url, clock):
    seen: list[tuple[str, int, int]] = []
    report = migrate_data(source, empty_database_url, batch=3, progress=lambda *args: seen.append(args))
    before, after = _rows(source), _rows(empty_database_url)
    assert before == after
    assert report.rows["message"] == 10 and report.rows["contact"] == 5 and report.total == sum(map(len, after.values()))
    assert ("message", 10, 10) in seen
    # the keys came along: suppression still matches, links still verify, new ids do not collide
    rt = build_runtime(make_settings(empty_database_url))
    try:
        with rt.sessions() as session, session.begin():
            data = parse_contact_input({"email": "gone@example.com", "first_name": "G"}, "America/Chicago",
                                       zone_source=ZoneSource.STAFF)
            contact, created = upsert_contact(session, rt.suppression_key, data, clock.now, "test")
            assert created and contact.email_blocked == "suppressed: hard bounce"
            assert contact.id == 6
        with rt.sessions() as session:
            message = session.scalars(select(Message).where(Message.channel == "sms")).first()
            assert rt.tokens.read_booking(message.body_text.split("/b/")[1].split()[0]) == message.id
    finally:
        rt.close()


def test_a_target_with_data_is_refused(source, tmp_path: Path):
    target = f"sqlite:///{tmp_path / 'busy.db'}"
    db.upgrade(target)
    rt = build_runtime(make_settings(target))  # stores its own keys: not empty any more
    rt.close()
    result = CliRunner().invoke(migrate_data_command, ["--from", source, "--to", target])
    assert result.exit_code == 1
    assert "already has rows in kv" in result.output and "do not run `drip init`" in result.output


def test_the_command_reports_what_it_copied(source, tmp_path: Path):
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    result = CliRunner().invoke(migrate_data_command, ["--from", source, "--to", target])
    assert result.exit_code == 0, result.output
    assert "rows in" in result.output and "now set DRIP_DATABASE_URL" in result.output
    with db.make_engine(target).connect() as connection:
        assert connection.execute(select(Contact.email).order_by(Contact.id)).scalars().first() == "m0@example.com"


def test_same_database_or_missing_schema_is_a_clear_error(source, tmp_path: Path):
    runner = CliRunner()
    same = runner.invoke(migrate_data_command, ["--from", source, "--to", source])
    assert same.exit_code == 1 and "same database" in same.output
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    missing = runner.invoke(migrate_data_command, ["--from", empty, "--to", f"sqlite:///{tmp_path / 'x.db'}"])
    assert missing.exit_code == 1 and "no patient-drip schema" in missing.output
