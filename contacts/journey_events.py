"""What a person does, as it reaches their journeys: an enrollment waiting for exactly that (a
click, an open, a reply, a booking) is due now instead of at its timeout; a question by text pauses
the journeys that pause on reply and opens a staff task; staff resuming or ending such a journey
closes the task (`contacts.tasks.close_reply_tasks`, called by the pause and stop rules).

May import `content`, `models`, `due_now` and the other `contacts` rule modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.enrollment import set_paused
from patient_drip.contacts.tasks import open_reply_task, open_task
from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.content.journey_types import StepKind
from patient_drip.due_now import mark_due
from patient_drip.models import Enrollment, EnrollmentStatus, EventKind, TaskKind, add_event

REPLY_PAUSE_REASON = "asked a question by text: paused until a member of staff answers (pause on reply)"


def _current_step(session: Session, campaigns: Mapping[str, Campaign], enrollment: Enrollment) -> tuple[Campaign, Step] | None:
    campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
    if campaign is None or enrollment.step_index >= len(campaign.steps):
        return None
    return campaign, campaign.steps[enrollment.step_index]


def _active(session: Session, contact_id: int) -> list[Enrollment]:
    return list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact_id,
                                                         Enrollment.status == EnrollmentStatus.ACTIVE)))


def waits_for(step: Step, event: str) -> bool:
    return step.kind == StepKind.WAIT and step.wait_for == event


def wake_waiting(session: Session, campaigns: Mapping[str, Campaign], contact_id: int | None, event: str,
                 now: datetime) -> int:
    """`event` (clicked, opened, replied, booked) happened for the contact: each of its enrollments
    waiting for it is due now (not at its timeout), unless a worker holds it (that pass sees the
    event itself). Returns how many were woken."""
    if contact_id is None:
        return 0
    woken = 0
    for enrollment in _active(session, contact_id):
        found = _current_step(session, campaigns, enrollment)
        if found is None or not waits_for(found[1], event) or enrollment.claimed_by is not None:
            continue
        enrollment.next_due_at = now
        woken += 1
    if woken:
        mark_due(session, now, now)
    return woken


def pause_on_reply(session: Session, campaigns: Mapping[str, Campaign], contact_id: int, inbound_id: int,
                   now: datetime, actor: str = "system:reply") -> int:
    """A question by text from the contact: each active journey that pauses on reply is paused (one
    waiting for a reply is not: the reply is what it waits for) and one staff task opens to answer
    and then resume or end it. Returns how many journeys were paused."""
    paused = 0
    for enrollment in _active(session, contact_id):
        found = _current_step(session, campaigns, enrollment)
        if found is None or not found[0].pause_on_reply or waits_for(found[1], "replied"):
            continue
        if set_paused(session, campaigns, enrollment, True, now, actor, reason=REPLY_PAUSE_REASON,
                      inbound_id=inbound_id):
            add_event(session, EventKind.REPLY_PAUSED, now, contact_id=contact_id, enrollment_id=enrollment.id,
                      inbound_id=inbound_id, campaign=enrollment.campaign_id)
            paused += 1
    if paused and open_reply_task(session, contact_id) is None:
        open_task(session, TaskKind.REPLY_PAUSED, now, contact_id=contact_id)
    return paused
