"""What a journey's branch rules and waits look at, read from the database for one enrollment:
the person's attributes and, since this entry into the journey began, when they clicked a booking
link, opened an email, replied by text or booked, and which steps they were sent
(`content.journey.Facts`). Read only when an enrollment reaches a branch or a wait.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.content.journey import Facts
from patient_drip.content.journey_types import WAIT_EVENTS
from patient_drip.models import SENT_LIKE, Contact, Enrollment, Event, Message, MessageStatus

_KIND_TO_EVENT = {kind: name for name, kinds in WAIT_EVENTS.items() for kind in kinds}
_RECEIVED = (*SENT_LIKE, MessageStatus.DELIVERED)


def load_facts(session: Session, enrollment: Enrollment, contact: Contact) -> Facts:
    """The facts of `enrollment` (its current entry, which began at `enrolled_at`)."""
    since: datetime = enrollment.enrolled_at
    events: dict[str, list[datetime]] = defaultdict(list)
    rows = session.execute(
        select(Event.kind, Event.occurred_at)
        .where(Event.contact_id == contact.id, Event.kind.in_(list(_KIND_TO_EVENT)), Event.occurred_at >= since)
    )
    for kind, occurred_at in rows:
        events[_KIND_TO_EVENT[kind]].append(occurred_at)
    received = frozenset(session.scalars(
        select(Message.step_id).where(Message.enrollment_id == enrollment.id, Message.entry == enrollment.entry,
                                      Message.status.in_([str(status) for status in _RECEIVED]))
    ))
    return Facts(interest=contact.interest or "none", language=contact.language or "en", source=contact.source or "",
                 email_consent=bool(contact.email_consent), sms_consent=bool(contact.sms_consent),
                 events={name: tuple(sorted(times)) for name, times in events.items()}, received=received)
