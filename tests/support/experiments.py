"""Rows for the experiment statistics (issue 13), written straight to the tables: a person enrolled
(in the holdout or not) with, optionally, one A/B message and a booking. The statistics read only
these columns, so their tests do not wait for the journey engine that will fill them."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from patient_drip.models import Booking, BookingKind, Contact, Enrollment, Message, MessageStatus


def add_person(session: Session, now: datetime, *, campaign: str = "journey", holdout: bool = False,
               step: str | None = None, variant: str | None = None, status: str = MessageStatus.SENT,
               clicked: bool = False, booked: str | None = None, booking_kind: str = BookingKind.BOOKED,
               enrollment_status: str = "active") -> int:
    """One contact enrolled in `campaign` at `now`; with `step`, one message of that step (and
    `variant`) sent an hour later; `booked` "after" books two hours after enrolling, "before" a day
    before enrolling. Returns the contact id."""
    contact = Contact(timezone="America/Chicago", created_at=now, updated_at=now)
    session.add(contact)
    session.flush()
    enrollment = Enrollment(contact_id=contact.id, campaign_id=campaign, enrolled_at=now, holdout=holdout,
                            status=enrollment_status)
    session.add(enrollment)
    session.flush()
    sent_at = now + timedelta(hours=1)
    if step is not None:
        session.add(Message(enrollment_id=enrollment.id, contact_id=contact.id, campaign_id=campaign, step_id=step,
                            channel="email", status=status, variant=variant, created_at=sent_at, sent_at=sent_at,
                            updated_at=sent_at, clicked_at=sent_at + timedelta(minutes=5) if clicked else None))
    if booked is not None:
        received = now + timedelta(hours=2) if booked == "after" else now - timedelta(days=1)
        session.add(Booking(contact_id=contact.id, provider="staff", kind=booking_kind, received_at=received,
                            external_id=f"{contact.id}-{booking_kind}"))
    return contact.id


def add_people(session: Session, now: datetime, count: int, **kwargs: object) -> None:
    """`count` people alike (see `add_person`)."""
    for _ in range(count):
        add_person(session, now, **kwargs)  # type: ignore[arg-type]
