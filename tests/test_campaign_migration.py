"""Moving in-flight people onto a newer timing version (`content.campaign_migration`), on a virtual
clock, SQLite and PostgreSQL: the preview counts who would receive, skip, repeat or get a step earlier
or later; the move reschedules the step each person is at, is audited and idempotent; and with the
dispatcher, nobody is ever sent a step twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from patient_drip.content.campaign_migration import (MigrationInvalid, in_flight_versions, load_version,
                                                     migrate_in_flight, migration_preview)
from patient_drip.content.campaign_versions import format_delay, save_version
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Enrollment, MessageStatus
from patient_drip.runtime import Runtime
from patient_drip.settings import Settings
from support.builders import VirtualClock, add_contact, make_settings, messages_for, run_until_done
from support.journeys import LINEAR, write_campaigns

CAMPAIGN = "short-course"
ACTOR = "marketing@clinic.test"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, campaigns_dir=write_campaigns(tmp_path / "campaigns", LINEAR))


def _save(rt: Runtime, clock: VirtualClock, off: set[str] = frozenset(), **delays: str) -> int:  # type: ignore[assignment]
    campaign = rt.campaign(CAMPAIGN)
    form = {step.id: format_delay(step.delay) for step in campaign.steps}
    form.update({key.replace("_", "-"): value for key, value in delays.items()})
    with rt.sessions() as session, session.begin():
        saved = save_version(session, campaign, form, {s.id for s in campaign.steps} - off, "test", ACTOR, clock.now)
    rt.refresh()
    return saved.version


def _people(rt: Runtime, clock: VirtualClock, count: int) -> list[int]:
    return [add_contact(rt, clock.now, email=f"p{n}@example.com", phone=f"+1312555014{n}", campaign=CAMPAIGN)
            for n in range(count)]


def _file(rt: Runtime):  # type: ignore[no-untyped-def]
    return rt.campaigns.files[CAMPAIGN]  # type: ignore[attr-defined]


def test_the_preview_counts_who_would_receive_skip_repeat_or_move_earlier_or_later(rt, clock):
    _people(rt, clock, 3)
    Dispatcher(rt, "w").run_once(clock.now)  # hello-email goes; all three wait for middle-email
    assert _save(rt, clock, off={"checkin-email"}, middle_email="3d", last_email="5d") == 2
    add_contact(rt, clock.now, email="new@example.com", phone="+13125550199", campaign=CAMPAIGN)
    with rt.sessions() as session:
        assert in_flight_versions(session, CAMPAIGN) == {1: 3, 2: 1}
        preview = migration_preview(session, load_version(session, _file(rt), 1), load_version(session, _file(rt), 2))
    steps = {step.step_id: step for step in preview.steps}
    assert preview.people == 3 and preview.paused == 0
    assert (steps["hello-email"].ahead, steps["hello-email"].changed) == (0, False)  # behind them: sent
    assert (steps["middle-email"].later, steps["middle-email"].change) == (3, "2d → 3d")
    assert (steps["checkin-email"].skip, steps["checkin-email"].change) == (3, "turned off")
    assert steps["checkin-email"].earlier == steps["checkin-email"].later == 0  # skipped, not moved
    assert (steps["last-email"].earlier, steps["last-email"].change) == (3, "6d → 5d")
    assert preview.total("repeat") == 0 and preview.total("receive") == 0
    assert "keyed by step" in preview.repeat_note


def test_a_step_turned_back_on_is_received_by_those_it_is_still_ahead_of(rt, clock):
    _save(rt, clock, off={"checkin-email"})
    _people(rt, clock, 2)  # on version 2: checkin-email off for them
    Dispatcher(rt, "w").run_once(clock.now)
    _save(rt, clock)  # version 3: everything on again
    with rt.sessions() as session:
        preview = migration_preview(session, load_version(session, _file(rt), 2), load_version(session, _file(rt), 3))
    steps = {step.step_id: step for step in preview.steps}
    assert steps["checkin-email"].receive == 2 and steps["hello-email"].receive == 0


def test_moving_reschedules_the_current_step_is_audited_and_idempotent(rt, clock):
    ids = _people(rt, clock, 2)
    Dispatcher(rt, "w").run_once(clock.now)
    _save(rt, clock, middle_email="3d")
    clock.advance(timedelta(hours=1))
    with rt.sessions() as session, session.begin():
        result = migrate_in_flight(session, _file(rt), 1, 2, ACTOR, clock.now, note="kinder spacing for everyone")
    assert (result.moved, result.rescheduled, result.left) == (2, 2, 0)
    with rt.sessions() as session:
        rows = session.scalars(select(Enrollment).where(Enrollment.contact_id.in_(ids))).all()
        assert {row.campaign_version for row in rows} == {2}
        assert all(row.next_due_at == row.enrolled_at + timedelta(days=3) for row in rows)
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "campaign_version_migrated"))
        assert entry is not None and entry.actor == ACTOR
        assert entry.detail == {"campaign": CAMPAIGN, "from_version": 1, "to_version": 2, "moved": 2,
                                "rescheduled": 2, "left": 0, "note": "kinder spacing for everyone"}
        assert in_flight_versions(session, CAMPAIGN) == {2: 2}
    with rt.sessions() as session, session.begin():  # again: nobody left on version 1, nothing happens
        again = migrate_in_flight(session, _file(rt), 1, 2, ACTOR, clock.now, note="twice")
    assert again.moved == 0
    with rt.sessions() as session:
        assert len(session.scalars(select(AuditEntry).where(AuditEntry.action == "campaign_version_migrated")).all()) == 1


def test_a_move_to_a_version_that_does_not_exist_is_refused(rt, clock):
    _people(rt, clock, 1)
    with rt.sessions() as session, session.begin(), pytest.raises(MigrationInvalid) as caught:
        migrate_in_flight(session, _file(rt), 1, 7, ACTOR, clock.now)
    assert "no version 7" in caught.value.problems["to"]


def test_moving_never_sends_a_step_twice(rt, clock):
    ids = _people(rt, clock, 2)
    Dispatcher(rt, "w").run_once(clock.now)  # hello-email went out under version 1
    clock.advance(timedelta(days=2, hours=1))
    Dispatcher(rt, "w").run_once(clock.now)  # middle-email (day 2) went too; both wait for checkin-email
    assert {m.step_id for m in messages_for(rt, ids[0])} == {"hello-email", "middle-email"}
    # Version 2 moves the two steps they already had later and turns checkin-email off.
    _save(rt, clock, off={"checkin-email"}, hello_email="1d", middle_email="3d")
    with rt.sessions() as session, session.begin():
        assert migrate_in_flight(session, _file(rt), 1, 2, ACTOR, clock.now).moved == 2
    run_until_done(rt, clock)
    for contact_id in ids:
        messages = messages_for(rt, contact_id)
        assert Counter(m.step_id for m in messages) == {"hello-email": 1, "middle-email": 1, "checkin-email": 1,
                                                         "last-email": 1}
        by_step = {m.step_id: m for m in messages}
        assert by_step["checkin-email"].status == MessageStatus.SKIPPED
        assert by_step["checkin-email"].last_error == "step turned off in version 2"
        assert by_step["last-email"].status == MessageStatus.SENT
