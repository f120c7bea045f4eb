"""Quiet hours in the contact's own time zone, across DST changes (pure functions of `now`)."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from patient_drip.content.campaign import SendWindow
from patient_drip.content.windows import in_window, local_day_bounds, next_opening, schedule_into_window

UTC = timezone.utc
WINDOW = SendWindow(start=time(9), end=time(20), spread_minutes=20)


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize("zone", ["America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata",
                                  "Australia/Sydney"])
def test_window_is_evaluated_in_local_time(zone):
    assert in_window(local(zone, 2026, 6, 1, 9, 0), zone, WINDOW)
    assert in_window(local(zone, 2026, 6, 1, 19, 59), zone, WINDOW)
    assert not in_window(local(zone, 2026, 6, 1, 20, 0), zone, WINDOW)
    assert not in_window(local(zone, 2026, 6, 1, 8, 59), zone, WINDOW)


def test_late_evening_waits_for_next_morning():
    zone = "America/Chicago"
    assert next_opening(local(zone, 2026, 6, 1, 22, 30), zone, WINDOW) == local(zone, 2026, 6, 2, 9, 0)


def test_spring_forward_night_opens_at_nine_local():
    zone = "America/New_York"  # 2026-03-08 02:00 → 03:00
    opening = next_opening(local(zone, 2026, 3, 7, 23, 0), zone, WINDOW)
    assert opening.astimezone(ZoneInfo(zone)).hour == 9
    assert opening == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)  # EDT is UTC-4


def test_fall_back_night_opens_at_nine_local():
    zone = "America/New_York"  # 2026-11-01 02:00 → 01:00
    opening = next_opening(local(zone, 2026, 10, 31, 23, 0), zone, WINDOW)
    assert opening == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)  # EST is UTC-5
    start, end = local_day_bounds(opening, zone)
    assert end - start == timedelta(hours=25)


def test_weekends_skipped_when_configured():
    window = SendWindow(start=time(9), end=time(20), skip_weekends=True)
    zone = "America/Denver"
    friday_night = local(zone, 2026, 6, 5, 21, 0)
    assert next_opening(friday_night, zone, window) == local(zone, 2026, 6, 8, 9, 0)


def test_deferred_messages_are_spread_over_the_first_minutes():
    zone = "America/Chicago"
    due = local(zone, 2026, 6, 1, 23, 0)
    times = {schedule_into_window(due, zone, WINDOW, key) for key in range(200)}
    assert len(times) > 50
    assert min(times) >= local(zone, 2026, 6, 2, 9, 0)
    assert max(times) < local(zone, 2026, 6, 2, 9, 20)
    inside = local(zone, 2026, 6, 1, 12, 0)
    assert schedule_into_window(inside, zone, WINDOW, 7) == inside
