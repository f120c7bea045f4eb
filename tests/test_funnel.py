"""A funnel staff can trust (issue 14): it moves the moment someone books, counts each booking under
one step (saying by which rule), never shows more clicked than delivered, has rates, a date range,
a daily trend with a text alternative, its own numbers on the campaign page, and a CSV export."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from patient_drip.contacts.bookings import BookingNotice, record_booking
from patient_drip.contacts.enrollment import end_enrollments
from patient_drip.dispatch.funnel_report import MessageCounts, build_report, count_bookings, count_messages
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Booking, BookingKind, ExitReason, Message, add_event
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact
from support.staff import add_user, make_client, sign_in_as


@pytest.fixture
def viewer(srt: Runtime, clock: VirtualClock) -> Iterator[tuple[TestClient, str]]:
    """A staff user's client (marketing sees the funnel too; staff can also mark someone booked)."""
    with make_client(srt, clock) as client:
        yield client, sign_in_as(client, srt, add_user(srt, "staff"), clock.now)


def stage(page: str, name: str, campaign: str = "ketamine-consult") -> int:
    block = page.split(f'data-campaign="{campaign}"')[1].split("</section>")[0]
    match = re.search(rf'data-stage="{name}">(\d+)<', block)
    assert match, f"no {name} total"
    return int(match.group(1))


def step_row(page: str, title: str) -> str:
    table = page.split('class="funnel-table"')[1].split("</table>")[0]
    return next(row for row in table.split("<tr>") if f">{title}<" in row)


def test_the_dashboard_funnel_moves_the_moment_someone_books(srt, clock, viewer):
    client, csrf = viewer
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    before = client.get("/admin").text
    assert stage(before, "booked") == 0 and stage(before, "sent") == 2
    assert "Live from the database" in before
    client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf})
    after = client.get("/admin").text  # no minute-long cache: the next view counts it
    assert stage(after, "booked") == 1
    # The booking counts once, under the one step it is attributed to (the last message sent: the text).
    # (Steps are numbered among the journey's messages: the two other welcome emails come before the text.)
    assert ">1 <" in step_row(after, "4. Welcome sms") and ">0 <" in step_row(after, "1. Welcome email")
    assert "Each booking counts once, under one step" in after


def test_a_newer_send_shows_at_once(srt, clock, viewer):
    client, _csrf = viewer
    add_contact(srt, clock.now)
    assert stage(client.get("/admin/funnel").text, "sent") == 0
    Dispatcher(srt, "w").run_once(clock.now)
    assert stage(client.get("/admin/funnel").text, "sent") == 2


def test_outbox_mode_never_shows_clicks_against_zero_delivered(srt, clock, viewer):
    client, _csrf = viewer
    add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    email = next(m for m in _messages(srt) if m.channel == "email")
    assert client.get(f"/b/{srt.tokens.booking(email.id)}").status_code in (302, 303, 307)
    page = client.get("/admin/funnel").text
    assert stage(page, "clicked") == 1
    assert 'data-stage="delivered"' not in page and "Outbox mode" in page
    assert "not known in outbox mode" in step_row(page, "1. Welcome email")


def test_a_click_counts_as_delivered_when_the_provider_sent_no_receipt():
    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    # One email sent and clicked, no delivery receipt (sent, delivered, clicked, skipped, failed).
    counts = MessageCounts({("c", "welcome-email", "email", "2026-03-02 15"): (1, 1, 1, 0, 0)}, {})
    report = build_report({}, counts, {}, first=start.date(), last=start.date(), zone=ZoneInfo("UTC"),
                          delivery_known=True)
    step = report.campaigns[0].steps[0]
    assert (step.sent, step.delivered, step.clicked) == (1, 1, 1) and step.rate("clicked") == 1.0


def test_counting_puts_a_click_without_receipt_under_delivered(rt, clock):
    """Both databases: the grouping by UTC hour is SQL that differs between them."""
    add_contact(rt, clock.now)
    Dispatcher(rt, "w").run_once(clock.now)
    with rt.sessions() as session, session.begin():
        email = session.scalar(select(Message).where(Message.channel == "email"))
        email.clicked_at = clock.now
        for minutes in (1, 2):  # opened twice: one message opened
            add_event(session, "email_open", clock.now + timedelta(minutes=minutes), contact_id=email.contact_id,
                      message_id=email.id)
    with rt.sessions() as session:
        counts = count_messages(session, clock.now - timedelta(days=1), clock.now + timedelta(days=1))
    assert counts.opens == {("ketamine-consult", "welcome-email"): 1}
    totals = {key[1]: value for key, value in counts.hourly.items()}
    assert totals["welcome-email"][:3] == (1, 1, 1) and totals["welcome-sms"][:3] == (1, 0, 0)
    # Hours are UTC on both databases (the clinic's days are made from them).
    assert {key[3] for key in counts.hourly} == {clock.now.strftime("%Y-%m-%d %H")}
    with rt.sessions() as session, session.begin():
        contact_id = session.scalar(select(Message.contact_id))
        record_booking(session, rt.tokens, rt.campaigns, BookingNotice("staff", BookingKind.BOOKED,
                                                                       contact_id=contact_id), clock.now, "test")
    with rt.sessions() as session:
        bookings = count_bookings(session, clock.now - timedelta(days=1), clock.now + timedelta(days=1))
    assert bookings == {("ketamine-consult", "welcome-email", clock.now.strftime("%Y-%m-%d %H")): 1}


def test_without_a_click_the_booking_goes_to_the_last_delivered_message(srt, clock):
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session, session.begin():
        email = session.scalar(select(Message).where(Message.channel == "email"))
        email.delivered_at = clock.now + timedelta(minutes=1)  # the text (sent later) has no receipt
        email_id = email.id
    with srt.sessions() as session, session.begin():
        record_booking(session, srt.tokens, srt.campaigns, BookingNotice("staff", BookingKind.BOOKED,
                                                                         contact_id=contact_id),
                       clock.now + timedelta(minutes=5), "test")
    with srt.sessions() as session:
        booking = session.scalar(select(Booking))
        assert (booking.message_id, booking.attribution, booking.step_id) == (email_id, "last_delivered",
                                                                              "welcome-email")


def test_date_range_rates_and_a_daily_trend_with_text_alternatives(srt, clock, viewer):
    client, _csrf = viewer
    old_id = add_contact(srt, clock.now - timedelta(days=40), email="old@example.com", phone=None, consent=("email",))
    Dispatcher(srt, "w").run_once(clock.now - timedelta(days=40))
    with srt.sessions() as session, session.begin():  # their sequence stopped then: nothing more of theirs
        end_enrollments(session, old_id, ExitReason.STAFF, clock.now - timedelta(days=40), "test")
    add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    recent = client.get("/admin/funnel").text  # the last 30 days: the old send is outside
    assert stage(recent, "sent") == 2
    old_day = (clock.now - timedelta(days=40)).date()
    old = client.get(f"/admin/funnel?from={old_day}&to={old_day}").text
    assert stage(old, "sent") == 1
    # Rates per step, of sent.
    assert "100.0%" not in step_row(recent, "1. Welcome email").split("</td>")[1]
    assert re.search(r">0 <span class=\"small\">0\.0%</span>", step_row(recent, "1. Welcome email"))
    # The trend: one column per day, each with its figure as text, and a table of the same.
    trend = recent.split('class="trend-chart"')[1].split("</svg>")[0]
    assert trend.count("<rect") == 30 and f"{clock.now.date()}: 2" in trend and "<title" in trend
    assert "Show the figures per day as a table" in recent
    bad = client.get("/admin/funnel?from=2026-03-05&to=2026-03-01")
    assert bad.status_code == 200 and "The end date is before the start date." in bad.text


def test_no_blocks_of_zeros_for_steps_that_sent_nothing(srt, clock, viewer):
    client, _csrf = viewer
    page = client.get("/admin/funnel").text
    assert "Nothing was sent in this period." in page and '<svg class="funnel-chart"' not in page
    add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    chart = client.get("/admin/funnel").text.split('<svg class="funnel-chart"')[1].split("</svg>")[0]
    assert re.findall(r'class="step-label">([^<]+)<', chart) == ["1. Welcome email", "4. Welcome sms"]


def test_the_campaign_page_has_its_own_numbers(srt, clock, viewer):
    client, csrf = viewer
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf})
    page = client.get("/admin/campaigns/ketamine-consult").text
    numbers = page.split('id="campaign-numbers"')[1].split("</section>\n</section>")[0]
    assert stage(numbers, "sent") == 2 and stage(numbers, "booked") == 1


def test_funnel_csv_per_step_and_per_day(srt, clock, viewer):
    client, csrf = viewer
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf})
    response = client.get("/admin/funnel.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(srt.campaign("ketamine-consult").message_steps) and rows[0]["step"] == "welcome-email"
    by_step = {row["step"]: row for row in rows}
    assert by_step["welcome-sms"]["booked"] == "1" and by_step["welcome-sms"]["booked_rate"] == "1.0000"
    assert by_step["welcome-email"]["delivered"] == "" and by_step["welcome-email"]["sent"] == "1"  # outbox mode
    days = list(csv.DictReader(io.StringIO(client.get("/admin/funnel.csv?by=day").text)))
    assert len(days) == 30 and days[-1] == {"campaign": "ketamine-consult", "day": str(clock.now.date()),
                                            "sent": "2", "clicked": "0", "booked": "1"}


def test_every_role_sees_the_funnel_and_none_needs_contact_access(srt, clock):
    for role in ("marketing", "clinician", "staff"):
        with make_client(srt, clock) as client:
            sign_in_as(client, srt, add_user(srt, role, f"{role}-f@clinic.test"), clock.now)
            assert client.get("/admin/funnel").status_code == 200
            assert client.get("/admin/funnel.csv").status_code == 200


def _messages(rt: Runtime) -> list[Message]:
    with rt.sessions() as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def test_days_are_the_clinics_days():
    # 03:30 UTC on 3 March is still 2 March in Chicago.
    counts = MessageCounts({("c", "s", "email", "2026-03-03 03"): (1, 0, 0, 0, 0)}, {})
    report = build_report({}, counts, {}, first=date(2026, 3, 2), last=date(2026, 3, 3),
                          zone=ZoneInfo("America/Chicago"), delivery_known=True)
    assert [(d.day.isoformat(), d.sent) for d in report.campaigns[0].days] == [("2026-03-02", 1), ("2026-03-03", 0)]


def test_a_slow_count_is_shown_with_its_age_while_a_recount_runs(srt, clock):
    """The large-database path: the last count is shown (never hidden as live) and replaced by the
    background recount, which the next view shows."""
    from patient_drip.web.admin.funnel_view import FunnelCache, _Entry
    from support.live import wait_until

    start, end = clock.now - timedelta(days=1), clock.now + timedelta(days=1)
    cache = FunnelCache()
    with srt.sessions() as session:
        empty = count_messages(session, start, end)
        # As if counting took 10 s: the next change is recounted in the background.
        cache._store((start, end), _Entry((-1, -1, -1), time.monotonic(), empty, took=10.0))
    add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session:
        shown, age = cache.counts(srt, session, start, end)
    assert shown is empty and age > 0  # the page then says "as of N s ago (recounting now)"

    def recounted() -> bool:
        with srt.sessions() as session:
            counts, age = cache.counts(srt, session, start, end)
        return age == 0 and sum(v[0] for v in counts.hourly.values()) == 2

    wait_until(recounted)
