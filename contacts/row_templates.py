"""The rows of many contacts at once, built by the rules' own row builders: each builder runs once
per distinct input, and its rows are stamped with each contact's (and enrollment's) id.

An import of 100,000 people writes about a million timeline, audit and consent rows, nearly all of
them alike but for the ids. Calling `grant_rows`, `enrolled_rows`... once per row made the builders
a third of the importer's time; a template gives the same rows for the cost of a tuple copy.

Exactness is checked, not assumed: a template is made by calling the builder twice, with two
different probe ids; the two results must be equal in every field but the id fields, which must
hold the probes. A builder whose rows use an id anywhere else (in a detail, a text) fails that
check and is simply called for every row.

May import `contacts.records` only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from patient_drip.contacts.records import AuditRow, ConsentRow, EventRow, Row

# Ids no real row has: a field holding one of them after a probe call came from that id argument.
_PROBES = ((-(2**62) - 11, -(2**62) - 13), (-(2**62) - 17, -(2**62) - 19))  # (contact, enrollment) twice

Build = Callable[[int | None, int | None], Sequence[Row]]
_Details = dict[tuple[tuple[str, type, Any], ...], dict[str, Any]]


@dataclass
class RowBatch:
    """Rows to insert, per table, in the order the builders produced them (ids follow that order)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    audits: list[tuple[Any, ...]] = field(default_factory=list)
    consents: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, rows: Sequence[Row]) -> None:
        """Rows built directly (no template)."""
        for row in rows:
            self._target(row).append(tuple(row))

    def _target(self, row: Row) -> list[tuple[Any, ...]]:
        if isinstance(row, EventRow):
            return self.events
        if isinstance(row, AuditRow):
            return self.audits
        assert isinstance(row, ConsentRow)
        return self.consents


@dataclass(frozen=True, slots=True)
class _Stamp:
    """One row of a template: its values, and where the contact and enrollment ids go. The values
    before the ids (`head`) and after them (`tail`) are cut once, so stamping is one concatenation
    in the usual cases (a contact id; a contact id followed by an enrollment id)."""

    table: int  # 0 events, 1 audits, 2 consents
    values: tuple[Any, ...]
    contact_at: int | None
    enrollment_at: int | None
    head: tuple[Any, ...]
    tail: tuple[Any, ...]

    @classmethod
    def of(cls, table: int, values: tuple[Any, ...], contact_at: int | None, enrollment_at: int | None) -> _Stamp:
        head, tail = values, ()
        if contact_at is not None and enrollment_at in (None, contact_at + 1):
            head, tail = values[:contact_at], values[contact_at + (1 if enrollment_at is None else 2):]
        return cls(table, values, contact_at, enrollment_at, head, tail)

    def stamped(self, contact_id: int, enrollment_id: int | None) -> tuple[Any, ...]:
        if self.contact_at is None and self.enrollment_at is None:
            return self.values
        if self.contact_at is not None and self.enrollment_at is None:
            return self.head + (contact_id,) + self.tail
        if self.contact_at is not None and self.enrollment_at == self.contact_at + 1:
            return self.head + (contact_id, enrollment_id) + self.tail
        filled = list(self.values)
        if self.contact_at is not None:
            filled[self.contact_at] = contact_id
        if self.enrollment_at is not None:
            filled[self.enrollment_at] = enrollment_id
        return tuple(filled)


def _table(row: Row) -> int:
    return 0 if isinstance(row, EventRow) else 1 if isinstance(row, AuditRow) else 2


def _template(build: Build, details: _Details) -> list[_Stamp] | None:
    """The stamps of `build`'s rows, or None when its rows depend on the ids beyond the id fields."""
    (contact_a, enrollment_a), (contact_b, enrollment_b) = _PROBES
    first, second = build(contact_a, enrollment_a), build(contact_b, enrollment_b)
    if len(first) != len(second):
        return None
    stamps = []
    for row_a, row_b in zip(first, second):
        if type(row_a) is not type(row_b):
            return None
        contact_at = enrollment_at = None
        for index, (value_a, value_b) in enumerate(zip(row_a, row_b)):
            if value_a == contact_a and value_b == contact_b and row_a._fields[index] == "contact_id":
                contact_at = index
            elif (value_a == enrollment_a and value_b == enrollment_b
                  and row_a._fields[index] == "enrollment_id"):
                enrollment_at = index
            elif value_a != value_b or type(value_a) is not type(value_b):
                return None
        values = tuple(_shared(value, details) for value in row_a)
        stamps.append(_Stamp.of(_table(row_a), values, contact_at, enrollment_at))
    return stamps


def _shared(value: Any, details: _Details) -> Any:
    """One dict object per distinct detail, across templates: the bulk insert serialises each
    distinct object once (a thousand templates that differ by a second of their due time share
    the twenty details that differ by the minute shown). Keyed by the items in order (the stored
    JSON keeps it) and their types."""
    if not isinstance(value, dict):
        return value
    key = tuple((name, type(item), item) for name, item in value.items())  # 1 == True, yet "1" != "true"
    try:
        return details.setdefault(key, value)
    except TypeError:  # a value that is not hashable: nothing to share
        return value


class RowTemplates:
    """Templates by key, for one import (its `now`, actor and campaign are fixed, so a key names
    everything else a builder reads)."""

    def __init__(self) -> None:
        self._templates: dict[Hashable, list[_Stamp] | None] = {}
        self._details: _Details = {}

    def add(self, batch: RowBatch, key: Hashable, build: Build, contact_id: int, enrollment_id: int | None) -> None:
        """Append to `batch` exactly the rows `build(contact_id, enrollment_id)` returns; `key` must
        identify every input of `build` other than the two ids."""
        try:
            stamps = self._templates[key]
        except KeyError:
            stamps = self._templates[key] = _template(build, self._details)
        if stamps is None:
            batch.add(build(contact_id, enrollment_id))
            return
        targets = (batch.events, batch.audits, batch.consents)
        for stamp in stamps:
            targets[stamp.table].append(stamp.stamped(contact_id, enrollment_id))
