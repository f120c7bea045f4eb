"""The date range of a staff list or report, as typed in a form (`YYYY-MM-DD`, the clinic's days):
parsed once here for the contacts list, the messages list and the funnel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class DateRange:
    """Whole days `first`..`last` (inclusive) in `zone`; `start`/`end` are the UTC bounds (end exclusive)."""

    first: date | None
    last: date | None
    zone: ZoneInfo
    error: str = ""

    @property
    def start(self) -> datetime | None:
        return None if self.first is None else datetime.combine(self.first, time(), self.zone).astimezone(ZoneInfo("UTC"))

    @property
    def end(self) -> datetime | None:
        if self.last is None:
            return None
        return datetime.combine(self.last + timedelta(days=1), time(), self.zone).astimezone(ZoneInfo("UTC"))

    def days(self) -> list[date]:
        """Every day of a bounded range, in order ([] when open at either end)."""
        if self.first is None or self.last is None:
            return []
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def query(self) -> dict[str, str]:
        """The form fields that give this range back (for links and pagers)."""
        return {"from": self.first.isoformat() if self.first else "", "to": self.last.isoformat() if self.last else ""}


MAX_DAYS = 366  # a chart or report of more than a year is unreadable day by day


def _day(text: str) -> date | None:
    text = text.strip()
    return date.fromisoformat(text) if text else None


def parse_range(first: str, last: str, zone: ZoneInfo, *, today: date, default_days: int | None = None) -> DateRange:
    """The range typed in a form. Empty fields: the last `default_days` days up to `today` (or open
    when `default_days` is None). A date that does not parse, or an end before the start, gives the
    default range with an `error` that says what to fix."""
    default = DateRange(today - timedelta(days=default_days - 1) if default_days else None,
                        today if default_days else None, zone)
    try:
        start, end = _day(first[:20]), _day(last[:20])
    except ValueError:
        return DateRange(default.first, default.last, zone, "Dates are written YYYY-MM-DD, e.g. 2026-03-01.")
    if start is None and end is None:
        return default
    if default_days is not None:
        end = end or today
        start = start or end - timedelta(days=default_days - 1)
    if start is not None and end is not None:
        if end < start:
            return DateRange(default.first, default.last, zone, "The end date is before the start date.")
        if default_days is not None and (end - start).days >= MAX_DAYS:
            return DateRange(end - timedelta(days=MAX_DAYS - 1), end, zone,
                             f"At most {MAX_DAYS} days at once: showing the last {MAX_DAYS} up to the end date.")
    return DateRange(start, end, zone)
