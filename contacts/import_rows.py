"""Reading and checking an import file: the CSV header and rows, each row validated into the contact
it describes and the consent it states (pure; runs on several processes for a big file), and the
per-row errors to report with their line numbers.

May import `contacts.fields`, `contacts.changes` (parsing) and `contacts.column_mapping`; nothing that touches
the database.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, NamedTuple

from patient_drip.contacts.changes import ContactInput, parse_contact_input
# The fields, and the other names files give them, are `contacts.column_mapping`'s (re-exported here).
from patient_drip.contacts.column_mapping import KNOWN_COLUMNS, field_for
from patient_drip.contacts.fields import FieldError, ZoneSource

YES = {"yes", "y", "true", "1", "x"}
NO = {"no", "n", "false", "0", ""}
MAX_FIELD = 10_000
PARALLEL_MIN_ROWS = 4000  # validate on several processes only when the file has at least this many rows


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}" if self.field else f"line {self.line}: {self.message}"


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
        written = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise ImportFileError(f"line 1: not a CSV header: {exc}") from None
    # "Email Address", "Mobile", "Given name"…: the names spreadsheets use read as our fields.
    header = [field_for(name) or name.strip().lower() for name in written]
    if not header:
        raise ImportFileError("the file is empty; the first line must be a header such as first_name,email,phone")
    twice = sorted({name for name in header if name in KNOWN_COLUMNS and header.count(name) > 1})
    if twice:
        columns = "; ".join(f"{', '.join(repr(w) for w, h in zip(written, header) if h == name)} all mean {name}"
                            for name in twice)
        raise ImportFileError(f"line 1: {columns}: keep one column for each")
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
    language: str = ""
    interest: str = ""

    def contact_input(self) -> ContactInput:
        return ContactInput(email=self.email, phone=self.phone, first_name=self.first_name,
                            last_name=self.last_name, timezone=self.timezone, source=self.source,
                            preferred_channel=self.preferred_channel, language=self.language,
                            interest=self.interest)


def validate_row(line: int, row: dict[str, str], clinic_timezone: str) -> ValidRow | RowError:
    """One CSV row → the contact it describes and the consent it states, or the error to report."""
    if "__error__" in row:
        return RowError(line, "", f"unreadable CSV row: {row['__error__']}")
    if any(len(value) > MAX_FIELD for value in row.values()):
        return RowError(line, "", "a field is too long")
    try:
        data = parse_contact_input(row, clinic_timezone, zone_source=ZoneSource.STAFF,
                                   source=row.get("source") or "import")
        consent_email = _flag(row.get("consent_email"), "consent_email")
        consent_sms = _flag(row.get("consent_sms"), "consent_sms")
        if consent_sms and not data.phone:
            raise FieldError("consent_sms", "is yes but the row has no phone number")
    except FieldError as exc:
        return RowError(line, exc.field, exc.message)
    return ValidRow(line, data.email, data.phone, data.first_name, data.last_name, data.timezone, data.source,
                    data.preferred_channel, consent_email, consent_sms, data.language, data.interest)


def validate_rows(rows: list[tuple[int, dict[str, str]]], clinic_timezone: str) -> list[ValidRow | RowError]:
    return [validate_row(line, row, clinic_timezone) for line, row in rows]


def chunks(rows: Iterable[tuple[int, dict[str, str]]], size: int) -> Iterator[list[tuple[int, dict[str, str]]]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def default_workers() -> int:
    """Validation processes for a big import: the cores but the one that writes (0: validate here)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def validated_chunks(chunks: Iterator[list[tuple[int, dict[str, str]]]], clinic_timezone: str,
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


def count_data_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def open_csv(path: Path) -> io.TextIOWrapper:
    """Open as UTF-8 (with or without BOM, as spreadsheets save it)."""
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
