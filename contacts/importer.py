"""Bulk enrollment from CSV: one bad row is reported with its line number and stops nothing else.

Two paths with the same result, row for row:

* the **bulk path** (`import_csv`): rows are validated in Python (on several processes for a big
  file), then each chunk of `CHUNK` rows is written with a handful of set-based statements — one
  query each for the chunk's existing contacts, their enrollments and the suppression hashes;
  the chunk is then decided in memory, row by row in file order, exactly as the row-by-row path
  would (a later row sees what an earlier one created; a row that fails leaves no trace), and
  written as multi-row INSERTs (contacts, consent records, enrollments, timeline events, audit
  entries) and one executemany UPDATE for existing contacts;
* the **row-by-row path** (`_import_chunk_rowwise`): the ORM services one row at a time inside a
  savepoint. It is the reference the bulk path is tested against, and the fallback for a chunk
  whose INSERT collides with a contact or enrollment another process created meanwhile.

Memory stays flat: the file is streamed, at most a few chunks are in flight.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlalchemy import BigInteger, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip import db
from patient_drip.content.campaign import Campaign
from patient_drip.contacts.fields import FieldError, address_hash
from patient_drip.contacts.enrollment import (
    OPTED_OUT,
    AlreadyEnrolled,
    ConsentGrant,
    ContactInput,
    EnrollmentError,
    enroll,
    grant_consent,
    parse_contact_input,
    upsert_contact,
    usable_channels,
)
from patient_drip.models import (
    AuditEntry,
    Channel,
    ConsentAction,
    ConsentMethod,
    ConsentRecord,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    Suppression,
)
from patient_drip.runtime import Runtime
from patient_drip.content.windows import step_due_at

KNOWN_COLUMNS = ("first_name", "last_name", "email", "phone", "timezone", "consent_email", "consent_sms", "source")
YES = {"yes", "y", "true", "1", "x"}
NO = {"no", "n", "false", "0", ""}
CHUNK = 2000  # rows per write transaction
MAX_FIELD = 10_000
PARALLEL_MIN_ROWS = 4000  # validate on several processes only when the file has at least this many rows
IN_LIST = 900  # values per IN (...) list (SQLite allows 32766 bound parameters; stay well under)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}" if self.field else f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    rows: int = 0
    enrolled: int = 0
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def merge(self, other: ImportReport) -> None:
        self.rows += other.rows
        self.enrolled += other.enrolled
        self.created += other.created
        self.updated += other.updated
        self.errors += other.errors


class ImportFileError(Exception):
    """The file as a whole cannot be imported (no header, no email/phone column, not CSV)."""


def _flag(value: str | None, column: str) -> bool:
    text = (value or "").strip().lower()
    if text in YES:
        return True
    if text in NO:
        return False
    raise FieldError(column, f"{value!r} is not yes or no")


def read_rows(stream: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs. Raises ImportFileError for a file that is not usable."""
    csv.field_size_limit(MAX_FIELD)
    reader = csv.DictReader(stream)
    try:
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ImportFileError(f"line 1: not a CSV header: {exc}") from None
    if not header:
        raise ImportFileError("the file is empty; the first line must be a header such as first_name,email,phone")
    if "email" not in header and "phone" not in header:
        raise ImportFileError(f"line 1: the header needs an email or phone column (found: {', '.join(header)})")
    reader.fieldnames = header

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, {"__error__": str(exc)}
                continue
            yield reader.line_num, {key: (value or "") for key, value in row.items() if isinstance(key, str)}

    return header, rows()


# -- validation (pure; runs in worker processes for big files) ---------------------------------------


class ValidRow(NamedTuple):
    """A row that passed validation: the `ContactInput` fields plus the consent it states.

    A plain tuple, so that sending thousands of them back from a validation process is cheap."""

    line: int
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    timezone: str
    source: str
    preferred_channel: str
    consent_email: bool
    consent_sms: bool

    def contact_input(self) -> ContactInput:
        return ContactInput(email=self.email, phone=self.phone, first_name=self.first_name,
                            last_name=self.last_name, timezone=self.timezone, source=self.source,
                            preferred_channel=self.preferred_channel)


def validate_row(line: int, row: dict[str, str], clinic_timezone: str) -> ValidRow | RowError:
    """One CSV row → the contact it describes and the consent it states, or the error to report."""
    if "__error__" in row:
        return RowError(line, "", f"unreadable CSV row: {row['__error__']}")
    if any(len(value) > MAX_FIELD for value in row.values()):
        return RowError(line, "", "a field is too long")
    try:
        data = parse_contact_input(row, clinic_timezone, source=row.get("source") or "import")
        consent_email = _flag(row.get("consent_email"), "consent_email")
        consent_sms = _flag(row.get("consent_sms"), "consent_sms")
        if consent_sms and not data.phone:
            raise FieldError("consent_sms", "is yes but the row has no phone number")
    except FieldError as exc:
        return RowError(line, exc.field, exc.message)
    return ValidRow(line, data.email, data.phone, data.first_name, data.last_name, data.timezone, data.source,
                    data.preferred_channel, consent_email, consent_sms)


def validate_rows(rows: list[tuple[int, dict[str, str]]], clinic_timezone: str) -> list[ValidRow | RowError]:
    return [validate_row(line, row, clinic_timezone) for line, row in rows]


def _chunks(rows: Iterable[tuple[int, dict[str, str]]], size: int) -> Iterator[list[tuple[int, dict[str, str]]]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def default_workers() -> int:
    """Validation processes for a big import: the cores but the one that writes (0: validate here)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _validated_chunks(chunks: Iterator[list[tuple[int, dict[str, str]]]], clinic_timezone: str,
                      workers: int) -> Iterator[tuple[list[tuple[int, dict[str, str]]], list[ValidRow | RowError]]]:
    """(raw chunk, validated chunk) in file order; with `workers` ≥ 1, validated ahead on that many
    processes while this one writes.

    Parsing email addresses and phone numbers (email-validator, phonenumbers) is ~150 µs a row,
    most of an import's CPU time: spread over processes it overlaps with the database writes."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    big = second is not None and len(first) + len(second) >= PARALLEL_MIN_ROWS
    # Forking is only safe from a process's main thread (the staff UI imports in a thread).
    if workers < 1 or not big or threading.current_thread() is not threading.main_thread():
        yield first, validate_rows(first, clinic_timezone)
        if second is not None:
            yield second, validate_rows(second, clinic_timezone)
        for chunk in chunks:
            yield chunk, validate_rows(chunk, clinic_timezone)
        return
    # The first chunk here: it also loads the phone-number metadata the forked processes inherit.
    yield first, validate_rows(first, clinic_timezone)
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queue: list[tuple[list[tuple[int, dict[str, str]]], Future[list[ValidRow | RowError]]]] = []

        def submit(chunk: list[tuple[int, dict[str, str]]]) -> None:
            queue.append((chunk, pool.submit(validate_rows, chunk, clinic_timezone)))

        assert second is not None
        submit(second)
        for chunk in chunks:
            submit(chunk)
            while len(queue) > workers * 2:  # bounded look-ahead: memory stays flat
                raw, future = queue.pop(0)
                yield raw, future.result()
        while queue:
            raw, future = queue.pop(0)
            yield raw, future.result()


def import_csv(
    rt: Runtime,
    stream: IO[str],
    campaign: Campaign,
    now: datetime,
    actor: str,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Create or update each row's contact, record the consent the row states, and enroll it.

    `workers` validation processes are used for files of `PARALLEL_MIN_ROWS` rows or more when
    called from a main thread (default: `default_workers()`)."""
    report = ImportReport()
    header, rows = read_rows(stream)
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if unknown:
        report.warnings.append(f"ignored columns: {', '.join(unknown)}")
    workers = default_workers() if workers is None else workers
    for raw, validated in _validated_chunks(_chunks(rows, CHUNK), rt.settings.clinic_timezone, workers):
        report.merge(_import_chunk(rt, raw, validated, campaign, now, actor))
        if progress:
            progress(len(raw))
    return report


def _import_chunk(rt: Runtime, raw: list[tuple[int, dict[str, str]]], validated: list[ValidRow | RowError],
                  campaign: Campaign, now: datetime, actor: str) -> ImportReport:
    try:
        # BEGIN IMMEDIATE on SQLite: what we look up cannot change before we write.
        with db.write_transaction(rt.sessions) as session:
            return _BulkChunk(session, rt, campaign, now, actor).run(validated)
    except IntegrityError:
        # Another process created one of these contacts or enrollments after we looked: redo the
        # chunk row by row, where each row sees the other's work and reports it like any other.
        return _import_chunk_rowwise(rt, raw, campaign, now, actor)


# -- the bulk path ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _ContactState:
    """A contact as the row-by-row services would see it at this point of the chunk."""

    id: int | None
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    timezone: str
    source: str
    preferred_channel: str
    email_consent: bool
    sms_consent: bool
    email_blocked: str | None
    sms_blocked: str | None
    key: int = 0  # identity within the chunk (new contacts have no id yet)

    @property
    def display_name(self) -> str:  # Contact.display_name
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.phone or f"contact #{self.id}"


_CONTACT_COLUMNS = (Contact.id, Contact.email, Contact.phone, Contact.first_name, Contact.last_name, Contact.timezone,
                    Contact.source, Contact.preferred_channel, Contact.email_consent, Contact.sms_consent,
                    Contact.email_blocked, Contact.sms_blocked)


@dataclass(slots=True)
class _Accepted:
    row: ValidRow
    contact: _ContactState
    created: bool
    grants: list[Channel]


class _BulkChunk:
    """Decide one chunk in memory with the row-by-row rules, then write it set-based."""

    def __init__(self, session: Session, rt: Runtime, campaign: Campaign, now: datetime, actor: str) -> None:
        self.session, self.rt, self.campaign, self.now, self.actor = session, rt, campaign, now, actor
        self.by_email: dict[str, _ContactState] = {}
        self.by_phone: dict[str, _ContactState] = {}
        self.enrolled: dict[int, tuple[str, str | None]] = {}  # contact key → (status, exit reason)
        self.suppressed: dict[tuple[str, str], str] = {}
        self._keys = 0

    def _new_key(self) -> int:
        self._keys += 1
        return self._keys

    def run(self, validated: list[ValidRow | RowError]) -> ImportReport:
        report = ImportReport(rows=len(validated))
        rows = [item for item in validated if isinstance(item, ValidRow)]
        self._load(rows)
        accepted: list[_Accepted] = []
        for item in validated:
            if isinstance(item, RowError):
                report.errors.append(item)
                continue
            outcome = self._decide(item)
            if isinstance(outcome, RowError):
                report.errors.append(outcome)
                continue
            accepted.append(outcome)
            report.enrolled += 1
            report.created += int(outcome.created)
            report.updated += int(not outcome.created)
        self._write(accepted)
        return report

    # loading ----------------------------------------------------------------------------------

    def _load(self, rows: list[ValidRow]) -> None:
        session = self.session
        emails = sorted({r.email for r in rows if r.email})
        phones = sorted({r.phone for r in rows if r.phone})
        found: dict[int, _ContactState] = {}
        for column, values in ((Contact.email, emails), (Contact.phone, phones)):
            for part in _parts(values, session):
                for record in session.execute(select(*_CONTACT_COLUMNS).where(_in(column, part, session))):
                    if record.id not in found:
                        found[record.id] = _ContactState(*record, key=self._new_key())
        for state in found.values():
            if state.email:
                self.by_email[state.email] = state
            if state.phone:
                self.by_phone[state.phone] = state
        key_of = {state.id: state.key for state in found.values()}
        for part in _parts(sorted(key_of), session):
            for contact_id, status, reason in session.execute(
                select(Enrollment.contact_id, Enrollment.status, Enrollment.exit_reason).where(
                    _in(Enrollment.contact_id, part, session), Enrollment.campaign_id == self.campaign.id)
            ):
                self.enrolled[key_of[contact_id]] = (status, reason)
        # Suppression hashes of every address a contact of this chunk can end up with.
        addresses = {(str(Channel.EMAIL), e) for e in emails} | {(str(Channel.SMS), p) for p in phones}
        for state in found.values():
            if state.email:
                addresses.add((str(Channel.EMAIL), state.email))
            if state.phone:
                addresses.add((str(Channel.SMS), state.phone))
        secret = self.rt.suppression_key
        by_hash = {address_hash(secret, channel, value): (channel, value) for channel, value in addresses}
        for part in _parts(sorted(by_hash), session):
            for channel, digest, reason in session.execute(
                select(Suppression.channel, Suppression.value_hash, Suppression.reason).where(
                    _in(Suppression.value_hash, part, session))
            ):
                address = by_hash.get(digest)
                if address is not None and address[0] == channel:
                    self.suppressed[address] = reason

    # deciding (enrollment.upsert_contact + grant_consent + enroll, in memory) -------------------------

    def _decide(self, row: ValidRow) -> _Accepted | RowError:
        data = row
        found = self.by_email.get(data.email) if data.email else None
        if found is None and data.phone:
            found = self.by_phone.get(data.phone)
        if data.phone:
            holder = self.by_phone.get(data.phone)
            if holder is not None and found is not None and holder is not found:
                return RowError(row.line, "phone", "this phone number belongs to another contact")
        created = found is None
        if found is None:
            contact = _ContactState(
                id=None, email=data.email, phone=data.phone, first_name=data.first_name, last_name=data.last_name,
                timezone=data.timezone, source=data.source, preferred_channel=data.preferred_channel,
                email_consent=False, sms_consent=False, email_blocked=None, sms_blocked=None, key=self._new_key(),
            )
        else:
            contact = replace(found)  # changes stay on the copy unless the row succeeds
            if data.email and not contact.email:
                contact.email = data.email
            if data.phone and contact.phone != data.phone and contact.phone is None:
                contact.phone = data.phone
            contact.first_name = data.first_name or contact.first_name
            contact.last_name = data.last_name or contact.last_name
            contact.timezone = data.timezone or contact.timezone
            contact.preferred_channel = data.preferred_channel or contact.preferred_channel
        for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone)):
            reason = self.suppressed.get((str(channel), value)) if value else None
            if reason:
                _block(contact, channel, f"suppressed: {reason}")
        grants = [channel for channel, given in ((Channel.EMAIL, row.consent_email), (Channel.SMS, row.consent_sms))
                  if given]
        for channel in grants:
            if channel == Channel.EMAIL:
                contact.email_consent = True
                if contact.email_blocked and contact.email_blocked.startswith(OPTED_OUT):
                    contact.email_blocked = None
            else:
                contact.sms_consent = True
                if contact.sms_blocked and contact.sms_blocked.startswith(OPTED_OUT):
                    contact.sms_blocked = None
        existing = self.enrolled.get(contact.key)
        if existing is not None:
            status, reason = existing
            return RowError(row.line, "", str(AlreadyEnrolled(
                f"{contact.display_name} is already enrolled in {self.campaign.id} (status {status}"
                + (f", {reason}" if reason else "") + ")")))
        if not usable_channels(contact, self.campaign):  # type: ignore[arg-type]
            return RowError(row.line, "", str(EnrollmentError(
                f"{contact.display_name} cannot receive {self.campaign.id}: no email or SMS the contact agreed to "
                "and has not opted out of (record consent first)")))
        # The row succeeds: its contact becomes what later rows of the chunk see.
        if found is not None and found.email and found.email != contact.email:
            self.by_email.pop(found.email, None)
        if contact.email:
            self.by_email[contact.email] = contact
        if contact.phone:
            self.by_phone[contact.phone] = contact
        self.enrolled[contact.key] = (str(EnrollmentStatus.ACTIVE), None)
        return _Accepted(row, contact, created, grants)

    # writing ------------------------------------------------------------------------------------

    def _write(self, accepted: list[_Accepted]) -> None:
        if not accepted:
            return
        session, now, actor, campaign = self.session, self.now, self.actor, self.campaign
        connection = session.connection()
        new = [a for a in accepted if a.created]
        if new:
            for item, contact_id in zip(new, db.allocate_ids(connection, Contact.__table__, len(new)), strict=True):
                item.contact.id = contact_id
            db.bulk_insert(connection, Contact.__table__, _CONTACT_INSERT, [
                (a.contact.id, a.contact.email, a.contact.phone, a.contact.first_name, a.contact.last_name,
                 a.contact.timezone, a.contact.source, a.contact.preferred_channel, a.contact.email_consent,
                 a.contact.sms_consent, a.contact.email_blocked, a.contact.sms_blocked, now, now) for a in new])
        changed = [a for a in accepted if not a.created]
        if changed:
            table = Contact.__table__
            columns = ("email", "phone", "first_name", "last_name", "timezone", "preferred_channel",
                       "email_consent", "sms_consent", "email_blocked", "sms_blocked")
            connection.execute(
                table.update().where(table.c.id == bindparam("b_id")).values(
                    {name: bindparam(f"b_{name}") for name in columns}
                    | {"updated_at": bindparam("b_updated_at", type_=table.c.updated_at.type)}),
                [{f"b_{name}": getattr(a.contact, name) for name in columns}
                 | {"b_id": a.contact.id, "b_updated_at": now} for a in changed],
            )
        granted, method = str(ConsentAction.GRANTED), str(ConsentMethod.IMPORT)
        consent: list[tuple[Any, ...]] = []
        for item in accepted:
            wording = f"consent stated in the imported file (source: {item.row.source or 'import'})"
            consent += [(item.contact.id, str(channel), granted, method, wording, actor, "", now)
                        for channel in item.grants]
        db.bulk_insert(connection, ConsentRecord.__table__, _CONSENT_INSERT, consent)
        enrollment_ids = db.allocate_ids(connection, Enrollment.__table__, len(accepted))
        active = str(EnrollmentStatus.ACTIVE)
        # The first step's time depends on the enrollment id only when it falls outside the send
        # window (the id spreads the crowd waiting for the window to open): once per zone otherwise.
        by_zone: dict[str, datetime | None] = {}

        def first_due(zone: str, enrollment_id: int) -> datetime | None:
            if zone not in by_zone:
                due = step_due_at(campaign, 0, now, zone, 0)
                by_zone[zone] = due if due == step_due_at(campaign, 0, now, zone, 1) else _PER_ID
            shared = by_zone[zone]
            return step_due_at(campaign, 0, now, zone, enrollment_id) if shared is _PER_ID else shared

        db.bulk_insert(connection, Enrollment.__table__, _ENROLLMENT_INSERT, [
            (enrollment_id, item.contact.id, campaign.id, active, 0, now, first_due(item.contact.timezone, enrollment_id),
             (item.row.source or "import")[:64])
            for item, enrollment_id in zip(accepted, enrollment_ids, strict=True)])
        events: list[tuple[Any, ...]] = []
        audits: list[tuple[Any, ...]] = []
        for item, enrollment_id in zip(accepted, enrollment_ids, strict=True):
            contact_id = item.contact.id
            if item.created:
                events.append(_event("contact_created", now, contact_id, None, source=item.row.source, actor=actor))
            for channel in item.grants:
                events.append(_event("consent_granted", now, contact_id, None, channel=str(channel),
                                     method=str(ConsentMethod.IMPORT), wording_version=None))
                audits.append(_audit(actor, "consent_granted", now, contact_id, channel=str(channel),
                                     method=str(ConsentMethod.IMPORT)))
            events.append(_event("enrolled", now, contact_id, enrollment_id, campaign=campaign.id))
            audits.append(_audit(actor, "enrolled", now, contact_id, campaign=campaign.id))
        db.bulk_insert(connection, Event.__table__, _EVENT_INSERT, events)
        db.bulk_insert(connection, AuditEntry.__table__, _AUDIT_INSERT, audits)


_PER_ID: Any = object()
_CONTACT_INSERT = ("id", "email", "phone", "first_name", "last_name", "timezone", "source", "preferred_channel",
                   "email_consent", "sms_consent", "email_blocked", "sms_blocked", "created_at", "updated_at")
_CONSENT_INSERT = ("contact_id", "channel", "action", "method", "wording_text", "actor", "note", "occurred_at")
_ENROLLMENT_INSERT = ("id", "contact_id", "campaign_id", "status", "step_index", "enrolled_at", "next_due_at", "source")
_EVENT_INSERT = ("kind", "contact_id", "enrollment_id", "detail", "occurred_at")
_AUDIT_INSERT = ("actor", "action", "contact_id", "detail", "created_at")


_DETAILS: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}


def _detail(detail: dict[str, Any]) -> dict[str, Any]:
    """One shared dict per distinct detail: most rows of an import carry the same few, and the bulk
    insert serialises each distinct object once."""
    key = tuple(detail.items())
    try:
        found = _DETAILS.get(key)
    except TypeError:  # an unhashable value: nothing to share
        return detail
    if found is None:
        if len(_DETAILS) > 10_000:
            _DETAILS.clear()
        found = _DETAILS[key] = detail
    return found


def _event(kind: str, now: datetime, contact_id: int | None, enrollment_id: int | None,
           **detail: Any) -> tuple[Any, ...]:
    return (kind, contact_id, enrollment_id, _detail(detail), now)


def _audit(actor: str, action: str, now: datetime, contact_id: int | None, **detail: Any) -> tuple[Any, ...]:
    return (actor, action, contact_id, _detail(detail), now)


def _block(contact: _ContactState, channel: Channel, reason: str) -> None:
    if channel == Channel.EMAIL:
        contact.email_blocked = reason[:200]
    else:
        contact.sms_blocked = reason[:200]


def _parts(values: list[Any], session: Session) -> Iterator[list[Any]]:
    """Slices for `_in`: one for PostgreSQL (an array is one parameter), IN_LIST values for SQLite."""
    size = len(values) or 1 if session.get_bind().dialect.name == "postgresql" else IN_LIST
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _in(column: Any, values: list[Any], session: Session) -> Any:
    """`column IN values`. On PostgreSQL `= ANY(array)`: a single parameter, so the driver does not
    have to parse a statement with thousands of placeholders for every chunk."""
    if session.get_bind().dialect.name == "postgresql":
        element = String() if isinstance(values[0], str) else BigInteger()
        return column == any_(bindparam(None, values, type_=ARRAY(element)))
    return column.in_(values)


# -- the row-by-row path (reference and fallback) ------------------------------------------------------


def _import_chunk_rowwise(rt: Runtime, chunk: list[tuple[int, dict[str, str]]], campaign: Campaign, now: datetime,
                          actor: str) -> ImportReport:
    report = ImportReport()
    with db.write_transaction(rt.sessions) as session:
        for line, row in chunk:
            report.rows += 1
            checked = validate_row(line, row, rt.settings.clinic_timezone)
            if isinstance(checked, RowError):
                report.errors.append(checked)
                continue
            data = checked.contact_input()
            consent = {Channel.EMAIL: checked.consent_email, Channel.SMS: checked.consent_sms}
            try:
                with session.begin_nested():
                    contact, created = upsert_contact(session, rt, data, now, actor)
                    for channel, given in consent.items():
                        if given:
                            grant_consent(session, contact, ConsentGrant(
                                channel=channel, method=ConsentMethod.IMPORT,
                                wording_text=f"consent stated in the imported file (source: {data.source or 'import'})",
                            ), now, actor)
                    enroll(session, rt, contact, campaign, now, actor, source=data.source or "import")
                report.enrolled += 1
                report.created += int(created)
                report.updated += int(not created)
            except AlreadyEnrolled as exc:
                report.errors.append(RowError(line, "", str(exc)))
            except (EnrollmentError, FieldError) as exc:
                report.errors.append(RowError(line, getattr(exc, "field", ""), getattr(exc, "message", str(exc))))
            except IntegrityError:
                report.errors.append(RowError(line, "", "conflicts with another contact (same email or phone)"))
    return report


def import_csv_rowwise(rt: Runtime, stream: IO[str], campaign: Campaign, now: datetime, actor: str) -> ImportReport:
    """The row-by-row import (one ORM savepoint per row): the reference `import_csv` is tested against."""
    report = ImportReport()
    header, rows = read_rows(stream)
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if unknown:
        report.warnings.append(f"ignored columns: {', '.join(unknown)}")
    for chunk in _chunks(rows, 500):
        report.merge(_import_chunk_rowwise(rt, chunk, campaign, now, actor))
    return report


def count_data_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def open_csv(path: Path) -> io.TextIOWrapper:
    """Open as UTF-8 (with or without BOM, as spreadsheets save it)."""
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
