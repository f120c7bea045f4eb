"""Pausing and resuming a channel for everyone: the dispatcher (a provider refused our account), the
admin settings page and `drip resume` all go through `dispatch.pauses` and leave the same records —
the pause row, a `channel_paused` / `channel_resumed` Event and an audit row of the same name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from support.builders import add_contact, make_settings
from patient_drip import db
from patient_drip.cli import CLI_ACTOR, main
from patient_drip.dispatch.pauses import pause_channel, paused_channels, resume_channel
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Channel, Event, EventKind
from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import Runtime, build_runtime
from support.staff import add_user, sign_in_as


def recorded(rt: Runtime, kind: EventKind) -> list[tuple[str, str, str]]:
    """(channel, actor, where) for every Event and audit row of `kind`, events first."""
    with rt.sessions() as session:
        events = session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
        rows = [(e.detail["channel"], e.detail["actor"], "event") for e in events]
        audits = session.scalars(select(AuditEntry).where(AuditEntry.action == kind).order_by(AuditEntry.id))
        return rows + [(a.detail["channel"], a.actor, "audit") for a in audits]


def assert_one_of_each(rt: Runtime, kind: EventKind, channel: Channel, actor: str) -> None:
    assert recorded(rt, kind) == [(channel, actor, "event"), (channel, actor, "audit")]
    with rt.sessions() as session:
        event = session.scalar(select(Event).where(Event.kind == kind))
        assert event is not None and event.contact_id is None  # a system-wide event, on no timeline


@pytest.fixture
def refusing_runtime(database_url: str, sandbox: SandboxServer) -> Iterator[Runtime]:
    """Providers at the sandbox, whose SendGrid no longer accepts our API key."""
    config = sandbox.config
    settings = make_settings(
        database_url, delivery="providers", public_url="http://127.0.0.1:9",
        twilio_account_sid=config.twilio_account_sid, twilio_auth_token=config.twilio_auth_token,
        twilio_from_number="+15005550006", twilio_base_url=sandbox.url,
        sendgrid_api_key=config.sendgrid_api_key, from_email="Riverside Wellness <care@clinic.test>",
        sendgrid_base_url=sandbox.url, provider_timeout_seconds=2,
    )
    db.upgrade(settings.database_url)
    rt = build_runtime(settings)
    sandbox.configure(sendgrid_api_key="SG.revoked")
    yield rt
    rt.close()


def test_dispatcher_pauses_a_refused_channel_with_an_event_and_an_audit_row(refusing_runtime, clock):
    rt = refusing_runtime
    add_contact(rt, clock.now, phone=None, consent=("email",))
    summary = Dispatcher(rt, "w1").run_once(clock.now)
    assert summary.outcomes["paused"] == 1
    with rt.sessions() as session:
        reason = paused_channels(session)[Channel.EMAIL]
    assert "provider refused" in reason
    assert_one_of_each(rt, EventKind.CHANNEL_PAUSED, Channel.EMAIL, "worker:w1")


def test_admin_pauses_and_resumes_with_an_event_and_an_audit_row(client, srt, clock):
    user = add_user(srt, "admin")
    csrf = sign_in_as(client, srt, user, clock.now)
    client.post("/admin/settings/channels/sms", data={"action": "pause", "csrf_token": csrf})
    with srt.sessions() as session:
        assert "paused by admin@clinic.test" in paused_channels(session)[Channel.SMS]
    assert_one_of_each(srt, EventKind.CHANNEL_PAUSED, Channel.SMS, user.email)  # staff act as their email
    client.post("/admin/settings/channels/sms", data={"action": "resume", "csrf_token": csrf})
    with srt.sessions() as session:
        assert paused_channels(session) == {}
    assert_one_of_each(srt, EventKind.CHANNEL_RESUMED, Channel.SMS, user.email)


def test_drip_resume_resumes_with_an_event_and_an_audit_row(rt, clock, monkeypatch, tmp_path):
    with rt.sessions() as session, session.begin():
        pause_channel(session, Channel.SMS, "provider refused: credentials", clock.now, "worker:w1")
    monkeypatch.setenv("DRIP_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", rt.settings.secret_key.get_secret_value())  # the server's keys
    monkeypatch.setenv("DRIP_PUBLIC_URL", "https://clinic.test")
    monkeypatch.chdir(tmp_path)  # no stray .env
    runner = CliRunner()
    resumed = runner.invoke(main, ["resume", "sms"], catch_exceptions=False)
    assert resumed.exit_code == 0 and "sms delivery resumed (was paused: " in resumed.output
    assert_one_of_each(rt, EventKind.CHANNEL_RESUMED, Channel.SMS, CLI_ACTOR)
    with rt.sessions() as session:
        assert paused_channels(session) == {}
    again = runner.invoke(main, ["resume", "sms"], catch_exceptions=False)
    assert "sms delivery is not paused" in again.output
    assert len(recorded(rt, EventKind.CHANNEL_RESUMED)) == 2  # nothing recorded for a no-op


def test_resuming_a_channel_that_is_not_paused_records_nothing(rt, clock):
    with rt.sessions() as session, session.begin():
        assert resume_channel(session, Channel.EMAIL, clock.now, "test") is None
    assert recorded(rt, EventKind.CHANNEL_RESUMED) == []
