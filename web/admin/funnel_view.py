"""The funnel as the staff pages show it: the report for a date range (`dispatch.funnel_report`), with
the message figures cached in this process while the database has not changed, and the geometry of
its server-side SVG charts (per-step bars, a daily trend).

Freshness: bookings are counted live on every view. The message figures are kept with the
`funnel_version` they were counted at; a view whose version still matches shows them as they are
(nothing changed). When something changed, the view recounts at once if counting is cheap (the last
count took under `SYNC_BUDGET`: a small clinic always sees live figures). On a large database a view
shows the last count, says how old it is, and starts a recount in the background (about 1.5 s at 100k
contacts on SQLite), which the next view shows; only a count older than `STALE_LIMIT` makes the view
wait. So the page stays fast while the dispatcher writes, and its figures are seconds behind at most
while someone is looking."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.orm import Session

from patient_drip.dispatch.funnel_report import (
    CampaignFunnel,
    DayNumbers,
    FunnelReport,
    MessageCounts,
    build_report,
    count_bookings,
    count_messages,
    funnel_version,
)
from patient_drip.runtime import Runtime
from patient_drip.web.admin.common import clinic_zone
from patient_drip.web.admin.date_range import DateRange
from patient_drip.web.admin.labels import humanise
from patient_drip.web.deps import read_session

log = logging.getLogger("drip.admin")

STALE_LIMIT = 60.0  # seconds: an older count of a changed database is redone before the page shows
SYNC_BUDGET = 0.15  # seconds: a count that took less is simply redone when the data changed
MAX_ENTRIES = 16  # date ranges kept (the dashboard's, the funnel page's, a few custom ones)


@dataclass(frozen=True, slots=True)
class _Entry:
    version: tuple[int, int, int]
    at: float  # time.monotonic() when the count started
    counts: MessageCounts
    took: float  # seconds the count took


class FunnelCache:
    """Message figures per date range, recounted when `funnel_version` moves (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[datetime, datetime], _Entry] = {}
        self._running: set[tuple[datetime, datetime]] = set()

    def counts(self, rt: Runtime, session: Session, start: datetime, end: datetime) -> tuple[MessageCounts, float]:
        """The message figures of [start, end) and how many seconds old they may be (0: current)."""
        key = (start, end)
        version = funnel_version(session)
        with self._lock:
            entry = self._entries.get(key)
        moment = time.monotonic()
        if entry is not None and entry.version == version:
            return entry.counts, 0.0
        if entry is not None and entry.took >= SYNC_BUDGET and moment - entry.at < STALE_LIMIT:
            self._recount_in_background(rt, key)
            return entry.counts, moment - entry.at
        counts = count_messages(session, start, end)
        self._store(key, _Entry(version, moment, counts, time.monotonic() - moment))
        return counts, 0.0

    def _store(self, key: tuple[datetime, datetime], entry: _Entry) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.at <= entry.at:
                self._entries[key] = entry
            while len(self._entries) > MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))

    def _recount_in_background(self, rt: Runtime, key: tuple[datetime, datetime]) -> None:
        with self._lock:
            if key in self._running:
                return
            self._running.add(key)

        def run() -> None:
            try:
                with read_session(rt) as session:
                    started = time.monotonic()
                    version = funnel_version(session)
                    counts = count_messages(session, *key)
                    self._store(key, _Entry(version, started, counts, time.monotonic() - started))
            except Exception:  # the next view recounts; the figures shown stay as they were
                log.exception("funnel recount failed")
            finally:
                with self._lock:
                    self._running.discard(key)

        threading.Thread(target=run, name="funnel-recount", daemon=True).start()


def funnel_for(rt: Runtime, cache: FunnelCache, session: Session, dates: DateRange) -> tuple[FunnelReport, int]:
    """The report of a bounded range and the age in whole seconds of its message figures."""
    assert dates.start is not None and dates.end is not None and dates.first and dates.last
    counts, age = cache.counts(rt, session, dates.start, dates.end)
    bookings = count_bookings(session, dates.start, dates.end)
    report = build_report(rt.campaigns, counts, bookings, first=dates.first, last=dates.last, zone=clinic_zone(rt),
                          delivery_known=rt.settings.delivery != "outbox")
    return report, math.ceil(age)  # any staleness shows as at least "1 s ago", never as live


# -- chart geometry (the templates draw it; no script, no CDN) ---------------------------------------

BAR_WIDTH = 360  # px of the longest bar
BAR_STAGES = ("sent", "delivered", "clicked", "booked")


@dataclass(frozen=True, slots=True)
class Bar:
    stage: str
    value: int
    width: int
    y: int


@dataclass(frozen=True, slots=True)
class StepBars:
    label: str
    bars: list[Bar]
    y: int


def step_bars(funnel: CampaignFunnel, delivery_known: bool) -> tuple[list[StepBars], int]:
    """Bars per step that sent anything in the range (a step with nothing to show gets no block of
    zeros); widths relative to the largest `sent`. Returns the rows and the chart's height."""
    stages = [s for s in BAR_STAGES if delivery_known or s != "delivered"]
    active = [step for step in funnel.steps if step.sent or step.booked]
    top = max([step.sent for step in active] + [1])
    rows, y = [], 0
    for step in active:
        bars = []
        for index, stage in enumerate(stages):
            value = int(getattr(step, stage))
            bars.append(Bar(stage, value, max(1 if value else 0, round(BAR_WIDTH * value / top)), y + 20 + index * 14))
        rows.append(StepBars(step_title(step.position, step.step), bars, y))
        y += 20 + len(stages) * 14 + 14
    return rows, y


def step_title(position: int, step_id: str) -> str:
    """"2. Welcome sms": the step's place and its name in words."""
    return f"{position}. {humanise(step_id)}" if position else f"{humanise(step_id)} (no longer in the campaign)"


TREND_HEIGHT = 80
TREND_WIDTH = 560


@dataclass(frozen=True, slots=True)
class Column:
    day: date
    value: int
    x: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Trend:
    stage: str
    top: int
    columns: list[Column]


def trend(days: list[DayNumbers], stage: str) -> Trend:
    """One column per day for `stage` (sent, clicked or booked), scaled to the busiest day."""
    top = max([getattr(d, stage) for d in days] + [0])
    slot = TREND_WIDTH / max(len(days), 1)
    columns = [Column(d.day, getattr(d, stage), round(i * slot, 2), round(max(slot - 1, 0.5), 2),
                      round(TREND_HEIGHT * getattr(d, stage) / top, 2) if top else 0.0) for i, d in enumerate(days)]
    return Trend(stage, top, columns)
