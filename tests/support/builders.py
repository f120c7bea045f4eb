"""Builders shared by the tests: the virtual clock, settings (plain, and pointed at the provider
sandbox), contacts, and the loops that drive a schedule to its end on the virtual clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording
from patient_drip.contacts.enrollment import enroll
from patient_drip.contacts.fields import ZoneSource
from patient_drip.dispatch.pipeline import DispatchSummary, Dispatcher
from patient_drip.dispatch.reconcile import reconcile_unknown
from patient_drip.models import Channel, ConsentMethod, Contact, Enrollment, Message, MessageStatus
from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import Runtime
from patient_drip.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# A Monday, 09:30 in Chicago (CST, UTC-6): inside the default send window.
START = datetime(2026, 3, 2, 15, 30, tzinfo=timezone.utc)

# Settings that lift the public form's limits, for tests of parsing rather than of the limits.
UNLIMITED_INTAKE: dict[str, object] = {
    "intake_form_limit": "1000000/1s", "intake_sms_per_number": "1000000/1s",
    "intake_sms_per_network": "1000000/1s", "intake_sms_global": "1000000/1s",
}

# The sender number the sandbox accepts for Twilio.
SANDBOX_FROM_NUMBER = "+15005550006"


@dataclass
class VirtualClock:
    """A settable `now()` for the runtime and the web app: tests move time instead of waiting."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


def midday_zone(now: datetime) -> str:
    """An IANA zone where it is about noon at `now`: contacts of a test that runs on the real clock
    get it, so quiet hours and the texting law (never before 8:00 or after 21:00 local) leave their
    texts alone whatever the hour the suite runs at (Etc/GMT-3 is UTC+3: POSIX inverts the sign)."""
    offset = 12 - now.hour
    if offset < -12:
        offset += 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for the test clinic on `database_url` (never read from the environment or a .env
    file); `overrides` replace any field. The dispatcher runs its default thread pool, as in
    production."""
    values: dict[str, object] = {
        "database_url": database_url,
        "public_url": "https://clinic.test",
        "secret_key": "test-secret-key-for-links",
        "booking_url": "https://book.clinic.test/consult",
        "clinic_name": "Riverside Wellness",
        "clinic_address": "12 River Road, Springfield, IL 62701",
        "clinic_phone": "+1 217 555 0100",
        "clinic_timezone": "America/Chicago",
        "campaigns_dir": ROOT / "campaigns",
        "templates_dir": ROOT / "templates",
        "policy_dir": ROOT / "policy",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def sandbox_settings(database_url: str, sandbox: SandboxServer, **overrides: object) -> Settings:
    """`make_settings` in providers mode: both official SDKs sent to `sandbox` with the credentials
    it accepts, its SendGrid event key trusted, rate limits out of the way and a short provider
    timeout. `overrides` replace any field (e.g. `public_url` for a live app)."""
    config = sandbox.config
    values: dict[str, object] = {
        "delivery": "providers",
        "twilio_account_sid": config.twilio_account_sid,
        "twilio_auth_token": config.twilio_auth_token,
        "twilio_from_number": SANDBOX_FROM_NUMBER,
        "twilio_base_url": sandbox.url,
        "sendgrid_api_key": config.sendgrid_api_key,
        "from_email": "Riverside Wellness <care@clinic.test>",
        "sendgrid_base_url": sandbox.url,
        "sendgrid_webhook_public_key": sandbox.public_key,
        "sms_rate_per_second": 1000,
        "email_rate_per_second": 1000,
        "provider_timeout_seconds": 2,
    }
    values.update(overrides)
    return make_settings(database_url, **values)


def add_contact(rt: Runtime, now: datetime, *, email: str | None = "alex@example.com",
                phone: str | None = "+13125550142", first_name: str = "Alex", consent: tuple[str, ...] = ("email", "sms"),
                campaign: str | None = "ketamine-consult", timezone: str = "") -> int:
    """Create a contact with consent and (optionally) enroll it; returns the contact id."""
    with rt.sessions() as session, session.begin():
        data = parse_contact_input({"email": email, "phone": phone, "first_name": first_name, "timezone": timezone},
                                   rt.settings.clinic_timezone, zone_source=ZoneSource.STAFF, source="test")
        contact, _ = upsert_contact(session, rt.suppression_key, data, now, "test")
        for channel in consent:
            grant_consent(session, load_wording(rt.settings.policy_dir), contact,
                          ConsentGrant(Channel(channel), ConsentMethod.STAFF), now, "test")
        if campaign:
            enroll(session, contact, rt.campaign(campaign), now, "test")
        return contact.id


def messages_for(rt: Runtime, contact_id: int) -> list[Message]:
    """The contact's send records, oldest first."""
    with rt.sessions() as session:
        return list(session.scalars(select(Message).where(Message.contact_id == contact_id).order_by(Message.id)))


def contact(rt: Runtime, contact_id: int) -> Contact:
    """The contact row (it must exist)."""
    with rt.sessions() as session:
        found = session.get(Contact, contact_id)
        assert found is not None
        return found


def settled(rt: Runtime) -> bool:
    """No message is still waiting for its delivery receipt."""
    with rt.sessions() as session:
        return session.scalar(select(Message.id).where(Message.status == MessageStatus.SENT).limit(1)) is None


def next_due(rt: Runtime) -> datetime | None:
    """The earliest time any enrollment is due, or None when nothing is scheduled."""
    with rt.sessions() as session:
        return session.scalar(select(func.min(Enrollment.next_due_at)))


def run_until_done(rt: Runtime, clock: VirtualClock, *, worker: str = "test-worker",
                   limit: int = 200) -> DispatchSummary:
    """Drive the virtual clock from due time to due time until nothing is scheduled; returns what
    every pass did together. Fails after `limit` passes."""
    dispatcher = Dispatcher(rt, worker)
    total = DispatchSummary()
    for _ in range(limit):
        due = next_due(rt)
        if due is None:
            return total
        if due > clock.now:
            clock.set(due)
        total.merge(dispatcher.run_once(clock.now))
    raise AssertionError("sequence did not finish")


def drive(rt: Runtime, clock: VirtualClock, dispatcher: Dispatcher, *, until: datetime | None = None,
          limit: int = 5000) -> int:
    """Jump the virtual clock from due time to due time, dispatching and reconciling, until nothing
    is scheduled (or the next due time is after `until`). Returns the passes made."""
    for passes in range(limit):
        due = next_due(rt)
        if due is None or (until is not None and due > until):
            return passes
        if due > clock.now:
            clock.set(due)
        dispatcher.run_once(clock.now)
        reconcile_unknown(rt, clock.now)
    raise AssertionError("the schedule did not finish")



def form_errors(response: object) -> dict[str, str]:
    """field → message of the public form API's error list (`{"errors": [{"field", "message"}]}`);
    fails the test when a field is named twice (every field's problem comes once, all at once)."""
    listed = response.json()["errors"]  # type: ignore[attr-defined]
    assert isinstance(listed, list), listed
    fields = [error["field"] for error in listed]
    assert len(fields) == len(set(fields)), listed
    return {error["field"]: error["message"] for error in listed}


def all_day_campaigns(directory: Path) -> Path:
    """A campaigns folder holding the real `ketamine-consult` campaign with its send window open all
    day (00:00-24:00, no spread): for tests on the real clock that must not depend on the hour they
    run at. Everything else -- steps, templates, cap -- is the real campaign's."""
    text = (ROOT / "campaigns" / "ketamine-consult.yaml").read_text(encoding="utf-8")
    for old, new in (('start: "09:00"', 'start: "00:00"'), ('end: "20:00"', 'end: "24:00"'),
                     ("spread_minutes: 20", "spread_minutes: 0")):
        assert old in text, f"the campaign file changed: {old!r} not found"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ketamine-consult.yaml").write_text(text, encoding="utf-8")
    return directory
