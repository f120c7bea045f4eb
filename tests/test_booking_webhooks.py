"""The schedulers' own webhooks against a live server: Calendly and Cal.com calls, shaped and signed as
each vendor documents, end the sequence on a booking, re-open it on a cancellation, keep it ended on a
reschedule, and tie the booking to the exact message through the booking link's tracking value;
forged, unsigned, stale and replayed calls change nothing. Unknown people are kept for staff."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from patient_drip.dispatch.funnel import campaign_summaries
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Booking, Enrollment, Event, EventKind, Message
from patient_drip.runtime import build_runtime
from support.builders import add_contact, make_settings
from support.live import LiveApp, loopback_url
from support.webhooks import calcom_event, calcom_headers, calendly_event, calendly_headers

CALENDLY_KEY = "calendly-signing-key-for-tests"
CALCOM_SECRET = "calcom-secret-for-tests"


@pytest.fixture
def live(database_url, clock, request):  # type: ignore[no-untyped-def]
    provider = getattr(request, "param", "calendly")
    rt = build_runtime(make_settings(database_url, public_url=loopback_url(), booking_provider=provider,
                                     calendly_signing_key=CALENDLY_KEY, calcom_webhook_secret=CALCOM_SECRET))
    with LiveApp(rt, clock) as app, httpx.Client(base_url=app.url, follow_redirects=False) as web:
        yield rt, web
    rt.close()


def _status(rt):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        return enrollment.status, enrollment.exit_reason


def _clicked_link(rt, web, clock):  # type: ignore[no-untyped-def]
    """Send the first messages, open the welcome email's booking link; returns (message id, where the
    link leads)."""
    Dispatcher(rt, "w").run_once(clock.now)
    with rt.sessions() as session:
        message = session.scalar(select(Message).where(Message.step_id == "welcome-email"))
    token = message.body_text.split(f"{rt.settings.public_url}/b/")[1].split()[0].rstrip(").,")
    answer = web.get(f"/b/{token}")
    assert answer.status_code == 302
    return message.id, urlsplit(answer.headers["location"])


def _bookings(rt):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return list(session.scalars(select(Booking).order_by(Booking.id)))


def _post_calendly(web, clock, event, **fields):  # type: ignore[no-untyped-def]
    body = calendly_event(event, at=clock.now, **fields)
    return web.post("/webhooks/calendly", content=body, headers=calendly_headers(CALENDLY_KEY, body, clock.now))


def test_calendly_booking_ends_the_sequence_and_is_credited_to_the_clicked_message(live, clock):
    rt, web = live
    add_contact(rt, clock.now, first_name="Alex")
    message_id, target = _clicked_link(rt, web, clock)
    query = parse_qs(target.query)
    # Prefilled for Calendly, tagged per campaign and step, our tracking value in utm_term.
    assert query["name"] == ["Alex"] and query["email"] == ["alex@example.com"]
    assert query["utm_campaign"] == ["ketamine-consult"] and query["utm_content"] == ["welcome-email"]
    tracking = query["utm_term"][0]
    clock.advance(timedelta(hours=2))
    # The person books with another address: the tracking value still finds them.
    answer = _post_calendly(web, clock, "invitee.created", email="alex.work@example.org", name="Alex R",
                            uri="https://api.calendly.com/scheduled_events/EV1/invitees/IN1", utm_term=tracking)
    assert answer.status_code == 200 and answer.json() == {"status": "booked", "matched": True,
                                                           "enrollments_ended": 1}
    assert _status(rt) == ("exited", "booked")
    [booking] = _bookings(rt)
    assert (booking.message_id, booking.attribution, booking.step_id) == (message_id, "tracking", "welcome-email")
    with rt.sessions() as session:
        steps = {s.step: s.booked for s in campaign_summaries(session, rt.campaigns)[0].steps}
    assert steps["welcome-email"] == 1 and sum(steps.values()) == 1  # one booking, one step


def test_calendly_cancel_reopens_and_reschedule_keeps_it_booked(live, clock):
    rt, web = live
    add_contact(rt, clock.now)
    _clicked_link(rt, web, clock)
    invitee = "https://api.calendly.com/scheduled_events/EV1/invitees/IN1"
    assert _post_calendly(web, clock, "invitee.created", email="alex@example.com", name="Alex",
                          uri=invitee).json()["status"] == "booked"
    # A reschedule: a cancel marked rescheduled, then a create naming the old invitee.
    clock.advance(timedelta(minutes=30))
    assert _post_calendly(web, clock, "invitee.canceled", email="alex@example.com", name="Alex", uri=invitee,
                          rescheduled=True).json()["status"] == "rescheduled"
    assert _post_calendly(web, clock, "invitee.created", email="alex@example.com", name="Alex",
                          uri=invitee + "-2", old_invitee=invitee).json()["status"] == "rescheduled"
    assert _status(rt) == ("exited", "booked")
    # A real cancellation re-opens the journey on its rebook path (`on_cancel`), due now.
    clock.advance(timedelta(hours=1))
    answer = _post_calendly(web, clock, "invitee.canceled", email="alex@example.com", name="Alex", uri=invitee + "-2")
    assert answer.json() == {"status": "cancelled", "matched": True, "enrollments_reopened": 1}
    assert _status(rt) == ("active", None)
    with rt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert rt.campaign("ketamine-consult").steps[enrollment.step_index].id == "rebook-sms"
        assert enrollment.next_due_at >= clock.now - timedelta(minutes=30)
        kinds = [e.kind for e in session.scalars(select(Event).order_by(Event.id))]
    assert EventKind.BOOKING_RESCHEDULED in kinds and EventKind.BOOKING_CANCELLED in kinds


@pytest.mark.parametrize("live", ["calcom"], indirect=True)
def test_calcom_created_cancelled_rescheduled_with_metadata_tracking(live, clock):
    rt, web = live
    add_contact(rt, clock.now)
    message_id, target = _clicked_link(rt, web, clock)
    query = parse_qs(target.query)
    assert query["email"] == ["alex@example.com"] and "metadata[drip]" in query
    drip = query["metadata[drip]"][0]

    def post(trigger: str, uid: str):  # type: ignore[no-untyped-def]
        body = calcom_event(trigger, uid=uid, email="ALEX@example.com", name="Alex", drip=drip, at=clock.now)
        return web.post("/webhooks/calcom", content=body, headers=calcom_headers(CALCOM_SECRET, body))

    assert post("BOOKING_CREATED", "uid-1").json()["status"] == "booked"
    assert _bookings(rt)[0].message_id == message_id
    assert post("BOOKING_RESCHEDULED", "uid-2").json()["status"] == "rescheduled"
    assert _status(rt) == ("exited", "booked")
    assert post("BOOKING_CANCELLED", "uid-2").json()["status"] == "cancelled"
    assert _status(rt) == ("active", None)
    assert post("PING", "uid-0").json() == {"status": "ignored"}


def test_forged_unsigned_stale_and_replayed_calls_change_nothing(live, clock):
    rt, web = live
    add_contact(rt, clock.now)
    body = calendly_event("invitee.created", email="alex@example.com", name="Alex", uri="u-1", at=clock.now)
    good = calendly_headers(CALENDLY_KEY, body, clock.now)
    forged = calendly_headers("not-the-key", body, clock.now)
    stale = calendly_headers(CALENDLY_KEY, body, clock.now - timedelta(minutes=4))
    refused = [
        (web.post("/webhooks/calendly", content=body, headers={"Content-Type": "application/json"}), 403),
        (web.post("/webhooks/calendly", content=body, headers=forged), 403),
        (web.post("/webhooks/calendly", content=body, headers=stale), 401),
        (web.post("/webhooks/calendly", content=body.replace(b"alex@", b"sam@"), headers=good), 403),
    ]
    cal_body = calcom_event("BOOKING_CREATED", uid="c-1", email="alex@example.com", name="Alex", at=clock.now)
    old_body = calcom_event("BOOKING_CREATED", uid="c-1", email="alex@example.com", name="Alex",
                            at=clock.now - timedelta(minutes=6))
    refused += [
        (web.post("/webhooks/calcom", content=cal_body, headers={"Content-Type": "application/json"}), 403),
        (web.post("/webhooks/calcom", content=cal_body, headers=calcom_headers("guess", cal_body)), 403),
        (web.post("/webhooks/calcom", content=old_body, headers=calcom_headers(CALCOM_SECRET, old_body)), 401),
    ]
    for answer, status in refused:
        assert answer.status_code == status, (answer.status_code, answer.text)
    assert _status(rt) == ("active", None) and _bookings(rt) == []
    # The genuine call works once; replayed inside the window it is recognised and changes nothing.
    assert web.post("/webhooks/calendly", content=body, headers=good).json()["status"] == "booked"
    assert web.post("/webhooks/calendly", content=body, headers=good).json()["status"] == "duplicate"
    assert len(_bookings(rt)) == 1


def test_without_a_configured_secret_every_call_is_refused(database_url, clock):
    rt = build_runtime(make_settings(database_url, public_url=loopback_url()))
    body = calcom_event("BOOKING_CREATED", uid="c-1", email="alex@example.com", name="Alex", at=clock.now)
    with LiveApp(rt, clock) as app, httpx.Client(base_url=app.url) as web:
        for path, headers in (("/webhooks/calcom", calcom_headers("", body)),
                              ("/webhooks/calendly", calendly_headers("", body, clock.now))):
            answer = web.post(path, content=body, headers=headers)
            assert answer.status_code == 403 and "is not configured" in answer.json()["error"]
    rt.close()


def test_an_unknown_person_is_kept_for_staff_and_a_no_show_is_recorded(live, clock):
    rt, web = live
    contact_id = add_contact(rt, clock.now)
    answer = _post_calendly(web, clock, "invitee.created", email="walk-in@example.org", name="Jordan Walk",
                            uri="u-unknown")
    assert answer.json() == {"status": "unmatched", "matched": False, "enrollments_ended": 0}
    [kept] = _bookings(rt)
    assert (kept.contact_id, kept.email, kept.name) == (None, "walk-in@example.org", "Jordan Walk")
    body = calendly_event("invitee.created", email="alex@example.com", name="Alex", uri="u-2", at=clock.now)
    web.post("/webhooks/calendly", content=body, headers=calendly_headers(CALENDLY_KEY, body, clock.now))
    no_show = (b'{"event": "invitee_no_show.created", "created_at": "2026-03-02T16:00:00Z", "payload": '
               b'{"invitee": {"uri": "u-2", "email": "alex@example.com", "name": "Alex"}, "uri": "ns-1"}}')
    answer = web.post("/webhooks/calendly", content=no_show, headers=calendly_headers(CALENDLY_KEY, no_show, clock.now))
    assert answer.json()["status"] == "no_show"
    with rt.sessions() as session:
        assert session.scalar(select(Event).where(Event.kind == EventKind.NO_SHOW)).contact_id == contact_id


def test_staff_see_unmatched_bookings_and_the_dashboard_counts_them(tmp_path, clock):
    from support.staff import add_user, make_client, runtime_for, sign_in_as

    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", calendly_signing_key=CALENDLY_KEY)
    with make_client(rt, clock) as client:
        body = calendly_event("invitee.created", email="walk-in@example.org", name="Jordan Walk", uri="u-9",
                              at=clock.now)
        assert client.post("/webhooks/calendly", content=body,
                           headers=calendly_headers(CALENDLY_KEY, body, clock.now)).json()["status"] == "unmatched"
        sign_in_as(client, rt, add_user(rt, "staff"), clock.now)
        dashboard = client.get("/admin")
        assert '<span class="card-value" id="bookings-unmatched">1</span>' in dashboard.text
        page = client.get("/admin/bookings?show=unmatched")
        assert page.status_code == 200
        assert "Not matched</strong>: Jordan Walk · walk-in@example.org" in page.text and "Calendly" in page.text
    rt.close()


def test_forgetting_a_person_clears_what_the_scheduler_told_us(live, clock):
    from patient_drip.contacts.privacy import forget
    from patient_drip.models import Contact

    rt, web = live
    contact_id = add_contact(rt, clock.now)
    for email, uri in (("alex@example.com", "u-1"), ("ALEX@example.com", "u-2")):
        body = calendly_event("invitee.created", email=email, name="Alex Rivera", uri=uri, at=clock.now)
        web.post("/webhooks/calendly", content=body, headers=calendly_headers(CALENDLY_KEY, body, clock.now))
    with rt.sessions() as session, session.begin():
        forget(session, rt.suppression_key, session.get(Contact, contact_id), clock.now, "test")
    assert [(b.email, b.phone, b.name, b.contact_id) for b in _bookings(rt)] == [(None, None, "", contact_id)] * 2


def test_a_timestamp_past_the_year_9999_is_refused_not_a_crash(live, clock):
    rt, web = live
    body = b'{"email": "alex@example.com"}'
    far = "999999999999"
    answers = [web.post("/webhooks/calendly", content=body, headers={"Calendly-Webhook-Signature": f"t={far},v1=00"}),
               web.post("/webhooks/booking", content=body, headers={"X-Drip-Timestamp": far, "X-Drip-Signature": "x"})]
    assert [a.status_code for a in answers] == [401, 403]  # the generic one: no secret configured here
