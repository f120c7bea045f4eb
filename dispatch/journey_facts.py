"""What a journey's branch rules and waits look at, read from the database for one enrollment:
the person's attributes and, since this entry into the journey began, when they clicked a booking
link, opened an email, replied by text or booked, and which steps they were sent
(`content.journey.Facts`). Read only when an enrollment reaches a branch or a wait.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.content.campaign_model import Step
from patient_drip.content.journey import Facts
from patient_drip.content.journey_types import EVENT_CONDITIONS, WAIT_EVENTS, StepKind
from patient_drip.models import SENT_LIKE, Contact, Enrollment, Event, Message, MessageStatus

_KIND_TO_EVENT = {kind: name for name, kinds in WAIT_EVENTS.items() for kind in kinds}
_RECEIVED = (*SENT_LIKE, MessageStatus.DELIVERED)


def needs_history(step: Step) -> bool:
    """Whether deciding `step` looks at what the person did (a wait for an event, a branch on one):
    a branch on attributes only (interest, language, consent, source) reads no table."""
    if step.kind == StepKind.WAIT:
        return step.wait_for is not None
    return any(condition.name in EVENT_CONDITIONS for rule in step.rules for condition in rule.conditions)


def attribute_facts(contact: Contact) -> Facts:
    """The person's attributes alone (no history)."""
    return Facts(interest=contact.interest or "none", language=contact.language or "en", source=contact.source or "",
                 email_consent=bool(contact.email_consent), sms_consent=bool(contact.sms_consent))


def load_facts(session: Session, enrollment: Enrollment, contact: Contact, step: Step | None = None) -> Facts:
    """The facts of `enrollment` (its current entry, which began at `enrolled_at`) that deciding `step`
    needs: the attributes only when it looks at no history (two queries fewer per person)."""
    if step is not None and not needs_history(step):
        return attribute_facts(contact)
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
    return replace(attribute_facts(contact), events={name: tuple(sorted(times)) for name, times in events.items()},
                   received=received)
