"""The bulk import gives exactly what the row-by-row import gives, on both databases, much faster."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from patient_drip import db
from patient_drip.contacts import importer
from support.builders import START, make_settings
from support.databases import TEMPLATES
from patient_drip.contacts.blocks import suppress
from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording, withdraw_consent
from patient_drip.contacts.enrollment import end_enrollments, enroll
from patient_drip.contacts.fields import ZoneSource
from patient_drip.contacts.importer import import_csv, import_csv_rowwise
from patient_drip.models import (AuditEntry, Channel, ConsentMethod, ConsentRecord, Contact, Enrollment, Event, ExitReason,
                                 InboundMessage)
from patient_drip.runtime import Runtime, build_runtime

HEADER = "first_name,last_name,email,phone,timezone,consent_email,consent_sms,source,favourite_colour\n"
TRICKY_ROWS = [
    "Ann,Lee,ann@example.com,+13125550101,,yes,yes,fair,blue",  # new, both channels
    "Bob,Kay,bob@,+13125550102,,yes,no,fair,",  # bad email
    "Cy,Ng,cy@example.com,,America/Denver,yes,maybe,fair,",  # bad consent flag
    "Di,Ox,di@example.com,,,yes,no,fair,",  # email only
    "Ed,Po,ED@Example.COM,,,yes,yes,fair,",  # sms consent without a phone
    ",,,,,yes,yes,fair,",  # neither email nor phone
    "Ann,Again,ann@example.com,,,yes,no,fair,",  # same email again: already enrolled
    "Fay,Ro,fay@example.com,+13125550101,,yes,yes,fair,",  # Ann's phone with a new email: found by phone
    "Gus,Ma,gus@example.com,+13125550103,Nowhere/Town,yes,yes,fair,",  # bad time zone
    "Hal,Jo,hal@example.com,+13125550104,,no,no,fair,",  # no consent: cannot receive
    "Hal,Jo,hal@example.com,+13125550104,,yes,no,fair,",  # the same person, now with consent: created now
    "Old,Timer,old@example.com,+13125550105,,yes,yes,fair,",  # existing contact without enrollment: updated
    "Ex,Ited,exited@example.com,,,yes,no,fair,",  # existing contact whose enrollment ended
    "Sup,Pressed,suppressed@example.com,,,yes,no,fair,",  # suppressed address, email only
    "Sup,Both,suppressed2@example.com,+13125550106,,yes,yes,fair,",  # suppressed email, sms still fine
    "Opt,Out,optout@example.com,,,yes,no,web,",  # opted out earlier, fresh consent lifts it
    "Phone,Clash,old@example.com,+13125550107,,yes,yes,fair,",  # existing email, other phone: already enrolled
    "Other,Phone,nophone@example.com,+13125550108,,yes,yes,fair,",  # existing email w/o phone gains one
    "Taken,Phone,emailonly@example.com,+13125550109,,yes,yes,fair,",  # phone held by another contact
    "Holder,Found,new-holder@example.com,+13125550109,,yes,yes,fair,",  # found by phone, updated
    '"  Spaced   Out ",  Name ,spaced@example.com,(312) 555-0110,,Y,N,  ,',  # normalisation
    "Long," + "x" * 101 + ",long@example.com,,,yes,no,fair,",  # name too long
    "Tz,Given,tz@example.com,+13125550111,Europe/London,yes,yes,fair,",
    "Sms,Only,,+13125550112,,no,yes,fair,",
    "Sms,Only,,+13125550112,,no,yes,fair,",  # duplicate phone-only row
]


def _existing(rt: Runtime, now: datetime) -> None:
    """The same contacts in both databases before the import."""
    campaign = rt.campaign("ketamine-consult")
    with rt.sessions() as session, session.begin():
        def person(email: str | None, phone: str | None, first: str, consent: tuple[str, ...] = ("email",)) -> Contact:
            data = parse_contact_input({"email": email, "phone": phone, "first_name": first}, "America/Chicago",
                                       zone_source=ZoneSource.STAFF, source="seed")
            contact, _ = upsert_contact(session, rt.suppression_key, data, now, "seed")
            for channel in consent:
                grant_consent(session, load_wording(rt.settings.policy_dir), contact,
                              ConsentGrant(Channel(channel), ConsentMethod.STAFF, note="seed"), now, "seed")
            return contact

        person("old@example.com", "+13125550105", "Old", ())
        exited = person("exited@example.com", None, "Ex")
        enroll(session, exited, campaign, now, "seed")
        end_enrollments(session, exited.id, ExitReason.UNSUBSCRIBED, now, "seed")
        suppress(session, rt.suppression_key, Channel.EMAIL, "suppressed@example.com", "hard bounce", now)
        suppress(session, rt.suppression_key, Channel.EMAIL, "suppressed2@example.com", "spam complaint", now)
        optout = person("optout@example.com", None, "Opt")
        withdraw_consent(session, optout, Channel.EMAIL, ConsentMethod.ONE_CLICK, now, "seed")
        person("nophone@example.com", None, "Other")
        person("holder@example.com", "+13125550109", "Holder")
        person("emailonly@example.com", None, "Emma")


def _sorted(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda row: tuple("" if value is None else str(value) for value in row))


def _snapshot(rt: Runtime) -> dict[str, Any]:
    """Every table the import writes, with ids replaced by who they belong to."""
    with rt.sessions() as session:
        contacts = list(session.scalars(select(Contact).order_by(Contact.id)))
        who = {c.id: c.email or c.phone for c in contacts}
        enrollments = {e.id: e for e in session.scalars(select(Enrollment).order_by(Enrollment.id))}
        return {
            "contacts": _sorted(
                (c.email, c.phone, c.first_name, c.last_name, c.timezone, c.source, c.preferred_channel,
                 c.email_consent, c.sms_consent, c.email_blocked, c.sms_blocked, c.created_at, c.updated_at)
                for c in contacts),
            "contact_order": [who[c.id] for c in contacts],
            "consent": _sorted(
                (who[r.contact_id], r.channel, r.action, r.method, r.wording_version, r.wording_text, r.actor,
                 r.occurred_at) for r in session.scalars(select(ConsentRecord).order_by(ConsentRecord.id))),
            "enrollments": _sorted(
                (who[e.contact_id], e.campaign_id, e.status, e.exit_reason, e.step_index, e.enrolled_at,
                 e.next_due_at is not None, e.source) for e in enrollments.values()),
            "events": [
                (e.kind, who.get(e.contact_id), who[enrollments[e.enrollment_id].contact_id] if e.enrollment_id else None,
                 e.detail, e.occurred_at)
                for e in session.scalars(select(Event).order_by(Event.id))],
            "audit": [(a.actor, a.action, who.get(a.contact_id), a.detail, a.created_at)
                      for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))],
        }


@pytest.fixture
def second_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Another migrated database of the same kind."""
    engine = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    with TEMPLATES.migrated(engine, tmp_path, "other.db") as url:
        yield url


def _runtime(url: str) -> Runtime:
    settings = make_settings(url)
    db.upgrade(url)
    return build_runtime(settings)


@pytest.mark.parametrize("now", [START, datetime(2026, 3, 2, 4, 0, tzinfo=timezone.utc)],
                         ids=["inside-window", "outside-window"])
def test_bulk_import_matches_the_row_by_row_import(database_url, second_url, now, monkeypatch):
    monkeypatch.setattr(importer, "CHUNK", 7)  # several chunks, and duplicates across chunk borders
    text = HEADER + "\n".join(TRICKY_ROWS) + "\n"
    bulk_rt, row_rt = _runtime(database_url), _runtime(second_url)
    try:
        reports = []
        for rt, run in ((bulk_rt, import_csv), (row_rt, import_csv_rowwise)):
            _existing(rt, now)
            reports.append(run(rt, io.StringIO(text), rt.campaign("ketamine-consult"), now, "cli:test"))
        bulk, rowwise = reports
        assert bulk == rowwise
        assert (bulk.rows, bulk.enrolled, bulk.created, bulk.updated) == (len(TRICKY_ROWS), 11, 7, 4)
        assert bulk.warnings == ["ignored columns: favourite_colour"]
        messages = {e.line: str(e) for e in bulk.errors}
        assert messages[3].startswith("line 3: email:")
        assert messages[8] == "line 8: Ann Again is already enrolled in ketamine-consult (status active)"
        assert messages[9] == "line 9: Fay Ro is already enrolled in ketamine-consult (status active)"
        assert messages[14] == "line 14: Ex Ited is already enrolled in ketamine-consult (status exited, unsubscribed)"
        assert "cannot receive" in messages[15]
        assert messages[20] == "line 20: phone: this phone number belongs to another contact"
        assert messages[23] == "line 23: last_name: is longer than 100 characters"
        assert _snapshot(bulk_rt) == _snapshot(row_rt)
    finally:
        bulk_rt.close()
        row_rt.close()


def _people(count: int, start: int = 0) -> str:
    lines = [HEADER.replace(",favourite_colour", "").strip()]
    for index in range(start, start + count):
        exchange, line = 200 + index // 10_000, index % 10_000
        lines.append(f"P{index},Q,p{index}@example.com,+1312{exchange:03d}{line:04d},,yes,yes,import")
    return "\n".join(lines) + "\n"


def test_parallel_validation_gives_the_same_report_and_progress_adds_up(rt, clock):
    text = _people(6000) + "Bad,Row,nope@,,,yes,no,x\n"
    seen: list[int] = []
    report = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), clock.now, "cli:test",
                        progress=seen.append, workers=2)
    assert (report.rows, report.enrolled, report.created, report.failed) == (6001, 6000, 6000, 1)
    assert report.errors[0].line == 6002 and report.errors[0].field == "email"
    assert sum(seen) == 6001
    with rt.sessions() as session:
        assert session.query(Enrollment).count() == 6000
        assert session.query(ConsentRecord).count() == 12000


def test_importing_the_same_file_twice_reports_every_row_as_already_enrolled(rt, clock):
    text = _people(300)
    first = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), clock.now, "cli:test")
    again = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), clock.now, "cli:test")
    assert first.enrolled == 300 and again.enrolled == 0 and again.failed == 300
    assert all("already enrolled" in e.message for e in again.errors)
    with rt.sessions() as session:
        assert session.query(Contact).count() == 300 and session.query(ConsentRecord).count() == 600


def test_a_conflicting_insert_falls_back_to_the_row_by_row_path(rt, clock, monkeypatch):
    """Another process creates a contact between our look-up and our insert (PostgreSQL; on SQLite
    the chunk holds the write lock from its first query, so nobody can)."""
    if rt.engine.dialect.name == "sqlite":
        pytest.skip("SQLite chunks run under BEGIN IMMEDIATE: no other writer can interleave")
    text = _people(3)
    original = importer._BulkChunk._load

    def load_then_race(self, rows):  # type: ignore[no-untyped-def]
        original(self, rows)
        with rt.sessions() as session, session.begin():
            data = parse_contact_input({"email": "p1@example.com", "first_name": "Racer"}, "America/Chicago",
                                       zone_source=ZoneSource.STAFF)
            upsert_contact(session, rt.suppression_key, data, clock.now, "other-process")

    monkeypatch.setattr(importer._BulkChunk, "_load", load_then_race)
    report = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), clock.now, "cli:test")
    # p1 existed by the time the row-by-row pass ran: it was updated and enrolled, not duplicated
    assert (report.enrolled, report.created, report.updated, report.failed) == (3, 2, 1, 0)
    with rt.sessions() as session:
        assert session.query(Contact).count() == 3


def _mixed_rows(count: int, seed: int) -> list[str]:
    """A file as clinics send them, shuffled: new people in several zones and texting-law states,
    the existing contacts of `_existing` (enrolled, ended, suppressed, opted out, phone-only...),
    people listed twice (by email, by phone, by both), invalid addresses and flags, given zones."""
    rng = random.Random(seed)
    area_codes = ["312", "305", "206", "410", "405", "212", "808", "907", "208"]  # IL, FL, WA, MD, OK, NY, HI, AK, ID
    existing = ["old@example.com", "exited@example.com", "suppressed@example.com", "suppressed2@example.com",
                "optout@example.com", "nophone@example.com", "emailonly@example.com", "holder@example.com"]
    rows: list[str] = []
    for index in range(count):
        kind = rng.random()
        phone = f"+1{rng.choice(area_codes)}555{index:04d}" if rng.random() < 0.8 else ""
        email = f"mix{index}@example{index % 7}.com" if rng.random() < 0.85 or not phone else ""
        consent_email, consent_sms = rng.choice(["yes", "no", "y", ""]), rng.choice(["yes", "no", "no", "1"])
        zone = rng.choice(["", "", "", "America/Denver", "Europe/London", "Pacific/Honolulu"])
        source = rng.choice(["fair", "web", "", "referral"])
        if kind < 0.08 and rows:  # the same person again, as written before (already enrolled or refused)
            rows.append(rng.choice(rows))
            continue
        if kind < 0.16:
            email = rng.choice(existing)
        elif kind < 0.2:
            email = f"not-an-email-{index}@"
        elif kind < 0.23:
            phone = f"+1555{index:07d}"  # no such area code
        elif kind < 0.26:
            consent_sms = "perhaps"
        elif kind < 0.28:
            zone = "Mars/Olympus"
        rows.append(f"First{index},Last{index % 13},{email},{phone},{zone},{consent_email},{consent_sms},{source},")
    return rows


@pytest.mark.parametrize("now", [START, datetime(2026, 3, 2, 4, 0, tzinfo=timezone.utc),
                                 datetime(2026, 3, 2, 23, 30, tzinfo=timezone.utc)],
                         ids=["inside-window", "night", "evening-texting-laws"])
def test_bulk_import_matches_the_row_by_row_import_on_a_mixed_file(database_url, second_url, now, monkeypatch):
    """Row templates, the first step's time per spread key, the multi-row inserts: the same rows
    as the one-row-at-a-time services, over many chunks (templates reused across chunks), with a
    crisis reply on file for one existing contact."""
    monkeypatch.setattr(importer, "CHUNK", 37)
    text = HEADER + "\n".join(_mixed_rows(400, seed=15)) + "\n"
    bulk_rt, row_rt = _runtime(database_url), _runtime(second_url)
    try:
        reports = []
        for rt, run in ((bulk_rt, import_csv), (row_rt, import_csv_rowwise)):
            _existing(rt, now)
            with rt.sessions() as session, session.begin():
                holder = session.scalar(select(Contact).where(Contact.email == "nophone@example.com"))
                assert holder is not None
                session.add(InboundMessage(contact_id=holder.id, from_number="+13125550199", body="help me",
                                           classification="crisis",
                                           crisis=True, received_at=now))
            reports.append(run(rt, io.StringIO(text), rt.campaign("ketamine-consult"), now, "cli:test"))
        bulk, rowwise = reports
        assert bulk == rowwise
        assert bulk.enrolled > 150 and bulk.failed > 100 and bulk.updated > 0
        assert _snapshot(bulk_rt) == _snapshot(row_rt)
    finally:
        bulk_rt.close()
        row_rt.close()
