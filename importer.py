"""Bulk enrollment from CSV: one bad row is reported with its line number and stops nothing else."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy.exc import IntegrityError

from campaign import Campaign
from contact_fields import FieldError
from enrollment import (
    AlreadyEnrolled,
    ConsentGrant,
    EnrollmentError,
    enroll,
    grant_consent,
    parse_contact_input,
    upsert_contact,
)
from models import Channel, ConsentMethod
from runtime import Runtime

KNOWN_COLUMNS = ("first_name", "last_name", "email", "phone", "timezone", "consent_email", "consent_sms", "source")
YES = {"yes", "y", "true", "1", "x"}
NO = {"no", "n", "false", "0", ""}
CHUNK = 500
MAX_FIELD = 10_000


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
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, {"__error__": str(exc)}
                continue
            line = reader.line_num
            yield line, {key: (value or "") for key, value in row.items() if isinstance(key, str)}

    return header, rows()


def import_csv(
    rt: Runtime,
    stream: IO[str],
    campaign: Campaign,
    now: datetime,
    actor: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Create or update each row's contact, record the consent the row states, and enroll it."""
    report = ImportReport()
    header, rows = read_rows(stream)
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if unknown:
        report.warnings.append(f"ignored columns: {', '.join(unknown)}")
    chunk: list[tuple[int, dict[str, str]]] = []
    for line, row in rows:
        chunk.append((line, row))
        if len(chunk) >= CHUNK:
            _import_chunk(rt, chunk, campaign, now, actor, report)
            if progress:
                progress(len(chunk))
            chunk = []
    if chunk:
        _import_chunk(rt, chunk, campaign, now, actor, report)
        if progress:
            progress(len(chunk))
    return report


def _import_chunk(rt: Runtime, chunk: list[tuple[int, dict[str, str]]], campaign: Campaign, now: datetime,
                  actor: str, report: ImportReport) -> None:
    with rt.sessions() as session, session.begin():
        for line, row in chunk:
            report.rows += 1
            if "__error__" in row:
                report.errors.append(RowError(line, "", f"unreadable CSV row: {row['__error__']}"))
                continue
            if any(len(value) > MAX_FIELD for value in row.values()):
                report.errors.append(RowError(line, "", "a field is too long"))
                continue
            try:
                data = parse_contact_input(row, rt.settings.clinic_timezone, source=row.get("source") or "import")
                consent = {Channel.EMAIL: _flag(row.get("consent_email"), "consent_email"),
                           Channel.SMS: _flag(row.get("consent_sms"), "consent_sms")}
                if consent[Channel.SMS] and not data.phone:
                    raise FieldError("consent_sms", "is yes but the row has no phone number")
            except FieldError as exc:
                report.errors.append(RowError(line, exc.field, exc.message))
                continue
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


def count_data_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def open_csv(path: Path) -> io.TextIOWrapper:
    """Open as UTF-8 (with or without BOM, as spreadsheets save it)."""
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
