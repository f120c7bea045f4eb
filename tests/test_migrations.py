"""Migrations upgrade an empty database to exactly the models' schema, and re-running is harmless."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from patient_drip import db
from patient_drip.models import Base


def test_upgrade_from_empty_matches_models_and_is_idempotent(empty_database_url):
    db.upgrade(empty_database_url)
    db.upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_send_record_is_unique_per_enrollment_entry_step_channel(empty_database_url):
    db.upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    uniques = inspect(engine).get_unique_constraints("message")
    engine.dispose()
    # One send per step per time through the journey: a re-entry may send it again, nothing else.
    assert any(sorted(u["column_names"]) == ["channel", "enrollment_id", "entry", "step_id"] for u in uniques)
    assert not any(sorted(u["column_names"]) == ["channel", "enrollment_id", "step_id"] for u in uniques)
