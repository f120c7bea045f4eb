"""Bookings: what a scheduling tool (Calendly, Cal.com, the generic webhook) or staff say about a
person's consultation, as one rule every entry point calls.

`record_booking` takes a `BookingNotice` (already verified and parsed by the entry point) and ends
in exactly one of these ways (`BookingResult.status`):

- `duplicate` — the scheduler sent this event before (same provider, external id and kind):
  nothing changes, so a retried or replayed call is harmless;
- `unmatched` — no contact has the tracking token's message, the email or the phone: the notice is
  kept (with what the scheduler told us) for staff to match, never dropped;
- `booked` — every sequence of the person ends as booked, and the booking is attributed to one
  message (`attribute`): the one whose link carried our tracking token, else the last clicked before
  the booking, else the last delivered, else the last sent;
- `rescheduled` — still booked: recorded, nothing re-opens;
- `cancelled` — a cancellation without a new booking re-opens the sequences that ended because of
  the booking, at their next unsent step (due now, inside the send window);
- `no_show` — recorded with an event on the timeline, and a staff task to call the person
  (`contacts.tasks`), matched or not.

A booking by someone we could not match also opens a task: find them.

May import `models`, `contacts.enrollment`, `contacts.fields`, `contacts.records`, `contacts.tasks`,
`content`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip.contacts.enrollment import end_enrollments
from patient_drip.contacts.journey_events import wake_waiting
from patient_drip.contacts.fields import FieldError, normalize_email, normalize_phone
from patient_drip.contacts.records import add_rows, audit_row, event_row
from patient_drip.contacts.tasks import CLOSED_BY_BOOKING, close_tasks, open_task
from patient_drip.content.campaign import Campaign
from patient_drip.content.tokens import BadToken, LinkTokens
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.content.windows import step_due_at
from patient_drip.due_now import mark_due
from patient_drip.models import (
    Booking,
    BookingKind,
    Contact,
    Enrollment,
    EnrollmentStatus,
    EventKind,
    ExitReason,
    Message,
    TaskKind,
)


@dataclass(frozen=True, slots=True)
class BookingNotice:
    """One verified word from a scheduler (or staff). `tracking` is our signed booking-link token as
    the scheduler carried it back; `contact_id` is set when staff act on a known contact."""

    provider: str
    kind: BookingKind
    external_id: str | None = None
    email: str | None = None
    phone: str | None = None
    name: str = ""
    tracking: str | None = None
    starts_at: datetime | None = None
    contact_id: int | None = None


@dataclass(frozen=True, slots=True)
class BookingResult:
    status: str  # duplicate, unmatched, booked, rescheduled, cancelled, no_show
    contact_id: int | None = None
    enrollments_changed: int = 0
    booking_id: int | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    message: Message | None
    rule: str  # tracking, last_click, last_delivered, last_message, none


def _tracked_message(session: Session, tokens: LinkTokens, tracking: str | None) -> Message | None:
    if not tracking:
        return None
    try:
        return session.get(Message, tokens.read_booking(tracking.strip()))
    except BadToken:
        return None  # a token the person edited, or another installation's: match by address instead


def find_booker(session: Session, notice: BookingNotice, tracked: Message | None) -> Contact | None:
    """Who booked: the contact of the message our tracking token names, else the one with the email,
    else the one with the phone. Erased contacts are never matched."""
    candidates: list[Contact | None] = []
    if notice.contact_id is not None:
        candidates.append(session.get(Contact, notice.contact_id))
    if tracked is not None:
        candidates.append(session.get(Contact, tracked.contact_id))
    for value, normalise, column in ((notice.email, normalize_email, Contact.email),
                                     (notice.phone, normalize_phone, Contact.phone)):
        if value:
            try:
                candidates.append(session.scalar(select(Contact).where(column == normalise(value))))
            except FieldError:
                continue
    return next((c for c in candidates if c is not None and c.erased_at is None), None)


def attribute(session: Session, contact: Contact, tracked: Message | None, now: datetime) -> Attribution:
    """The one message a booking is credited to (see the module docstring for the order)."""
    if tracked is not None and tracked.contact_id == contact.id:
        return Attribution(tracked, "tracking")
    clicked = session.scalar(select(Message).where(
        Message.contact_id == contact.id, Message.clicked_at.is_not(None), Message.clicked_at <= now)
        .order_by(Message.clicked_at.desc(), Message.id.desc()).limit(1))
    if clicked is not None:
        return Attribution(clicked, "last_click")
    # A staff reply from the inbox (no enrollment) is no step of a sequence: never credited.
    delivered = session.scalar(select(Message).where(
        Message.contact_id == contact.id, Message.enrollment_id.is_not(None), Message.delivered_at.is_not(None),
        Message.delivered_at <= now)
        .order_by(Message.delivered_at.desc(), Message.id.desc()).limit(1))
    if delivered is not None:
        return Attribution(delivered, "last_delivered")
    # No receipt at all (the outbox, a carrier without receipts): the last message sent.
    sent = session.scalar(select(Message).where(
        Message.contact_id == contact.id, Message.enrollment_id.is_not(None), Message.sent_at.is_not(None),
        Message.sent_at <= now)
        .order_by(Message.sent_at.desc(), Message.id.desc()).limit(1))
    return Attribution(sent, "last_message" if sent is not None else "none")


def reopen_after_cancel(session: Session, contact: Contact, campaigns: Mapping[str, Campaign], now: datetime,
                        actor: str) -> int:
    """Re-open the journeys the booking ended. A campaign with a rebook path (`on_cancel`) starts it
    now — also for a journey that had finished before the booking; any other continues at its next
    unsent step (due now or when the send window opens), and one with no step left stays finished.
    Returns how many re-opened."""
    reopened = 0
    for enrollment in session.scalars(select(Enrollment).where(
            Enrollment.contact_id == contact.id,
            or_(and_(Enrollment.status == EnrollmentStatus.EXITED, Enrollment.exit_reason == ExitReason.BOOKED),
                Enrollment.status == EnrollmentStatus.COMPLETED))):
        campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
        if campaign is None:
            continue
        if campaign.on_cancel is not None:
            enrollment.step_index = campaign.step_index(campaign.on_cancel)
            enrollment.step_entered_at = now
            reason = "booking cancelled: the rebook path starts"
        elif enrollment.status == EnrollmentStatus.COMPLETED or enrollment.step_index >= len(campaign.steps):
            continue
        else:
            reason = "booking cancelled: the sequence continues"
        due = step_due_at(campaign, enrollment.step_index, enrollment.enrolled_at, contact.timezone, enrollment.id,
                          phone=contact.phone)
        enrollment.status = EnrollmentStatus.ACTIVE
        enrollment.exit_reason = None
        enrollment.ended_at = None
        enrollment.claimed_by = None
        enrollment.next_due_at = max(due, now) if due is not None else now
        mark_due(session, enrollment.next_due_at, now)
        add_rows(session, [event_row(EventKind.RESUMED, now, contact.id, enrollment.id, reason=reason, actor=actor)])
        reopened += 1
    return reopened


def _duplicate(session: Session, notice: BookingNotice) -> bool:
    if not notice.external_id:
        return False
    return session.scalar(select(Booking.id).where(
        Booking.provider == notice.provider, Booking.external_id == notice.external_id,
        Booking.kind == str(notice.kind))) is not None


def record_booking(session: Session, tokens: LinkTokens, campaigns: Mapping[str, Campaign], notice: BookingNotice,
                   now: datetime, actor: str) -> BookingResult:
    """Apply one booking notice (the module docstring lists every ending)."""
    if _duplicate(session, notice):
        return BookingResult("duplicate")
    tracked = _tracked_message(session, tokens, notice.tracking)
    contact = find_booker(session, notice, tracked)
    row = Booking(provider=notice.provider, kind=str(notice.kind), external_id=notice.external_id,
                  email=(notice.email or "")[:320] or None, phone=(notice.phone or "")[:20] or None,
                  name=notice.name[:200], starts_at=notice.starts_at, received_at=now,
                  contact_id=contact.id if contact else None)
    # The row first: its unique key (provider, external id, kind) is taken before anything is
    # applied, so the same event arriving twice at once applies once.
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return BookingResult("duplicate")
    status = "unmatched" if contact is None else str(notice.kind)
    changed = 0
    if notice.kind == BookingKind.NO_SHOW:  # someone to call, whether or not we know who they are
        open_task(session, TaskKind.NO_SHOW, now, contact_id=row.contact_id, booking_id=row.id)
    elif contact is None and notice.kind == BookingKind.BOOKED:
        open_task(session, TaskKind.UNMATCHED_BOOKING, now, booking_id=row.id)
    if contact is not None:
        if notice.kind == BookingKind.BOOKED:
            credit = attribute(session, contact, tracked, now)
            row.attribution = credit.rule
            if credit.message is not None:
                row.message_id, row.campaign_id, row.step_id = (credit.message.id, credit.message.campaign_id,
                                                                credit.message.step_id)
            # A journey ends on booking unless its campaign says otherwise (`exit_on`); one that does
            # not may wait for the booking instead.
            keeps = [cid for cid, campaign in campaigns.items() if "booked" not in campaign.exit_on]
            changed = end_enrollments(session, contact.id, ExitReason.BOOKED, now, actor, except_campaigns=keeps)
            if keeps:
                wake_waiting(session, campaigns, contact.id, "booked", now)
            close_tasks(session, CLOSED_BY_BOOKING, now, f"{actor} (booked)", contact_id=contact.id)
        elif notice.kind == BookingKind.CANCELLED:
            changed = reopen_after_cancel(session, contact, campaigns, now, actor)
        kind_event = {BookingKind.BOOKED: EventKind.BOOKED, BookingKind.CANCELLED: EventKind.BOOKING_CANCELLED,
                      BookingKind.RESCHEDULED: EventKind.BOOKING_RESCHEDULED,
                      BookingKind.NO_SHOW: EventKind.NO_SHOW}[notice.kind]
        detail = {"source": notice.provider}
        if row.step_id:
            detail |= {"step": row.step_id, "attributed_by": row.attribution}
        add_rows(session, [event_row(kind_event, now, contact.id, **detail),
                           audit_row(actor, str(kind_event), now, contact.id, **detail)])
    return BookingResult(status, contact.id if contact else None, changed, row.id)


def mark_booked(session: Session, tokens: LinkTokens, campaigns: Mapping[str, Campaign], contact: Contact,
                now: datetime, actor: str, source: str) -> int:
    """Staff (or the CLI) say this contact booked: the same rule as a scheduler's notice. Returns how
    many sequences ended."""
    result = record_booking(session, tokens, campaigns, BookingNotice(provider=source[:20] or "staff",
                                                                      kind=BookingKind.BOOKED,
                                                                      contact_id=contact.id), now, actor)
    return result.enrollments_changed
