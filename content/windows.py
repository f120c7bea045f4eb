"""Send windows (quiet hours) in the contact's own time zone.

Pure functions of `now`; DST-safe because local wall-clock times are built with zoneinfo and
converted to UTC instants, never by adding hours to UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from patient_drip.content.campaign import Campaign, SendWindow
from patient_drip.content.journey import assign_variant, step_delay
from patient_drip.content.texting_rules import narrowing_rule, text_window, texting_rules
from patient_drip.models import Channel

UTC = timezone.utc


def _local(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone))


def _at(day: date, clock: time, zone: str) -> datetime:
    return datetime.combine(day, clock, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _open_day(day: date, window: SendWindow) -> bool:
    return not (window.skip_weekends and day.weekday() >= 5)


def in_window(now: datetime, zone: str, window: SendWindow) -> bool:
    local = _local(now, zone)
    if not _open_day(local.date(), window):
        return False
    return _at(local.date(), window.start, zone) <= now < _at(local.date(), window.end, zone)


def next_opening(now: datetime, zone: str, window: SendWindow) -> datetime:
    """`now` if it is inside the window, else the start of the next window (UTC)."""
    if in_window(now, zone, window):
        return now
    day = _local(now, zone).date()
    for offset in range(0, 9):
        candidate_day = day + timedelta(days=offset)
        if not _open_day(candidate_day, window):
            continue
        start = _at(candidate_day, window.start, zone)
        if start >= now:
            return start
    raise AssertionError("a send window opens at least once a week")  # unreachable: 7 days checked


def spread_offset(key: int, window: SendWindow) -> timedelta:
    """A stable offset in [0, spread) so a crowd waiting for 09:00 does not all go at 09:00:00."""
    seconds = window.spread_minutes * 60
    if seconds <= 0:
        return timedelta(0)
    return timedelta(seconds=(key * 7919) % seconds)


def spread_period(window: SendWindow) -> int:
    """`spread_offset` repeats with this period: `spread_offset(key) == spread_offset(key % period)`."""
    return max(1, window.spread_minutes * 60)


def schedule_into_window(due: datetime, zone: str, window: SendWindow, key: int) -> datetime:
    """Where a message due at `due` may actually go: unchanged inside the window, else at the next
    opening plus a per-contact spread (kept inside the window)."""
    opening = next_opening(due, zone, window)
    if opening == due:
        return due
    spread = spread_offset(key, window)
    local_day = _local(opening, zone).date()
    end = _at(local_day, window.end, zone)
    return min(opening + spread, end - timedelta(seconds=1))


def local_day_bounds(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """UTC start and end of the contact's current local calendar day (23 or 25 hours on DST days)."""
    day = _local(now, zone).date()
    return _at(day, time(0), zone), _at(day + timedelta(days=1), time(0), zone)


def window_for(campaign: Campaign, channel: str, phone: str | None) -> SendWindow | None:
    """The window a message on `channel` must go out in, or None when none applies (email, unless
    the campaign windows email too). A text's window is the strictest of the campaign's and the law
    for the number's presumed location (`content.texting_rules`)."""
    window = campaign.send_window
    if not window.applies_to(channel):
        return None
    if channel == Channel.SMS:
        return text_window(window, texting_rules().for_number(phone))
    return window


@dataclass(frozen=True, slots=True)
class Scheduled:
    """When a step goes out, and — when that is later than planned — why (for the timeline)."""

    due: datetime
    moved_because: str | None = None


def held_reason(campaign: Campaign, channel: str, phone: str | None, zone: str, planned: datetime) -> str:
    """Why a message planned for `planned` cannot go then: the law for the number when it is the law
    that closes that moment (the campaign's own window would allow it), else the campaign's hours."""
    window = campaign.send_window
    if channel == Channel.SMS and in_window(planned, zone, window):
        rule = narrowing_rule(window, texting_rules().for_number(phone))
        if rule is not None:
            return rule.describe()
    days = ", weekdays only" if window.skip_weekends else ""
    return f"outside the campaign's hours ({window.start:%H:%M}–{window.end:%H:%M}{days}, {zone})"


def schedule_step(campaign: Campaign, step_index: int, enrolled_at: datetime, zone: str, key: int, *,
                  phone: str | None, now: datetime | None = None) -> Scheduled | None:
    """When step `step_index` of `campaign` goes out for enrollment `key` whose contact lives in
    `zone` and has the number `phone` (texts follow the law for that number), and why it was moved
    if it was; None after the last step.

    A step is planned at its delay after enrolling (an A/B timing variant's delay for this
    enrollment, `content.journey.assign_variant`). A branch, wait or exit is not sent: it is due at
    its delay, or `now` when that is past (it is looked at as soon as it is reached)."""
    if step_index >= len(campaign.steps):
        return None
    step = campaign.steps[step_index]
    planned = enrolled_at + step_delay(step, assign_variant(key, step))
    if not step.is_message:
        return Scheduled(planned if now is None else max(planned, now))
    if not step.enabled or (step.channel == Channel.SMS and not phone):
        # Off in this timing version, or no number: the step will be skipped when it is due, so it
        # must not wait for a texting window (and hold every step after it until the morning).
        return Scheduled(planned)
    window = window_for(campaign, step.channel, phone)
    if window is None:
        return Scheduled(planned)
    due = schedule_into_window(planned, zone, window, key)
    if due == planned:
        return Scheduled(due)
    return Scheduled(due, held_reason(campaign, step.channel, phone, zone, planned))


def step_due_at(campaign: Campaign, step_index: int, enrolled_at: datetime, zone: str, key: int, *,
                phone: str | None) -> datetime | None:
    """`schedule_step`'s time alone."""
    scheduled = schedule_step(campaign, step_index, enrolled_at, zone, key, phone=phone)
    return scheduled.due if scheduled is not None else None


@dataclass(frozen=True, slots=True)
class FirstOpening:
    """When the first message of a new request may go out (it cannot now), and the hours that apply."""

    at: datetime  # UTC
    window: SendWindow


def first_opening(campaign: Campaign, channels: set[str], zone: str, phone: str | None,
                  now: datetime) -> FirstOpening | None:
    """When the first step of `campaign` on one of `channels` may go out for a request made at
    `now` by someone in `zone` with the number `phone` (a text follows the law for that number), if
    that is not at its planned time; None when it goes as planned (or no step uses those channels).

    A pure function of what was submitted and the campaign, never of who the person is: the public
    form answers the same whether or not it names someone we know (issue 11). No per-person spread
    either (it depends on an enrollment id): the window's opening is the earliest it can be."""
    step = next((s for s in campaign.message_steps if s.channel in channels), None)
    if step is None:
        return None
    window = window_for(campaign, step.channel, phone)
    planned = now + step.delay
    if window is None:
        return None
    opening = next_opening(planned, zone, window)
    return None if opening == planned else FirstOpening(opening, window)


def local_label(moment: datetime, zone: str) -> str:
    """'Tue 3 Dec 08:07 (America/New_York)': a time as the contact lives it, for staff to read."""
    local = _local(moment, zone)
    return f"{local:%a} {local.day} {local:%b %H:%M} ({zone})"
