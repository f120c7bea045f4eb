"""Bulk enrollment from CSV: one bad row is reported with its line number and stops nothing else.

Two paths with the same result, row for row:

* the **bulk path** (`import_csv`): rows are validated in Python (on several processes for a big
  file), then each chunk of `CHUNK` rows is written with a handful of set-based statements — one
  query each for the chunk's existing contacts, their enrollments and the suppression hashes;
  the chunk is then decided in memory, row by row in file order, by the same rule functions the
  row-by-row path calls (`merge_contact_input`, `apply_suppressions`, `require_address`,
  `apply_grant`, `enrollment_decision`, `first_step`, and the `*_rows` builders for what is
  written; a later row sees what an earlier one created; a row that fails leaves no trace), and
  written as multi-row INSERTs (contacts, consent records, enrollments, timeline events, audit
  entries) and one executemany UPDATE for existing contacts;
* the **row-by-row path** (`_import_chunk_rowwise`): the ORM services one row at a time inside a
  savepoint. It is the reference the bulk path is tested against, and the fallback for a chunk
  whose INSERT collides with a contact or enrollment another process created meanwhile.

Memory stays flat: the file is streamed, at most a few chunks are in flight.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import IO, Any

from sqlalchemy import ARRAY, BigInteger, String, any_, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip import db
from patient_drip.content.campaign import Campaign
from patient_drip.content.campaign_versions import stored_version, version_in_force
from patient_drip.content.texting_rules import texting_rules
from patient_drip.content.windows import Scheduled
from patient_drip.contacts.blocks import BlockReason, block_rows
from patient_drip.contacts.changes import (
    apply_suppressions,
    created_rows,
    merge_contact_input,
    upsert_contact,
)
from patient_drip.contacts.consent import (
    ConsentGrant,
    ConsentWording,
    Wording,
    apply_grant,
    grant_consent,
    grant_rows,
    load_wording,
    require_address,
)
from patient_drip.contacts.enrollment import (
    CRISIS_PAUSE_REASON,
    EnrollmentError,
    PastEnrollment,
    enroll,
    enrolled_rows,
    enrollment_decision,
    deferred_rows,
    first_step,
    first_step_period,
    open_crisis_reply_ids,
    pause_rows,
)
from patient_drip.contacts.fields import FieldError, address_hash
from patient_drip.contacts.import_rows import (
    KNOWN_COLUMNS,
    RowError,
    ValidRow,
    chunks,
    default_workers,
    read_rows,
    validate_row,
    validated_chunks,
)
from patient_drip.contacts.records import AuditRow, ConsentRow, EventRow, Row
from patient_drip.contacts.row_templates import RowBatch, RowTemplates
from patient_drip.due_now import mark_due
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.models import (
    AuditEntry,
    Channel,
    ConsentMethod,
    ConsentRecord,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    Suppression,
)
from patient_drip.runtime import Runtime

CHUNK = 2000  # rows per write transaction
IN_LIST = 900  # values per IN (...) list (SQLite allows 32766 bound parameters; stay well under)


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
    with rt.sessions() as session:
        campaign = version_in_force(session, campaign)  # every row enrolls on the timing in force now
    shared = _Shared(campaign, now)
    with _collector_tuned():
        for raw, validated in validated_chunks(chunks(rows, CHUNK), rt.settings.clinic_timezone, workers):
            report.merge(_import_chunk(rt, raw, validated, campaign, now, actor, shared))
            if progress:
                progress(len(raw))
    return report


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """Keep Python's cyclic garbage collector from taking a quarter of an import's CPU.

    A chunk allocates about ten tuples a row that live until the chunk is written; with the default
    thresholds the collector ran every 700 allocations and traversed them, and every long-lived
    object of the process, again and again. During the import the objects that existed before it
    are frozen (never traversed; forked validation processes inherit that) and the youngest
    generation is collected every 50,000 allocations. Only from a process's main thread (`drip
    import`): the staff UI imports in a thread of a server whose collector is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _import_chunk(rt: Runtime, raw: list[tuple[int, dict[str, str]]], validated: list[ValidRow | RowError],
                  campaign: Campaign, now: datetime, actor: str, shared: _Shared) -> ImportReport:
    try:
        # BEGIN IMMEDIATE on SQLite: what we look up cannot change before we write.
        with db.write_transaction(rt.sessions) as session:
            return _BulkChunk(session, rt.suppression_key, load_wording(rt.settings.policy_dir), campaign, now,
                              actor, shared).run(validated)
    except IntegrityError:
        # Another process created one of these contacts or enrollments after we looked: redo the
        # chunk row by row, where each row sees the other's work and reports it like any other.
        return _import_chunk_rowwise(rt, raw, campaign, now, actor)


# -- the bulk path ----------------------------------------------------------------------------------


class _Shared:
    """What every chunk of one import can reuse: the row templates (`contacts.row_templates`) and
    the first step's time per zone, texting rule and spread key (`first_step_period`)."""

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.campaign, self.now = campaign, now
        self.templates = RowTemplates()
        self.rules = texting_rules()
        self._periods: dict[str, int] = {}
        self._first: dict[tuple[str, str, int], Scheduled | None] = {}

    def first_due(self, zone: str, phone: str | None, enrollment_id: int) -> Scheduled | None:
        """`first_step(campaign, zone, now, enrollment_id, phone=phone)`, computed once per zone,
        texting rule (which narrows a text's window by the number) and id modulo the spread period."""
        rule = self.rules.for_number(phone).id
        period = self._periods.get(rule)
        if period is None:
            period = self._periods[rule] = first_step_period(self.campaign, phone=phone)
        key = (zone, rule, enrollment_id % period)
        try:
            return self._first[key]
        except KeyError:
            found = self._first[key] = first_step(self.campaign, zone, self.now, enrollment_id, phone=phone)
            return found


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
    language: str
    interest: str
    email_consent: bool
    sms_consent: bool
    email_block_reason: str | None
    email_blocked: str | None
    sms_block_reason: str | None
    sms_blocked: str | None
    key: int = 0  # identity within the chunk (new contacts have no id yet)

    @property
    def display_name(self) -> str:  # Contact.display_name
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.phone or f"contact #{self.id}"


_STATE_COLUMNS = ("id", "email", "phone", "first_name", "last_name", "timezone", "source", "preferred_channel",
                  "language", "interest",
                  "email_consent", "sms_consent", "email_block_reason", "email_blocked", "sms_block_reason",
                  "sms_blocked")
_CONTACT_COLUMNS = tuple(getattr(Contact, name) for name in _STATE_COLUMNS)
_state_values = attrgetter(*_STATE_COLUMNS)  # a _ContactState's values in _STATE_COLUMNS order


@dataclass(slots=True)
class _Accepted:
    """A row that succeeds, and what the shared rules decided for it (written by `_write`)."""

    row: ValidRow
    contact: _ContactState
    created: bool
    suppressed: list[tuple[Channel, str]]
    grants: list[tuple[ConsentGrant, Wording, BlockReason | None]]


class _BulkChunk:
    """Decide one chunk in memory with the shared contact, consent and enrollment rules, then
    write it set-based."""

    def __init__(self, session: Session, suppression_key: str, wording: ConsentWording, campaign: Campaign,
                 now: datetime, actor: str, shared: _Shared) -> None:
        self.session, self.suppression_key, self.campaign, self.now, self.actor, self.shared = (
            session, suppression_key, campaign, now, actor, shared)
        self.shown = {channel: wording.wording(channel) for channel in (Channel.EMAIL, Channel.SMS)}
        self.by_email: dict[str, _ContactState] = {}
        self.by_phone: dict[str, _ContactState] = {}
        self.enrolled: dict[int, PastEnrollment] = {}  # contact key → its enrollment in the campaign
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
            outcome = item if isinstance(item, RowError) else self._decide(item)
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
                self.enrolled[key_of[contact_id]] = PastEnrollment(status, reason)
        # Suppression hashes of every address a contact of this chunk can end up with.
        email, sms = str(Channel.EMAIL), str(Channel.SMS)
        addresses = {(email, e) for e in emails} | {(sms, p) for p in phones}
        for state in found.values():
            if state.email:
                addresses.add((email, state.email))
            if state.phone:
                addresses.add((sms, state.phone))
        by_hash = {address_hash(self.suppression_key, channel, value): (channel, value)
                   for channel, value in addresses}
        for part in _parts(sorted(by_hash), session):
            for channel, digest, reason in session.execute(
                select(Suppression.channel, Suppression.value_hash, Suppression.reason).where(
                    _in(Suppression.value_hash, part, session))
            ):
                address = by_hash.get(digest)
                if address is not None and address[0] == channel:
                    self.suppressed[address] = reason

    # deciding (upsert_contact + grant_consent + enroll, with their rules, in memory) ------------------

    def _decide(self, row: ValidRow) -> _Accepted | RowError:
        found = self.by_email.get(row.email) if row.email else None
        if found is None and row.phone:
            found = self.by_phone.get(row.phone)
        if row.phone:
            holder = self.by_phone.get(row.phone)
            if holder is not None and found is not None and holder is not found:
                return RowError(row.line, "phone", "this phone number belongs to another contact")
        created = found is None
        if found is None:
            contact = _ContactState(
                id=None, email=row.email, phone=row.phone, first_name=row.first_name, last_name=row.last_name,
                timezone=row.timezone, source=row.source, preferred_channel=row.preferred_channel,
                language=row.language or DEFAULT_LANGUAGE, interest=row.interest,
                email_consent=False, sms_consent=False, email_block_reason=None, email_blocked=None,
                sms_block_reason=None, sms_blocked=None, key=self._new_key(),
            )
        else:
            contact = replace(found)  # changes stay on the copy unless the row succeeds
            merge_contact_input(contact, row.contact_input())
        suppressed = apply_suppressions(contact, {
            channel: self.suppressed.get((str(channel), value)) if value else None
            for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone))})
        grants = []
        try:
            for channel in _stated_consent(row):
                require_address(contact, channel)
                grant = ConsentGrant(channel, ConsentMethod.IMPORT, note=_consent_note(row.source))
                grants.append((grant, self.shown[channel], apply_grant(contact, channel)))
            enrollment_decision(contact, self.campaign, self.enrolled.get(contact.key))
        except FieldError as exc:
            return RowError(row.line, exc.field, exc.message)
        except EnrollmentError as exc:
            return RowError(row.line, "", str(exc))
        # The row succeeds: its contact becomes what later rows of the chunk see.
        if found is not None and found.email and found.email != contact.email:
            self.by_email.pop(found.email, None)
        if contact.email:
            self.by_email[contact.email] = contact
        if contact.phone:
            self.by_phone[contact.phone] = contact
        self.enrolled[contact.key] = PastEnrollment(str(EnrollmentStatus.ACTIVE), None)
        return _Accepted(row, contact, created, suppressed, grants)

    # writing ------------------------------------------------------------------------------------

    def _write(self, accepted: list[_Accepted]) -> None:
        if not accepted:
            return
        session, now, actor, campaign, shared = self.session, self.now, self.actor, self.campaign, self.shared
        version = stored_version(campaign)
        connection = session.connection()
        new = [a for a in accepted if a.created]
        if new:
            for item, contact_id in zip(new, db.allocate_ids(connection, Contact.__table__, len(new)), strict=True):
                item.contact.id = contact_id
            times = (now, now)
            db.bulk_insert(connection, Contact.__table__, _CONTACT_INSERT,
                           [_state_values(a.contact) + times for a in new])
        changed = [a for a in accepted if not a.created]
        if changed:
            table = Contact.__table__
            columns = [name for name in _STATE_COLUMNS if name not in ("id", "source")]
            connection.execute(
                table.update().where(table.c.id == bindparam("b_id")).values(
                    {name: bindparam(f"b_{name}") for name in columns}
                    | {"updated_at": bindparam("b_updated_at", type_=table.c.updated_at.type)}),
                [{f"b_{name}": getattr(a.contact, name) for name in columns}
                 | {"b_id": a.contact.id, "b_updated_at": now} for a in changed],
            )
        enrollment_ids = db.allocate_ids(connection, Enrollment.__table__, len(accepted))
        active, paused = str(EnrollmentStatus.ACTIVE), str(EnrollmentStatus.PAUSED)
        # As in `enroll`: a person whose crisis reply staff have not looked at yet gets the sequence
        # paused, not sent (only existing contacts can have a reply on file).
        in_crisis = open_crisis_reply_ids(session, [a.contact.id for a in changed])
        enrollments = []
        batch = RowBatch()
        templates = shared.templates
        for item, enrollment_id in zip(accepted, enrollment_ids, strict=True):
            contact = item.contact
            contact_id = contact.id
            assert contact_id is not None
            source = (item.row.source or "import")[:64]
            crisis_reply = in_crisis.get(contact_id)
            scheduled = shared.first_due(contact.timezone, contact.phone, enrollment_id)
            if crisis_reply is not None:
                enrollments.append((enrollment_id, contact_id, campaign.id, paused, 0, now, None, source, version))
            else:
                enrollments.append((enrollment_id, contact_id, campaign.id, active, 0, now, _due(scheduled), source,
                                    version))
            if crisis_reply is None:
                # Everything `_rows` reads besides the ids: rows alike but for the ids share a template.
                key = (item.created and item.row.source, tuple(item.suppressed), tuple(item.grants), scheduled,
                       contact.timezone)
                templates.add(batch, key, lambda c, e: self._rows(item, c, e, scheduled, None), contact_id,
                              enrollment_id)
            else:
                batch.add(self._rows(item, contact_id, enrollment_id, scheduled, crisis_reply))
        db.bulk_insert(connection, Enrollment.__table__, _ENROLLMENT_INSERT, enrollments)
        # Speed to lead: rows due now wake the dispatchers when the chunk commits.
        mark_due(session, min((row[6] for row in enrollments if row[6] is not None), default=None), now)
        db.bulk_insert(connection, ConsentRecord.__table__, ConsentRow._fields, batch.consents)
        db.bulk_insert(connection, Event.__table__, EventRow._fields, batch.events)
        db.bulk_insert(connection, AuditEntry.__table__, AuditRow._fields, batch.audits)


    def _rows(self, item: _Accepted, contact_id: int | None, enrollment_id: int | None, scheduled: Scheduled | None,
              crisis_reply: int | None) -> list[Row]:
        """The rows each rule writes for `item`, in the order the row-by-row path writes them."""
        now, actor, campaign = self.now, self.actor, self.campaign
        assert enrollment_id is not None
        rows: list[Row] = []
        if item.created:
            rows += created_rows(contact_id, item.row.source, now, actor)
        for channel, reason in item.suppressed:
            rows += block_rows(contact_id, channel, BlockReason.SUPPRESSED, reason, now, actor)
        for grant, shown, lifted in item.grants:
            rows += grant_rows(contact_id, grant, shown, lifted, now, actor)
        rows += enrolled_rows(contact_id, enrollment_id, campaign.id, now, actor)
        rows += deferred_rows(contact_id, enrollment_id, campaign, scheduled, item.contact.timezone, now)
        if crisis_reply is not None:
            # As `enroll` does: scheduled (and said so) first, then paused at once.
            assert contact_id is not None
            rows += pause_rows(True, contact_id, enrollment_id, campaign.id, now, "system:crisis",
                               reason=CRISIS_PAUSE_REASON, inbound_id=crisis_reply)
        return rows


def _due(scheduled: Scheduled | None) -> datetime | None:
    return scheduled.due if scheduled is not None else None


def _stated_consent(row: ValidRow) -> list[Channel]:
    return [channel for channel, given in ((Channel.EMAIL, row.consent_email), (Channel.SMS, row.consent_sms))
            if given]


def _consent_note(source: str) -> str:
    """How an imported grant came: the wording is the clinic's current one, the proof is the file."""
    return f"consent stated in the imported file (source: {source or 'import'})"


_CONTACT_INSERT = (*_STATE_COLUMNS, "created_at", "updated_at")
_ENROLLMENT_INSERT = ("id", "contact_id", "campaign_id", "status", "step_index", "enrolled_at", "next_due_at", "source",
                      "campaign_version")


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
    wording = load_wording(rt.settings.policy_dir)
    with db.write_transaction(rt.sessions) as session:
        for line, row in chunk:
            report.rows += 1
            checked = validate_row(line, row, rt.settings.clinic_timezone)
            if isinstance(checked, RowError):
                report.errors.append(checked)
                continue
            data = checked.contact_input()
            try:
                with session.begin_nested():
                    contact, created = upsert_contact(session, rt.suppression_key, data, now, actor)
                    for channel in _stated_consent(checked):
                        grant_consent(session, wording, contact, ConsentGrant(
                            channel, ConsentMethod.IMPORT, note=_consent_note(data.source)), now, actor)
                    # An import never re-enters anyone (like the bulk path): a row is a new request.
                    enroll(session, contact, campaign, now, actor, source=data.source or "import", reenter=False)
                report.enrolled += 1
                report.created += int(created)
                report.updated += int(not created)
            except FieldError as exc:
                report.errors.append(RowError(line, exc.field, exc.message))
            except EnrollmentError as exc:
                report.errors.append(RowError(line, "", str(exc)))
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
    for chunk in chunks(rows, 500):
        report.merge(_import_chunk_rowwise(rt, chunk, campaign, now, actor))
    return report
