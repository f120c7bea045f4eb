"""Enrollment: whether and how a contact may start a campaign, starting it, pausing and resuming
it, and ending it (unsubscribe, booked, staff); and the crisis pause: a reply flagged as a possible
crisis pauses every sequence of the contact until a member of staff resolves it.

`enrollment_decision` and `first_step` are the one place that decides whether a contact can be
enrolled, on which channels, and when the first step is due; `enroll` and the bulk importer both
ask them. Every function takes the session and `now` and leaves the commit to the caller; each
change that alters what a contact receives is written to the audit log with its actor.
May import `content`, `models`, and the other `contacts` rule modules.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign, UnknownCampaign
from patient_drip.content.journey import edges
from patient_drip.content.journey_types import StepKind
from patient_drip.content.campaign_versions import campaign_for, stored_version, version_in_force
from patient_drip.content.windows import (Scheduled, local_label, schedule_step, spread_period, step_due_at,
                                          window_for)
from patient_drip.contacts.blocks import is_blocked
from patient_drip.contacts.consent import Consentable, withdraw_consent
from patient_drip.contacts.records import Row, add_rows, audit_row, event_row
from patient_drip.contacts.tasks import close_reply_tasks
from patient_drip.due_now import mark_due
from patient_drip.models import (
    Channel,
    ConsentMethod,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    EventKind,
    ExitReason,
    InboundMessage,
)

RUNNING = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)


class EnrollmentError(Exception):
    """Something a user asked for that cannot be done; the message says why."""


class AlreadyEnrolled(EnrollmentError):
    """The contact has (or had) an enrollment in that campaign; a campaign runs once per contact."""


class Reachable(Consentable, Protocol):
    """What the enrollment decision reads: a `Contact`, or the importer's copy of one."""

    @property
    def display_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PastEnrollment:
    """The status of the contact's existing enrollment in the campaign."""

    status: str
    exit_reason: str | None


def usable_channels(contact: Reachable, campaign: Campaign) -> set[Channel]:
    """Channels the campaign may use for this contact right now (consent, address, not blocked)."""
    usable: set[Channel] = set()
    if contact.email and not is_blocked(contact, Channel.EMAIL) and (
            contact.email_consent or not campaign.email_requires_consent):
        usable.add(Channel.EMAIL)
    if contact.phone and not is_blocked(contact, Channel.SMS) and contact.sms_consent:
        usable.add(Channel.SMS)
    return usable & {step.channel for step in campaign.message_steps}


def enrollment_decision(contact: Reachable, campaign: Campaign, existing: PastEnrollment | None) -> set[Channel]:
    """May `contact` be enrolled in `campaign`? Returns the channels it will be reached on.

    Raises `AlreadyEnrolled` when it has an enrollment in the campaign in any status (a campaign
    runs once per contact), `EnrollmentError` when no channel is usable (consent, address, block)."""
    if existing is not None:
        raise AlreadyEnrolled(
            f"{contact.display_name} is already enrolled in {campaign.id} (status {existing.status}"
            + (f", {existing.exit_reason}" if existing.exit_reason else "") + ")"
        )
    channels = usable_channels(contact, campaign)
    if not channels:
        raise EnrollmentError(
            f"{contact.display_name} cannot receive {campaign.id}: no email or SMS the contact agreed to "
            "and has not opted out of (record consent first)"
        )
    return channels


def _opening_targets(campaign: Campaign) -> list[int]:
    """The steps a new enrollment's first message can be: step 0 itself, or — for a journey that
    opens with a branch — each message step the branch leads to (the branch is decided when the
    first of them is due, so a request at night wakes nobody until the morning)."""
    if not campaign.steps or campaign.steps[0].is_message or campaign.steps[0].kind != StepKind.BRANCH:
        return [0]
    targets = [edge.target for edge in edges(campaign, 0)]
    if any(target is None or not campaign.steps[target].is_message for target in targets):
        return [0]
    return sorted({target for target in targets if target is not None})


def first_step(campaign: Campaign, timezone: str, now: datetime, enrollment_id: int, *,
               phone: str | None) -> Scheduled | None:
    """When the first step of a new enrollment is due: now, or when the contact's send window opens
    (the law's for a text to `phone`; spread by the enrollment id so a crowd does not all go at the
    opening minute) — with why, when it had to wait."""
    options = [schedule_step(campaign, index, now, timezone, enrollment_id, phone=phone)
               for index in _opening_targets(campaign)]
    found = [option for option in options if option is not None]
    return min(found, key=lambda option: option.due) if found else None


NO_PERIOD = 1 << 62  # ids below this modulo it are themselves: nothing is shared


def first_step_period(campaign: Campaign, *, phone: str | None) -> int:
    """`first_step` depends on the enrollment id only modulo this (the spread of the first step's
    window; 1 when it has none): ids equal modulo it get the same time, so a bulk import computes
    each time once."""
    period = 1
    for index in _opening_targets(campaign):
        step = campaign.steps[index]
        if any(variant.delay is not None for variant in step.variants):
            return NO_PERIOD  # an A/B test of the first step's timing: the time depends on the id itself
        window = window_for(campaign, step.channel, phone) if step.is_message else None
        if window is not None:
            period = math.lcm(period, spread_period(window))
    return period


def deferred_rows(contact_id: int | None, enrollment_id: int, campaign: Campaign, scheduled: Scheduled | None,
                  timezone: str, now: datetime) -> list[Row]:
    """The timeline row saying the first step waits (until when, in the contact's time, and why), if it does."""
    if scheduled is None or scheduled.moved_because is None:
        return []
    step = campaign.steps[_opening_targets(campaign)[0]]
    return [event_row(EventKind.MESSAGE_DEFERRED, now, contact_id, enrollment_id, step=step.id,
                      channel=str(step.channel), until=local_label(scheduled.due, timezone),
                      reason=scheduled.moved_because)]


def enrolled_rows(contact_id: int | None, enrollment_id: int, campaign_id: str, now: datetime, actor: str,
                  entry: int = 1) -> list[Row]:
    """The timeline and audit rows of a new enrollment (or of entry `entry` > 1: a re-entry)."""
    again = {"entry": entry} if entry > 1 else {}
    return [event_row(EventKind.ENROLLED, now, contact_id, enrollment_id, campaign=campaign_id, **again),
            audit_row(actor, "enrolled", now, contact_id, campaign=campaign_id, **again)]


# An entry that ended like this cannot be started again by re-entry: the person said stop, or their
# data is gone, or a crisis reply ended it (staff decide, and may enroll them anew by hand).
NO_REENTRY = (ExitReason.UNSUBSCRIBED, ExitReason.ERASED, ExitReason.CRISIS)


def reentry_refusal(campaign: Campaign, existing: Enrollment, now: datetime) -> str | None:
    """Why the contact's `existing` enrollment in `campaign` may not start again now (None: it may,
    as a new entry). The campaign's `reentry` rule decides: allowed at all, and how long after the
    previous entry ended."""
    if not campaign.reentry.allowed:
        return f"already in {campaign.id} ({existing.status}); this campaign runs once per person"
    if existing.status not in (EnrollmentStatus.COMPLETED, EnrollmentStatus.EXITED):
        return f"already in {campaign.id} and still {existing.status}"
    if existing.exit_reason in NO_REENTRY:
        return f"an entry that ended as {existing.exit_reason} does not start again by itself"
    ended = existing.ended_at or existing.enrolled_at
    if ended + campaign.reentry.after > now:
        return f"it ended {ended:%Y-%m-%d}; they may enter again from {ended + campaign.reentry.after:%Y-%m-%d}"
    return None


def enroll(session: Session, contact: Contact, campaign: Campaign, now: datetime, actor: str,
           source: str = "", *, reenter: bool = True) -> Enrollment:
    """Start `campaign` for `contact`; the first step is due at once (inside the send window). A
    contact whose earlier time through it ended starts it again as a new entry when the campaign's
    re-entry rule allows (`reentry_refusal`; `reenter=False`: never — an import does not).
    Raises `AlreadyEnrolled` / `EnrollmentError` (see `enrollment_decision`)."""
    existing = session.scalar(
        select(Enrollment).where(Enrollment.contact_id == contact.id, Enrollment.campaign_id == campaign.id)
    )
    reentering = False
    if reenter and existing is not None and campaign.reentry.allowed:
        refusal = reentry_refusal(campaign, existing, now)
        if refusal is not None:
            raise AlreadyEnrolled(
                f"{contact.display_name} is already enrolled in {campaign.id} (status {existing.status}"
                + (f", {existing.exit_reason}" if existing.exit_reason else "") + f"): {refusal}")
        reentering = True
    enrollment_decision(contact, campaign, None if existing is None or reentering else
                        PastEnrollment(existing.status, existing.exit_reason))
    campaign = version_in_force(session, campaign)  # the timing it keeps to the end
    if reentering and existing is not None:
        # The same row starts again as its next entry: its sends are keyed by entry, so the journey's
        # steps may go once more, and the earlier entry's record stays as it was.
        enrollment = existing
        enrollment.entry = (enrollment.entry or 1) + 1
        enrollment.status, enrollment.exit_reason, enrollment.ended_at = EnrollmentStatus.ACTIVE, None, None
        enrollment.step_index, enrollment.step_entered_at, enrollment.holdout = 0, None, False
        enrollment.enrolled_at, enrollment.source = now, source[:64]
        enrollment.campaign_version, enrollment.claimed_by = stored_version(campaign), None
    else:
        enrollment = Enrollment(
            contact_id=contact.id, campaign_id=campaign.id, status=EnrollmentStatus.ACTIVE, step_index=0,
            enrolled_at=now, source=source[:64], campaign_version=stored_version(campaign),
        )
        session.add(enrollment)
    session.flush()
    scheduled = first_step(campaign, contact.timezone, now, enrollment.id, phone=contact.phone)
    enrollment.next_due_at = scheduled.due if scheduled is not None else None
    add_rows(session, enrolled_rows(contact.id, enrollment.id, campaign.id, now, actor, entry=enrollment.entry)
             + deferred_rows(contact.id, enrollment.id, campaign, scheduled, contact.timezone, now))
    crisis_reply = _open_crisis_reply(session, contact.id)
    if crisis_reply is not None:
        # A new sequence must not reach a person whose crisis reply staff have not looked at yet:
        # it starts paused, like the ones the crisis paused, and resolving the reply decides.
        set_paused(session, {campaign.id: campaign}, enrollment, True, now, "system:crisis",
                   reason=CRISIS_PAUSE_REASON, inbound_id=crisis_reply)
    # Speed to lead: a first step due now wakes the dispatchers when this transaction commits.
    mark_due(session, enrollment.next_due_at, now)
    return enrollment


def end_enrollments(
    session: Session, contact_id: int, reason: ExitReason, now: datetime, actor: str,
    campaign_ids: Iterable[str] | None = None, *, except_campaigns: Iterable[str] = (),
) -> int:
    """Stop every active or paused enrollment of the contact (of `campaign_ids` only, when given; never
    of `except_campaigns`); nothing more is sent. Returns how many."""
    query = select(Enrollment).where(Enrollment.contact_id == contact_id, Enrollment.status.in_(RUNNING))
    if campaign_ids is not None:
        query = query.where(Enrollment.campaign_id.in_(list(campaign_ids)))
    kept = list(except_campaigns)
    if kept:
        query = query.where(Enrollment.campaign_id.not_in(kept))
    count = 0
    for enrollment in session.scalars(query):
        enrollment.status = EnrollmentStatus.EXITED
        enrollment.exit_reason = reason
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        enrollment.ended_at = now
        add_rows(session, [
            event_row(EventKind.ENROLLMENT_ENDED, now, contact_id, enrollment.id, reason=str(reason),
                      campaign=enrollment.campaign_id),
            audit_row(actor, "enrollment_ended", now, contact_id, campaign=enrollment.campaign_id, reason=str(reason)),
        ])
        count += 1
    if count and reason == ExitReason.STAFF:
        close_reply_tasks(session, contact_id, actor, now, "ended")
    return count


def unsubscribe(
    session: Session, campaigns: Mapping[str, Campaign], contact: Contact, channels: Iterable[Channel],
    method: ConsentMethod, now: datetime, actor: str, *, ip_address: str | None = None,
    user_agent: str | None = None,
) -> list[Channel]:
    """Withdraw consent on `channels`; end enrollments that can no longer reach the contact (or whose
    campaign is not loaded). Returns the channels that changed."""
    changed = [channel for channel in channels
               if withdraw_consent(session, contact, channel, method, now, actor, ip_address=ip_address,
                                   user_agent=user_agent)]
    running = list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id,
                                                            Enrollment.status.in_(RUNNING))))
    for enrollment in running:
        campaign = campaigns.get(enrollment.campaign_id)
        if campaign is None or not usable_channels(contact, campaign):
            end_enrollments(session, contact.id, ExitReason.UNSUBSCRIBED, now, actor, [enrollment.campaign_id])
    return changed


def set_paused(session: Session, campaigns: Mapping[str, Campaign], enrollment: Enrollment, paused: bool,
               now: datetime, actor: str, *, reason: str = "", inbound_id: int | None = None) -> bool:
    """Pause keeps the place in the sequence; resume continues from the next unsent step (not
    before `now`). Anything else (pausing a paused one, resuming an ended one) changes nothing and
    returns False. `reason` (shown on the timeline) and the reply `inbound_id` that caused it go
    into the event and audit rows. Resuming raises `UnknownCampaign` when the campaign is not loaded."""
    if paused and enrollment.status == EnrollmentStatus.ACTIVE:
        enrollment.status = EnrollmentStatus.PAUSED
        enrollment.next_due_at = None
        enrollment.claimed_by = None
    elif not paused and enrollment.status == EnrollmentStatus.PAUSED:
        campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
        if campaign is None:
            raise UnknownCampaign(f"{enrollment.campaign_id} (version {enrollment.campaign_version or 1})",
                                  list(campaigns))
        enrollment.status = EnrollmentStatus.ACTIVE
        due = step_due_at(campaign, enrollment.step_index, enrollment.enrolled_at, enrollment.contact.timezone,
                          enrollment.id, phone=enrollment.contact.phone)
        enrollment.next_due_at = max(due, now) if due else now
        mark_due(session, enrollment.next_due_at, now)
        if not actor.startswith("system:"):
            close_reply_tasks(session, enrollment.contact_id, actor, now, "resumed")
    else:
        return False
    add_rows(session, pause_rows(paused, enrollment.contact_id, enrollment.id, enrollment.campaign_id, now, actor,
                                 reason=reason, inbound_id=inbound_id))
    return True


def pause_rows(paused: bool, contact_id: int, enrollment_id: int, campaign_id: str, now: datetime, actor: str, *,
               reason: str = "", inbound_id: int | None = None) -> list[Row]:
    """The timeline and audit rows of a pause or resume (the bulk importer writes them too)."""
    action = EventKind.PAUSED if paused else EventKind.RESUMED  # the audit action has the same name
    why = {key: value for key, value in (("reason", reason), ("inbound_id", inbound_id)) if value}
    return [event_row(action, now, contact_id, enrollment_id, **why),
            audit_row(actor, action, now, contact_id, campaign=campaign_id, **why)]


# -- the crisis pause ------------------------------------------------------------------------------

# Written into the pause event; it is also how a crisis pause is told from a pause by staff, so that
# resolving a crisis never resumes a sequence a person paused for their own reasons.
CRISIS_PAUSE_REASON = "possible crisis reply: paused until a member of staff resolves it"
CRISIS_RESUME_REASON = "crisis reply resolved by staff"


def pause_for_crisis(session: Session, campaigns: Mapping[str, Campaign], contact_id: int, inbound_id: int,
                     now: datetime, actor: str) -> int:
    """Pause every active enrollment of the contact because reply `inbound_id` may be a crisis: no
    automated message goes to a person who may be in danger until staff have looked. Returns how
    many were paused (ones already paused or ended are left as they are)."""
    active = list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact_id,
                                                           Enrollment.status == EnrollmentStatus.ACTIVE)))
    # A campaign may say a crisis ends it (`exit_on: [crisis]`) rather than pausing it.
    ending = [e.campaign_id for e in active if "crisis" in getattr(campaigns.get(e.campaign_id), "exit_on", ())]
    if ending:
        end_enrollments(session, contact_id, ExitReason.CRISIS, now, actor, ending)
    return sum(set_paused(session, campaigns, enrollment, True, now, actor, reason=CRISIS_PAUSE_REASON,
                          inbound_id=inbound_id) for enrollment in active if enrollment.campaign_id not in ending) + len(ending)


def crisis_paused(session: Session, contact_id: int) -> list[Enrollment]:
    """The contact's paused enrollments whose latest pause was a crisis pause."""
    paused = {e.id: e for e in session.scalars(select(Enrollment).where(
        Enrollment.contact_id == contact_id, Enrollment.status == EnrollmentStatus.PAUSED))}
    if not paused:
        return []
    latest: dict[int, Event] = {}
    for event in session.scalars(select(Event).where(
            Event.contact_id == contact_id, Event.kind == EventKind.PAUSED, Event.enrollment_id.in_(list(paused)))
            .order_by(Event.id)):
        latest[event.enrollment_id or 0] = event
    return [paused[eid] for eid, event in sorted(latest.items())
            if (event.detail or {}).get("reason") == CRISIS_PAUSE_REASON]


def open_crisis_reply_ids(session: Session, contact_ids: Iterable[int]) -> dict[int, int]:
    """For each of these contacts with a crisis-flagged reply nobody has handled: the newest such
    reply's id. One query for a whole batch (the importer asks for each chunk)."""
    ids = list(contact_ids)
    if not ids:
        return {}
    rows = session.execute(select(InboundMessage.contact_id, func.max(InboundMessage.id)).where(
        InboundMessage.contact_id.in_(ids), InboundMessage.crisis.is_(True),
        InboundMessage.handled_at.is_(None)).group_by(InboundMessage.contact_id))
    return {int(contact_id): int(reply_id) for contact_id, reply_id in rows}


def _open_crisis_reply(session: Session, contact_id: int) -> int | None:
    """The newest of the contact's crisis-flagged replies that nobody has handled, or None."""
    return open_crisis_reply_ids(session, [contact_id]).get(contact_id)


def open_crisis_replies(session: Session, contact_id: int) -> int:
    """How many of the contact's crisis-flagged replies no member of staff has handled yet."""
    return int(session.scalar(select(func.count()).select_from(InboundMessage).where(
        InboundMessage.contact_id == contact_id, InboundMessage.crisis.is_(True),
        InboundMessage.handled_at.is_(None))) or 0)


def resolve_crisis(session: Session, campaigns: Mapping[str, Campaign], contact_id: int, inbound_id: int,
                   resume: bool, now: datetime, actor: str) -> int | None:
    """Staff resolved crisis reply `inbound_id` (already marked handled). With `resume`, the
    sequences the crisis paused go on (through `set_paused`), unless another crisis reply of the
    contact is still open: then nothing resumes and None is returned. Otherwise returns how many
    resumed (0 when kept paused). A sequence whose campaign is no longer loaded stays paused.
    Writes a `crisis_resolved` event and audit entry saying which was chosen."""
    session.flush()  # the handled mark must be visible to the open-replies count
    resumed: int | None = 0
    if resume and open_crisis_replies(session, contact_id):
        resumed = None
    elif resume:
        resumed = sum(set_paused(session, campaigns, enrollment, False, now, actor, reason=CRISIS_RESUME_REASON,
                                 inbound_id=inbound_id)
                      for enrollment in crisis_paused(session, contact_id) if enrollment.campaign_id in campaigns)
    outcome = ("sequences kept paused" if not resume else
               "kept paused: another crisis reply is still open" if resumed is None else f"{resumed} resumed")
    add_rows(session, [event_row(EventKind.CRISIS_RESOLVED, now, contact_id, outcome=outcome, inbound_id=inbound_id),
                       audit_row(actor, EventKind.CRISIS_RESOLVED, now, contact_id, outcome=outcome,
                                 inbound_id=inbound_id)])
    return resumed


def mark_reply_handled(session: Session, campaigns: Mapping[str, Campaign], reply: InboundMessage, resume: bool,
                       note: str, now: datetime, actor: str) -> int | None:
    """A member of staff has dealt with `reply` (once: a second call changes nothing and returns 0).
    A crisis reply of a known contact is also resolved (`resolve_crisis`): with `resume` the
    sequences it paused go on. Returns what `resolve_crisis` returns (None: a resume held back by
    another open crisis reply), else 0."""
    if reply.handled_at is not None:
        return 0
    reply.handled_at = now
    reply.handled_by = actor
    add_rows(session, [audit_row(actor, "reply_handled", now, reply.contact_id, reply=reply.id, crisis=reply.crisis,
                                 note=note.strip())])
    if reply.crisis and reply.contact_id is not None:
        return resolve_crisis(session, campaigns, reply.contact_id, reply.id, resume, now, actor)
    return 0
