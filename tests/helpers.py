"""Small helpers shared by tests (imported as `helpers`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from patient_drip.dispatch.pipeline import DispatchSummary, Dispatcher
from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording
from patient_drip.contacts.enrollment import enroll
from patient_drip.models import Channel, ConsentMethod, Contact, Enrollment, Message
from patient_drip.runtime import Runtime


def add_contact(rt: Runtime, now: datetime, *, email: str | None = "alex@example.com",
                phone: str | None = "+13125550142", first_name: str = "Alex", consent: tuple[str, ...] = ("email", "sms"),
                campaign: str | None = "ketamine-consult", timezone: str = "") -> int:
    """Create a contact with consent and (optionally) enroll it; returns the contact id."""
    with rt.sessions() as session, session.begin():
        data = parse_contact_input({"email": email, "phone": phone, "first_name": first_name, "timezone": timezone},
                                   rt.settings.clinic_timezone, source="test")
        contact, _ = upsert_contact(session, rt.suppression_key, data, now, "test")
        for channel in consent:
            grant_consent(session, load_wording(rt.settings.policy_dir), contact,
                          ConsentGrant(Channel(channel), ConsentMethod.STAFF), now, "test")
        if campaign:
            enroll(session, contact, rt.campaign(campaign), now, "test")
        return contact.id


def run_until_done(rt: Runtime, clock, *, worker: str = "test-worker", limit: int = 200) -> DispatchSummary:  # type: ignore[no-untyped-def]
    """Drive the virtual clock from due time to due time until nothing is scheduled."""
    dispatcher = Dispatcher(rt, worker)
    total = DispatchSummary()
    for _ in range(limit):
        with rt.sessions() as session:
            due = session.scalar(select(Enrollment.next_due_at).where(Enrollment.next_due_at.is_not(None))
                                 .order_by(Enrollment.next_due_at).limit(1))
        if due is None:
            return total
        if due > clock.now:
            clock.set(due)
        total.merge(dispatcher.run_once(clock.now))
    raise AssertionError("sequence did not finish")


def messages_for(rt: Runtime, contact_id: int) -> list[Message]:
    with rt.sessions() as session:
        return list(session.scalars(select(Message).where(Message.contact_id == contact_id).order_by(Message.id)))


def contact(rt: Runtime, contact_id: int) -> Contact:
    with rt.sessions() as session:
        found = session.get(Contact, contact_id)
        assert found is not None
        return found
