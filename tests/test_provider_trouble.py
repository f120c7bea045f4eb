"""Provider trouble: 30% transient failures with Retry-After, timeouts, a ten-minute outage, expired
credentials. Through the official SDKs against the sandbox, with the sandbox calling our live web
app back; the schedule runs on a virtual clock, so ten minutes take no real time.

After recovery every message is delivered exactly once; retries are spaced by backoff and never
sooner than Retry-After; a refused credential pauses its channel with an alert instead of failing
every message.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from patient_drip import db
from support.chaos import audit_sandbox, drip_message_id, record_figures
from support.builders import VirtualClock, add_contact, drive, next_due, settled
from patient_drip.dispatch import outcome as dispatch
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Enrollment, EnrollmentStatus, Event, Message, MessageStatus
from patient_drip.dispatch.reconcile import reconcile_unknown
from patient_drip.runtime import Runtime
from patient_drip.providers.sandbox import Fault, SandboxServer
from support.live import LiveApp, live_sandbox_runtime, wait_until

pytestmark = pytest.mark.slow

PROVIDERS = ("twilio", "sendgrid")


def provider_runtime(database_url: str, sandbox: SandboxServer, **overrides: object) -> Runtime:
    # A one-second provider timeout: the hanging calls here hang for 1.3-1.5 s.
    return live_sandbox_runtime(database_url, sandbox, provider_timeout_seconds=1, **overrides)


@pytest.fixture
def live(database_url, sandbox, clock) -> Iterator[Runtime]:
    rt = provider_runtime(database_url, sandbox, max_attempts=10, worker_concurrency=4)
    with LiveApp(rt, clock):
        yield rt
    rt.close()


@pytest.fixture
def live_sqlite(sqlite_url, sandbox, clock) -> Iterator[Runtime]:
    rt = provider_runtime(sqlite_url, sandbox)
    with LiveApp(rt, clock):
        yield rt
    rt.close()


def people(rt: Runtime, clock: VirtualClock, count: int, prefix: str, first_phone: int = 2000) -> list[int]:
    return [add_contact(rt, clock.now, email=f"{prefix}{i}@example.com", phone=f"+1312555{first_phone + i}")
            for i in range(count)]


def assert_each_message_delivered_exactly_once(rt: Runtime, sandbox: SandboxServer, expected: int) -> None:
    wait_until(lambda: settled(rt), timeout=15)
    records = [m for m in sandbox.messages() if m.get("direction") == "outbound-api"]
    audit = audit_sandbox(records)
    assert audit.duplicates_by_id == {} and audit.duplicates_by_content == {}
    received = Counter(drip_message_id(r) for r in records)
    with rt.sessions() as session:
        messages = list(session.scalars(select(Message)))
        enrollments = Counter(str(s) for s in session.scalars(select(Enrollment.status)))
    assert len(messages) == expected
    assert Counter(str(m.status) for m in messages) == {"delivered": expected}
    assert all(received[m.id] == 1 for m in messages)
    assert set(enrollments) == {EnrollmentStatus.COMPLETED}


def attempt_gaps(rt: Runtime) -> list[tuple[int, int, float]]:
    """(attempt, wait the dispatcher chose, time that really passed before the next attempt) for
    every retry, from the message_retry / message_sent events on the virtual clock."""
    by_message: dict[int, list[Event]] = defaultdict(list)
    with rt.sessions() as session:
        for event in session.scalars(select(Event).where(Event.kind.in_(["message_retry", "message_sent"]))
                                     .order_by(Event.id)):
            by_message[event.message_id].append(event)
    gaps = []
    for events in by_message.values():
        for event, following in zip(events, events[1:]):
            if event.kind == "message_retry":
                gaps.append((int(event.detail["attempt"]), int(event.detail["retry_in_seconds"]),
                             (following.occurred_at - event.occurred_at).total_seconds()))
    return gaps


def test_thirty_percent_transient_failures_deliver_everything_once_with_backoff(live, sandbox, clock):
    # 30% of provider calls fail: 429s and 5xx (some with Retry-After), and now and then a call that
    # hangs past our timeout (the provider took it; its callback says so).
    faults = [Fault(status=429, retry_after=120), Fault(status=503, retry_after=30), Fault(status=503),
              Fault(status=500), Fault(status=429), Fault(timeout=True, hang_ms=1300)]
    for seed, provider in enumerate(PROVIDERS):
        sandbox.set_random_faults(provider, 0.3, faults, seed=seed + 11)
    contacts = people(live, clock, 25, "busy")
    expected = len(contacts) * 8
    drive(live, clock, Dispatcher(live, "w", rng=random.Random(3)))
    for provider in PROVIDERS:
        sandbox.set_random_faults(provider, 0, [])
    assert_each_message_delivered_exactly_once(live, sandbox, expected)

    stats = sandbox.state.stats
    injected = stats["twilio_random_faults"] + stats["sendgrid_random_faults"]
    hung = stats["twilio_hung"] + stats["sendgrid_hung"]
    requests = stats["twilio_requests"] + stats["sendgrid_requests"]
    assert 0.2 < injected / requests < 0.4 and hung > 0
    gaps = attempt_gaps(live)
    with live.sessions() as session:
        retries = session.scalar(select(func.count()).select_from(Event).where(Event.kind == "message_retry"))
    assert retries == injected - hung  # every refused call was retried; none was given up
    for attempt, chosen, waited in gaps:
        # Full jitter: attempt n waits between half and all of 30 s * 2^(n-1) -- or the provider's
        # Retry-After when that is longer -- and the next attempt really came no sooner.
        ceiling = min(dispatch.BACKOFF_CAP, dispatch.BACKOFF_BASE * 2 ** (attempt - 1)).total_seconds()
        assert ceiling / 2 - 1 <= chosen <= max(ceiling, 120)
        assert waited >= chosen
    honoured = sum(1 for _attempt, chosen, _waited in gaps if chosen >= 120)
    with live.sessions() as session:
        most = session.scalar(select(func.max(Message.attempts)))
    assert most >= 3
    record_figures(f"transient_failures_{live.engine.dialect.name}", {
        "messages": expected, "provider_requests": requests, "faults_injected": injected, "timeouts": hung,
        "retries": retries, "max_attempts_used": most, "retry_after_120s_honoured": honoured,
        "duplicates": 0, "lost": 0,
    })


def test_retry_waits_for_retry_after_and_backs_off_between_attempts(live_sqlite, sandbox, clock):
    add_contact(live_sqlite, clock.now, email=None, consent=("sms",))
    for fault in (Fault(status=429, retry_after=300), Fault(status=503), Fault(status=503), Fault(status=503)):
        sandbox.add_fault("twilio", fault)
    dispatcher = Dispatcher(live_sqlite, "w", rng=random.Random(5))
    times = []
    for _ in range(5):
        due = next_due(live_sqlite)
        clock.set(max(due, clock.now))
        times.append(clock.now)
        dispatcher.run_once(clock.now)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert gaps[0] >= 300  # Retry-After
    for attempt, gap in enumerate(gaps[1:], start=2):  # 30 s * 2^(n-1), full jitter in [half, all]
        ceiling = 30 * 2 ** (attempt - 1)
        assert ceiling / 2 <= gap <= ceiling
    assert len([m for m in sandbox.messages() if m.get("direction") == "outbound-api"]) == 1


def test_a_timeout_settled_by_the_providers_callback_is_delivered_not_resent(live_sqlite, sandbox, clock):
    contact = add_contact(live_sqlite, clock.now, campaign=None)
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=1500))
    sandbox.add_fault("sendgrid", Fault(timeout=True, hang_ms=1500))
    with live_sqlite.sessions() as session, session.begin():
        from patient_drip.contacts.enrollment import enroll
        from patient_drip.models import Contact

        enroll(session, session.get(Contact, contact), live_sqlite.campaign("ketamine-consult"),
               clock.now, "test")
    drive(live_sqlite, clock, Dispatcher(live_sqlite, "w"), until=clock.now)
    wait_until(lambda: settled(live_sqlite) and _statuses(live_sqlite) <= {"delivered", "unknown"})
    run = drive(live_sqlite, clock, Dispatcher(live_sqlite, "w"))
    assert run > 0
    assert_each_message_delivered_exactly_once(live_sqlite, sandbox, 8)


def _statuses(rt: Runtime) -> set[str]:
    with rt.sessions() as session:
        return {str(s) for s in session.scalars(select(Message.status))}


def test_a_timeout_while_twilio_still_queues_the_message_is_found_not_resent(live_sqlite, sandbox, clock):
    # Twilio holds the message in its queue (no DateSent yet) for longer than our reconcile grace:
    # asking Twilio must still find it, or the patient gets the text twice.
    sandbox.configure(callback_delay_ms=3000, twilio_status_callbacks=False)
    contact = add_contact(live_sqlite, clock.now, email=None, consent=("sms",))
    sandbox.add_fault("twilio", Fault(timeout=True, hang_ms=1500))
    dispatcher = Dispatcher(live_sqlite, "w")
    assert dispatcher.run_once(clock.now).outcomes["unknown"] == 1
    assert reconcile_unknown(live_sqlite, clock.now + timedelta(minutes=5)) == {"found": 1}
    sms = [m for m in sandbox.messages() if m.get("direction") == "outbound-api"]
    assert len(sms) == 1
    with live_sqlite.sessions() as session:
        message = session.scalar(select(Message).where(Message.contact_id == contact, Message.channel == "sms"))
        assert message.status == MessageStatus.SENT and message.provider_message_id == sms[0]["id"]


def test_a_ten_minute_outage_delivers_everything_exactly_once_after_recovery(database_url, sandbox, clock):
    # Default retry settings (DRIP_MAX_ATTEMPTS=6), as in production; one sending thread so that
    # the seeded jitter makes the run repeatable.
    rt = provider_runtime(database_url, sandbox)
    with LiveApp(rt, clock):
        _outage(rt, sandbox, clock)
    rt.close()


def _outage(live: Runtime, sandbox: SandboxServer, clock: VirtualClock) -> None:
    contacts = people(live, clock, 20, "outage")
    start = clock.now
    for provider in PROVIDERS:
        sandbox.add_fault(provider, Fault(status=503, times=10**6))
    drive(live, clock, Dispatcher(live, "w", rng=random.Random(9)),
          until=start + timedelta(minutes=10))
    refused = sandbox.state.stats["twilio_rejected"] + sandbox.state.stats["sendgrid_rejected"]
    sandbox.clear_faults()
    drive(live, clock, Dispatcher(live, "w", rng=random.Random(10)))
    record_figures("outage", {"outage_minutes": 10, "requests_refused_during_outage": refused,
                              "messages": len(contacts) * 8})
    assert_each_message_delivered_exactly_once(live, sandbox, len(contacts) * 8)


def test_expired_credentials_pause_the_channel_with_an_alert_and_lose_nothing(live, sandbox, clock, caplog):
    contacts = people(live, clock, 12, "creds")
    sandbox.configure(twilio_auth_token="rotated-by-someone")
    with caplog.at_level(logging.CRITICAL, logger="drip.dispatch"):
        summary = Dispatcher(live, "w").run_once(clock.now)
    twilio_refusals = sandbox.state.stats["twilio_rejected"]
    # The first refusal pauses SMS; at most the calls already in flight on other threads were made.
    assert 1 <= twilio_refusals <= live.settings.worker_concurrency
    assert summary.outcomes["paused"] == len(contacts)
    assert summary.outcomes["sent"] == len(contacts)  # the emails went out regardless
    alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert alerts and "drip resume sms" in alerts[0].getMessage()
    with live.sessions() as session:
        assert "provider refused" in db.get_kv(session, "pause:sms")
        paused_events = session.scalar(select(func.count()).select_from(Event).where(Event.kind == "channel_paused"))
        assert 1 <= paused_events <= live.settings.worker_concurrency
        sms = list(session.scalars(select(Message).where(Message.channel == "sms")))
        assert all(m.status == MessageStatus.RETRYING and m.attempts == 0 for m in sms)
    # Paused: passes keep finding nothing to send on SMS, and nobody is failed.
    for _ in range(3):
        clock.advance(timedelta(minutes=2))
        Dispatcher(live, "w").run_once(clock.now)
    assert sandbox.state.stats["twilio_rejected"] == twilio_refusals

    # SendGrid's key is revoked too: email pauses the same way (new people's welcome emails).
    # (Meanwhile the first people's sequences wait at their SMS step: a paused channel holds a
    # sequence at that channel's next step; nothing is skipped.)
    sandbox.configure(sendgrid_api_key="SG.revoked")
    contacts += people(live, clock, 3, "later", first_phone=3000)
    Dispatcher(live, "w").run_once(clock.now)
    with live.sessions() as session:
        assert db.get_kv(session, "pause:email")

    # The operator fixes the configuration and resumes (what `drip resume` does).
    sandbox.configure(twilio_auth_token=live.settings.twilio_auth_token.get_secret_value(),
                      sendgrid_api_key=live.settings.sendgrid_api_key.get_secret_value())
    with live.sessions() as session, session.begin():
        db.delete_kv(session, "pause:sms")
        db.delete_kv(session, "pause:email")
    drive(live, clock, Dispatcher(live, "w"))
    assert_each_message_delivered_exactly_once(live, sandbox, len(contacts) * 8)
    record_figures("expired_credentials", {"messages": len(contacts) * 8,
                                           "requests_refused": sandbox.state.stats["twilio_rejected"]
                                           + sandbox.state.stats["sendgrid_rejected"]})
