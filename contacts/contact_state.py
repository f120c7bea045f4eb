"""What staff may do to a contact now, decided once from the contact's state (the staff page and
any other entry point show only these): stop a channel only while it reaches them, mark booked only
while no booking stands, resubscribe only a channel consent can restart, pause or resume only a
running sequence.

May import `models`, `contacts.consent`, `contacts.blocks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.consent import Offer, consent_offer, receives
from patient_drip.models import Booking, BookingKind, Channel, Contact, Enrollment, EnrollmentStatus, ExitReason


@dataclass(frozen=True, slots=True)
class ContactActions:
    """The actions that fit one contact's state."""

    booked: bool  # a booking stands (the latest word from a scheduler or staff is "booked")
    stop: tuple[Channel, ...]  # channels that reach them now: "Stop emails" / "Stop texts"
    stop_all: bool  # both channels reach them: "Stop everything" (one channel: its own button says it)
    resubscribe: dict[Channel, Offer]  # channels that consent may restart, and how (again, or for the first time)
    running: bool  # a sequence is in progress or paused

    @property
    def can_mark_booked(self) -> bool:
        return not self.booked


def has_booked(session: Session, contact_id: int, enrollments: Sequence[Enrollment]) -> bool:
    """Whether a booking stands: the contact's latest booked/cancelled/rescheduled notice is not a
    cancellation, or (with no notice kept) a sequence ended because they booked."""
    latest = session.scalar(select(Booking.kind).where(
        Booking.contact_id == contact_id,
        Booking.kind.in_([str(BookingKind.BOOKED), str(BookingKind.RESCHEDULED), str(BookingKind.CANCELLED)]))
        .order_by(Booking.id.desc()).limit(1))
    if latest is not None:
        return latest != BookingKind.CANCELLED
    return any(e.status == EnrollmentStatus.EXITED and e.exit_reason == ExitReason.BOOKED for e in enrollments)


def contact_actions(session: Session, contact: Contact, enrollments: Sequence[Enrollment]) -> ContactActions:
    """The actions that fit `contact` now (see the module docstring)."""
    stop = tuple(channel for channel in (Channel.EMAIL, Channel.SMS) if receives(contact, channel))
    running = any(e.status in (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED) for e in enrollments)
    offers = {channel: offer for channel in (Channel.EMAIL, Channel.SMS)
              if (offer := consent_offer(session, contact, channel)) is not None}
    return ContactActions(booked=has_booked(session, contact.id, enrollments), stop=stop,
                          stop_all=len(stop) > 1, resubscribe=offers, running=running)
