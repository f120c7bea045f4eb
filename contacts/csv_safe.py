"""Formula-safe CSV writing: every CSV the product writes (contact export, consent export, import
error reports) goes through `csv_writer`, so a cell a spreadsheet would run as a formula is
written as text.

OWASP's CSV-injection guidance: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return can be evaluated by Excel, LibreOffice or Google Sheets (``=HYPERLINK(...)`` leaks
data to a link, ``@SUM(...)`` runs). Such a cell gets a leading ``'``, which spreadsheets read as
"this is text" and do not show. That includes E.164 phone numbers (``+13125550142``): they are
data to us, but a spreadsheet can still parse a leading ``+`` as a formula, so they are escaped too
and open as ``'+13125550142`` in a plain text editor.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def escape_formula(value: object) -> object:
    """`value` as a spreadsheet reads it as text: a string starting with one of FORMULA_STARTS gets
    a leading ``'``; anything else (other strings, numbers, None) is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class FormulaSafeWriter:
    """A `csv.writer` whose every cell passes through `escape_formula` first."""

    def __init__(self, handle: _Writable) -> None:
        self._writer = csv.writer(handle)

    def writerow(self, row: Iterable[object]) -> None:
        """Write one row, each cell escaped."""
        self._writer.writerow([escape_formula(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        """Write every row of `rows`, each cell escaped."""
        for row in rows:
            self.writerow(row)


def csv_writer(handle: _Writable) -> FormulaSafeWriter:
    """The CSV writer to use for anything the product exports (see the module docstring)."""
    return FormulaSafeWriter(handle)
