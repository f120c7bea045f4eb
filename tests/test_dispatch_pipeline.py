"""The batched, pipelined dispatcher: sends run on a thread pool while the next batch is prepared,
outcomes are recorded in batches — and each due message still goes out exactly once."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from patient_drip import db
from support.builders import ROOT, add_contact, make_settings, sandbox_settings
from patient_drip.dispatch.counters import COUNTERS
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Contact, Enrollment, Event, Message, MessageStatus
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.providers.sandbox import Fault


def provider_runtime(database_url: str, sandbox, **overrides: object) -> Runtime:  # type: ignore[no-untyped-def]
    # Four threads and small batches: several batches in flight within one pass.
    return build_runtime(sandbox_settings(database_url, sandbox, **{
        "sms_rate_per_second": 10_000, "email_rate_per_second": 10_000, "provider_timeout_seconds": 3,
        "worker_concurrency": 4, "dispatch_batch_size": 7, **overrides}))


@pytest.fixture
def live(database_url, sandbox) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    sandbox.configure(twilio_status_callbacks=False)
    runtime = provider_runtime(database_url, sandbox)
    yield runtime
    runtime.close()


def people(rt: Runtime, now, count: int, **kwargs) -> list[int]:  # type: ignore[no-untyped-def]
    return [add_contact(rt, now, email=f"p{i}@example.com", phone=f"+1312555{1000 + i:04d}", first_name=f"P{i}",
                        **kwargs) for i in range(count)]


def test_every_due_message_goes_out_once_across_many_batches(live, sandbox, clock):
    people(live, clock.now, 30)
    summary = Dispatcher(live, "w").run_once(clock.now)
    # day 0 is an email then an SMS: the SMS falls due while the pass runs and goes in the same pass
    assert summary.outcomes == Counter({"sent": 60}) and summary.claimed == 60
    received = Counter((m["to"], m["subject"] or m["text"][:40]) for m in sandbox.messages())
    assert len(received) == 60 and set(received.values()) == {1}
    with live.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.status == "sent")) == 60
        due = set(session.scalars(select(Enrollment.next_due_at)))
        assert due and all(d - clock.now >= timedelta(days=2) for d in due)
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "message_sent")) == 60
    # nothing more is due at this moment
    assert Dispatcher(live, "w2").run_once(clock.now).claimed == 0


def test_outbox_pipeline_with_a_large_batch(rt_outbox, clock):
    people(rt_outbox, clock.now, 25)
    summary = Dispatcher(rt_outbox, "w").run_once(clock.now)
    assert summary.outcomes == Counter({"sent": 50})
    with rt_outbox.sessions() as session:
        bodies = list(session.scalars(select(Message.body_text)))
        assert len(bodies) == 50 and all("https://clinic.test/b/" in b for b in bodies)


@pytest.fixture
def rt_outbox(database_url) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(database_url, worker_concurrency=6, dispatch_batch_size=500))
    yield runtime
    runtime.close()


def test_auth_failure_pauses_the_channel_for_the_whole_pass(database_url, sandbox, clock):
    sandbox.configure(twilio_status_callbacks=False)
    live = provider_runtime(database_url, sandbox, worker_concurrency=3, dispatch_batch_size=50)
    try:
        for index in range(8):
            add_contact(live, clock.now, email=None, phone=f"+1312555030{index}", consent=("sms",))
        sandbox.configure(twilio_auth_token="rotated")
        summary = Dispatcher(live, "w").run_once(clock.now)
        assert summary.outcomes == Counter({"paused": 8})
        assert sandbox.state.stats["twilio_rejected"] <= 3  # at most the calls already in flight
        with live.sessions() as session:
            assert db.get_kv(session, "pause:sms")
            messages = list(session.scalars(select(Message).where(Message.channel == "sms")))
            # records exist only for calls that reached the provider, and none of them counts
            assert len(messages) <= 3 and all(m.status == MessageStatus.RETRYING and m.attempts == 0 for m in messages)
            assert all(due >= clock.now + timedelta(minutes=1) for due in session.scalars(select(Enrollment.next_due_at)))
    finally:
        live.close()


def test_transient_errors_in_a_pooled_pass_retry_only_those_messages(live, sandbox, clock):
    people(live, clock.now, 6, consent=("sms",))
    sandbox.add_fault("twilio", Fault(status=503, times=2))
    summary = Dispatcher(live, "w").run_once(clock.now)
    assert summary.outcomes["retrying"] == 2 and summary.outcomes["sent"] == 4
    with live.sessions() as session:
        retrying = list(session.scalars(select(Message).where(Message.status == MessageStatus.RETRYING)))
        assert len(retrying) == 2 and all(m.attempts == 1 and m.last_error for m in retrying)


def test_one_bad_row_does_not_hold_back_its_batch(live, sandbox, clock):
    ids = people(live, clock.now, 5, consent=("email",))
    with live.sessions() as session, session.begin():  # a zone that does not exist any more
        session.execute(update(Contact).where(Contact.id == ids[2]).values(timezone="Atlantis/Capital"))
    summary = Dispatcher(live, "w").run_once(clock.now)
    assert summary.outcomes["sent"] == 4 and summary.outcomes["error"] == 1
    assert len(sandbox.messages()) == 4
    with live.sessions() as session:  # the bad one waits out its lease; nothing was written for it
        held = session.scalar(select(Enrollment).where(Enrollment.contact_id == ids[2]))
        assert held.claimed_by == "w" and held.next_due_at > clock.now
        assert session.scalar(select(func.count()).select_from(Message).where(Message.contact_id == ids[2])) == 0


def test_a_template_that_fails_to_render_defers_only_its_enrollments(database_url, tmp_path: Path, clock):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    shutil.copy(ROOT / "campaigns" / "ketamine-consult.yaml", campaigns)
    (templates / "email" / "99-broken.html").write_text(
        '{% extends "email/_layout.html" %}{% block subject %}Hi{% endblock %}{% block body %}{{ 1 // 0 }}'
        '{% endblock %}', encoding="utf-8")
    text = (ROOT / "campaigns" / "ketamine-consult.yaml").read_text().replace("id: ketamine-consult", "id: broken")
    (campaigns / "broken.yaml").write_text(text.replace("email/01-welcome.html", "email/99-broken.html")
                                           .replace("languages: [en, es]", "languages: [en]"))
    settings = make_settings(database_url, templates_dir=templates, campaigns_dir=campaigns, worker_concurrency=3)
    db.upgrade(database_url)
    rt = build_runtime(settings)
    try:
        good = [add_contact(rt, clock.now, email=f"g{i}@example.com", phone=None, consent=("email",)) for i in range(3)]
        bad = add_contact(rt, clock.now, email="b@example.com", phone=None, consent=("email",), campaign="broken")
        summary = Dispatcher(rt, "w").run_once(clock.now)
        assert summary.outcomes["sent"] == 3 and summary.outcomes["error"] == 1
        with rt.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Message).where(Message.contact_id == bad)) == 0
            held = session.scalar(select(Enrollment).where(Enrollment.contact_id == bad))
            assert held.next_due_at == clock.now + timedelta(minutes=10) and held.claimed_by is None
            assert all(session.scalar(select(func.count()).select_from(Message).where(
                Message.contact_id == g, Message.status == "sent")) == 1 for g in good)
    finally:
        rt.close()


def test_max_batches_and_stop_finish_what_is_in_flight(live, sandbox, clock):
    people(live, clock.now, 20, consent=("email",))
    dispatcher = Dispatcher(live, "w")
    first = dispatcher.run_once(clock.now, max_batches=1)
    assert first.claimed == 7 and first.outcomes["sent"] == 7
    dispatcher.stop_requested.set()
    assert dispatcher.run_once(clock.now).claimed == 0
    dispatcher.stop_requested.clear()
    rest = dispatcher.run_once(clock.now)
    assert rest.outcomes["sent"] == 13
    with live.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.status == "sending")) == 0


def test_provider_calls_are_counted_for_metrics(live, sandbox, clock):
    before = COUNTERS.snapshot()["messages"].get(("email", "sent"), 0)
    people(live, clock.now, 3, consent=("email",))
    Dispatcher(live, "w").run_once(clock.now)
    snapshot = COUNTERS.snapshot()
    assert snapshot["messages"][("email", "sent")] == before + 3
    assert snapshot["latency_count"]["email"] >= 3
