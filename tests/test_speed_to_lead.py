"""Speed to lead (issue 15): a consultation request's first email goes out when the request is
processed, not at the next dispatch tick -- with `drip serve` running its own scheduler (an in-process
wake) and with a separate web process and `drip worker` on PostgreSQL (LISTEN/NOTIFY). The tick is
set to a minute here, so a delivery within seconds can only be the wake. Timings are functional
bounds; the numbers are in `make bench` (phase 7)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from patient_drip import due_now
from patient_drip.dispatch.listener import APPLICATION_NAME, DueListener
from patient_drip.dispatch.wake import Waker
from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import build_runtime, utcnow
from support.builders import add_contact, all_day_campaigns, make_settings, midday_zone
from support.chaos import provider_env
from support.live import drip_process, free_port, wait_until

TICK = "60"  # DRIP_DISPATCH_INTERVAL: far longer than any wait below
LIFTED = {"DRIP_INTAKE_FORM_LIMIT": "1000/1s", "DRIP_INTAKE_SMS_PER_NUMBER": "1000/1s",
          "DRIP_INTAKE_SMS_PER_NETWORK": "1000/1s", "DRIP_INTAKE_SMS_GLOBAL": "1000/1s"}


def _env(database_url: str, sandbox: SandboxServer, port: int, folder: Path) -> dict[str, str]:
    # The real campaign, open all day: the request's number (a Chicago one) decides its zone, and
    # this must pass at whatever hour the suite runs.
    return provider_env(database_url, f"http://127.0.0.1:{port}", sandbox.url, sandbox.public_key,
                        all_day_campaigns(folder / "campaigns"), DRIP_DISPATCH_INTERVAL=TICK, **LIFTED)


def _post(port: int, email: str, phone: str) -> None:
    answer = httpx.post(f"http://127.0.0.1:{port}/api/consultations", timeout=10, json={
        "first_name": "Robin", "email": email, "phone": phone, "consent_email": True, "consent_sms": True,
        "timezone": midday_zone(utcnow())})
    assert answer.status_code == 202, answer.text


def _welcome_email(sandbox: SandboxServer, to: str) -> bool:
    return any("confirm" not in (m.get("subject") or "").lower() for m in sandbox.messages("sendgrid", to=to))


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_with_its_scheduler_sends_the_first_email_without_waiting_for_the_tick(sqlite_url, sandbox, tmp_path):
    port = free_port()
    with drip_process(["serve", "--port", str(port)], _env(sqlite_url, sandbox, port, tmp_path), tmp_path / "serve.log",
                      ready="patient-drip on"):
        wait_until(lambda: _serving(port), timeout=30)
        time.sleep(1.0)  # past the scheduler's first tick, which runs at start
        _post(port, "robin.serve@example.com", "+13125550161")
        wait_until(lambda: _welcome_email(sandbox, "robin.serve@example.com"), timeout=10)
        wait_until(lambda: bool(sandbox.messages("twilio", to="+13125550161")), timeout=10)  # the YES text


@pytest.mark.postgres
def test_separate_web_and_worker_on_postgresql_send_the_first_email_without_waiting_for_the_tick(
        postgres_url, sandbox, tmp_path):
    port = free_port()
    env = _env(postgres_url, sandbox, port, tmp_path)
    with drip_process(["worker"], env, tmp_path / "worker.log", ready="dispatching every"), \
            drip_process(["serve", "--no-scheduler", "--port", str(port)], env, tmp_path / "web.log",
                         ready="patient-drip on"):
        wait_until(lambda: _serving(port), timeout=30)
        wait_until(lambda: _listening(postgres_url) == 1, timeout=15)
        _post(port, "robin.pg@example.com", "+13125550162")
        wait_until(lambda: _welcome_email(sandbox, "robin.pg@example.com"), timeout=10)


def _listening(postgres_url: str) -> int:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"),
                {"name": APPLICATION_NAME}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_listener_survives_a_dropped_connection_and_wakes_again(postgres_url, caplog):
    rt = build_runtime(make_settings(postgres_url))
    woken = threading.Event()
    listener = DueListener(rt.engine, woken.set).start()
    try:
        wait_until(listener.connected.is_set)
        with caplog.at_level(logging.INFO, logger="drip.listener"):
            with rt.engine.connect() as connection:
                ended = connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database()"), {"name": APPLICATION_NAME})
                assert ended.scalar_one() == 1
            wait_until(lambda: listener.connects == 2, timeout=15)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "reconnecting" in warnings[0].getMessage()
        woken.clear()
        heard = listener.notifications
        add_contact(rt, utcnow(), email="after.drop@example.com", phone=None, consent=("email",),
                    timezone=midday_zone(utcnow()))
        wait_until(woken.is_set)
        assert listener.notifications == heard + 1
        assert not any("after.drop" in r.getMessage() for r in caplog.records)
    finally:
        listener.stop()
        rt.close()


def test_an_unreachable_database_gives_one_warning_line_not_one_per_attempt(caplog):
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing_listens_here")
    listener = DueListener(engine, lambda: None)
    try:
        with caplog.at_level(logging.INFO, logger="drip.listener"):
            listener.start()
            time.sleep(2.5)  # about three attempts with the backoff (0.5 s, then 1 s, then 2 s, jittered)
        assert not listener.connected.is_set() and listener.connects == 0
        lines = [r for r in caplog.records if r.name == "drip.listener"]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in lines]
        assert "nothing_listens_here" not in lines[0].getMessage()  # the class of the error only
    finally:
        listener.stop()
        engine.dispose()


@pytest.mark.postgres
def test_a_rolled_back_enrollment_notifies_nobody(postgres_url):
    rt = build_runtime(make_settings(postgres_url))
    listener = DueListener(rt.engine, lambda: None).start()
    try:
        wait_until(listener.connected.is_set)
        from patient_drip.contacts.changes import parse_contact_input, upsert_contact
        from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording
        from patient_drip.contacts.enrollment import enroll
        from patient_drip.contacts.fields import ZoneSource
        from patient_drip.models import Channel, ConsentMethod

        now = utcnow()
        with rt.sessions() as session:
            session.begin()
            data = parse_contact_input({"email": "undone@example.com", "first_name": "Undone",
                                        "timezone": midday_zone(now)}, rt.settings.clinic_timezone,
                                       zone_source=ZoneSource.STAFF, source="test")
            contact, _ = upsert_contact(session, rt.suppression_key, data, now, "test")
            grant_consent(session, load_wording(rt.settings.policy_dir), contact,
                          ConsentGrant(Channel.EMAIL, ConsentMethod.STAFF), now, "test")
            enroll(session, contact, rt.campaign("ketamine-consult"), now, "test")
            session.rollback()
        add_contact(rt, now, email="kept@example.com", phone=None, consent=("email",), timezone=midday_zone(now))
        wait_until(lambda: listener.notifications >= 1)
        time.sleep(0.3)
        assert listener.notifications == 1  # the committed one only (PostgreSQL keeps commit order)
    finally:
        listener.stop()
        rt.close()


def test_a_commit_that_made_work_due_now_wakes_this_process_and_a_rollback_does_not(sqlite_url):
    rt = build_runtime(make_settings(sqlite_url))
    calls: list[int] = []
    remove = due_now.on_commit(rt.sessions, lambda: calls.append(1))
    try:
        now = utcnow()
        add_contact(rt, now, email="woken@example.com", phone=None, consent=("email",), timezone=midday_zone(now))
        assert calls == [1]
        add_contact(rt, now, email="not.enrolled@example.com", phone=None, consent=("email",), campaign=None)
        assert calls == [1]  # nothing became due
        with rt.sessions() as session:
            session.begin()
            due_now.mark_due(session, now, now)
            session.rollback()
            session.begin()
            session.commit()
        assert calls == [1]
    finally:
        remove()
        rt.close()


def test_an_import_whose_rows_are_due_now_wakes_this_process_once_per_chunk(sqlite_url, clock):
    import io

    from patient_drip.contacts.importer import import_csv

    rt = build_runtime(make_settings(sqlite_url))
    calls: list[int] = []
    remove = due_now.on_commit(rt.sessions, lambda: calls.append(1))
    try:  # START is 09:30 in Chicago: inside the window, the first emails are due at once
        rows = "".join(f"Pat,Doe{i},pat{i}@example.com,,America/Chicago,yes,no,test\n" for i in range(5))
        report = import_csv(rt, io.StringIO("first_name,last_name,email,phone,timezone,consent_email,consent_sms,"
                                            "source\n" + rows), rt.campaign("ketamine-consult"), clock.now, "cli:test")
        assert report.failed == 0
        assert calls == [1]
        clock.set(datetime(2026, 3, 3, 3, 0, tzinfo=timezone.utc))  # 21:00 in Chicago: due tomorrow, no wake
        later = "".join(f"Sam,Doe{i},sam{i}@example.com,,America/Chicago,yes,no,test\n" for i in range(3))
        import_csv(rt, io.StringIO("first_name,last_name,email,phone,timezone,consent_email,consent_sms,source\n"
                                   + later), rt.campaign("ketamine-consult"), clock.now, "cli:test")
        assert calls == [1]
    finally:
        remove()
        rt.close()


def test_wakes_during_a_pass_give_exactly_one_more_pass_and_passes_never_overlap():
    inside = threading.Event()
    release = threading.Event()
    running = 0
    overlaps = 0
    lock = threading.Lock()

    def one_pass() -> None:
        nonlocal running, overlaps
        with lock:
            running += 1
            overlaps += running > 1
        inside.set()
        release.wait(5)
        with lock:
            running -= 1

    waker = Waker(one_pass)
    waker.start()
    try:
        waker.wake()
        assert inside.wait(5)
        for _ in range(50):  # a burst while the first pass runs
            waker.wake()
        tick = threading.Thread(target=waker.run)  # the interval tick arrives too
        tick.start()
        tick.join(5)
        assert not tick.is_alive(), "the tick must not wait behind a running pass"
        inside.clear()
        release.set()
        wait_until(lambda: waker.passes >= 2)
        time.sleep(0.3)
        assert waker.passes == 2 and overlaps == 0
    finally:
        release.set()
        waker.stop()


def test_the_waker_stops_after_its_running_pass():
    started = threading.Event()
    finished: list[bool] = []

    def slow_pass() -> None:
        started.set()
        time.sleep(0.3)
        finished.append(True)

    waker = Waker(slow_pass)
    waker.start()
    waker.wake()
    assert started.wait(5)
    waker.wake()  # would be one more pass, but stop comes first
    waker.stop()
    assert finished == [True] and waker.passes == 1


def _thanks(client: TestClient, **fields: str) -> str:
    answer = client.post("/api/consultations", data={"first_name": "Robin", "consent_email": "yes", **fields})
    assert answer.status_code == 200 and "Thank you" in answer.text, answer.text[:500]
    return answer.text


def test_the_thank_you_page_outside_the_send_window_says_when_the_first_message_comes(client, clock):
    clock.set(datetime(2026, 3, 3, 3, 0, tzinfo=timezone.utc))  # Monday 21:00 in Chicago: after 20:00
    page = _thanks(client, email="late@example.com", timezone="America/Chicago")
    assert "after <strong>09:00 on Tuesday 3 March</strong> (America/Chicago)" in page
    assert "09:00–20:00 your time" in page


def test_the_expected_time_follows_the_submitted_zone_and_is_the_same_for_a_known_person(client, clock):
    clock.set(datetime(2026, 3, 3, 3, 0, tzinfo=timezone.utc))  # 19:00 in Los Angeles: inside the window
    inside = _thanks(client, email="west@example.com", timezone="America/Los_Angeles")
    assert "outside the hours" not in inside
    clock.set(datetime(2026, 3, 3, 13, 0, tzinfo=timezone.utc))  # 05:00 in Los Angeles, 07:00 in Chicago
    first = _thanks(client, email="west@example.com", timezone="America/Los_Angeles")  # now a known person
    stranger = _thanks(client, email="someone.new@example.com", timezone="America/Los_Angeles")
    assert "after <strong>09:00 on Tuesday 3 March</strong> (America/Los_Angeles)" in first
    assert first == stranger  # the page tells nothing about who we know


def test_a_text_only_request_is_told_when_its_first_text_may_come(client, clock):
    # 08:30 in Chicago: the campaign's window (from 09:00) is what waits, for the text as for email.
    clock.set(datetime(2026, 3, 3, 14, 30, tzinfo=timezone.utc))
    page = _thanks(client, phone="+13125550177", consent_sms="yes", consent_email="", timezone="America/Chicago")
    assert "after <strong>09:00 on Tuesday 3 March</strong> (America/Chicago)" in page
