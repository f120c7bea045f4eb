"""The step state machine: what happens to one claimed enrollment's current step in a pass.

`decide` walks one enrollment to the step it must send now. It ends in exactly one of these
ways (an `Outcome`, or a `Ready` send):

- `LOST_CLAIM` — another worker holds the enrollment now (our lease ran out): touch nothing.
- `EXITED` — the enrollment is no longer active (booked, stopped, paused by staff): it leaves the
  queue; or the contact can be reached on no channel the campaign uses any more: it ends as
  `unsubscribed` (consent withdrawn on every channel) or `unreachable`.
- `ERROR` — the contact or the campaign file is missing: held `RENDER_RETRY`, never guessed.
- `COMPLETED` — there is no step left: the enrollment is finished.
- `UNKNOWN` — the step's send has an unknown fate (its worker died after handing it to the
  provider, or the provider's answer was lost): it waits `RECONCILE_WAIT` for reconciliation; never
  resent blindly. A send whose worker died *before* handing it over (no `handed_at`) is not in
  doubt: it goes back to `retrying` (`requeue_unhanded`) and the walk goes on to send it (`Ready`).
- `DEFERRED` — someone else's send of this step is still within its lease (or was settled while
  we looked at it: looked at again after `RECONCILE_WAIT`); or the next step is
  not due yet; or the send window is closed in the contact's time zone (moved to its opening).
- `SKIPPED` — the step's channel cannot be used for this contact (no consent, blocked, no
  address), or the step is off in the enrollment's timing version (`content.campaign_versions`):
  the skip is recorded with why and the enrollment moves on; if the next step is due now the walk
  continues with it.
- `PAUSED` — the step's channel is paused for everyone: looked at again every `PAUSE_RECHECK`.
- `Ready` — a send is due now: a new one (no send record yet) or a retry of its record.

After rendering, a new send that breaks a content rule (`content.send_rules.hold_reasons`) ends as
`HELD` (`hold`): its record is stored `held` with the reason, nothing is sent, and the
enrollment moves on to the next step at its own time.

A step already sent (or failed, or skipped) moves the enrollment on and the walk continues, so one
pass can go through several steps due at once. A text's window is the strictest of the campaign's
and the law for the number (`content.texting_rules`); when a step is moved for it, a
`message_deferred` event says why. After `decide`, `defer_over_cap` holds back new sends beyond the
campaign's daily frequency cap (`DEFERRED` to the contact's next local day) and texts beyond a state
law's rolling 24-hour count (`DEFERRED` until the oldest of those texts is 24 hours old).

Every function here works on ORM rows in the caller's transaction; the SQL is in `queue.py`.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from patient_drip.contacts.blocks import blocked_text
from patient_drip.contacts.enrollment import usable_channels
from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.content.journey import (
    assign_variant,
    choose,
    holdout_receives,
    in_holdout,
    message_language,
    messages_ahead,
    next_index,
    template_for,
    wait_state,
)
from patient_drip.content.journey_types import StepKind
from patient_drip.content.texting_rules import texting_rules
from patient_drip.content.windows import (
    held_reason,
    local_day_bounds,
    local_label,
    next_opening,
    schedule_into_window,
    schedule_step,
    window_for,
)
from patient_drip.dispatch import queue
from patient_drip.dispatch.journey_facts import load_facts
from patient_drip.dispatch.pauses import paused_channels
from patient_drip.models import (
    Channel,
    Contact,
    Enrollment,
    EnrollmentStatus,
    EventKind,
    ExitReason,
    Message,
    MessageStatus,
    add_event,
)

log = logging.getLogger("drip.dispatch")


class Outcome(StrEnum):
    """How one enrollment's turn in a pass ended (counted in `DispatchSummary.outcomes`)."""

    SENT = "sent"
    SKIPPED = "skipped"
    HELD = "held"
    RETRYING = "retrying"
    FAILED = "failed"
    UNKNOWN = "unknown"
    DEFERRED = "deferred"
    COMPLETED = "completed"
    EXITED = "exited"
    PAUSED = "paused"
    ERROR = "error"
    LOST_CLAIM = "lost_claim"


@dataclass(slots=True)
class Ready:
    """A step to send now: its send record is None for a first attempt."""

    enrollment: Enrollment
    contact: Contact
    campaign: Campaign
    step: Step  # with the template of this enrollment's variant and language (`content.journey.template_for`)
    message: Message | None
    variant: str | None = None
    language: str = "en"


class BatchState:
    """What one prepare transaction loaded, so deciding an enrollment issues no queries."""

    def __init__(self, session: Session, ids: Sequence[int], campaigns: dict[str, Campaign]) -> None:
        self.session = session
        self.rows = queue.load_enrollments(session, ids)
        step_ids: set[str] = set()
        for enrollment, _contact in self.rows:
            campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version)
            if campaign is not None and enrollment.step_index < len(campaign.steps):
                # The current step, or - at a branch, wait or exit - the messages the walk may reach
                # through them in this turn (else each would be looked up alone).
                step_ids.update(messages_ahead(campaign, enrollment.step_index))
        self.loaded_steps = step_ids
        self.messages: dict[tuple[int, str, str], Message] = {}
        if step_ids and self.rows:
            # Only the current step's send record matters, in the enrollment's current entry.
            entries = {enrollment.id: enrollment.entry for enrollment, _ in self.rows}
            for message in queue.step_messages(session, list(entries), step_ids):
                if message.entry == entries.get(message.enrollment_id):
                    self.messages[(message.enrollment_id, message.step_id, message.channel)] = message
        self.paused = paused_channels(session)
        self._sent_times: dict[int, list[tuple[str, datetime]]] | None = None
        self.prepared_for: Counter[int] = Counter()  # new sends per contact in this batch
        self.texts_prepared_for: Counter[int] = Counter()  # texts (new or retried) per contact in this batch

    def message(self, enrollment: Enrollment, step: Step) -> Message | None:
        """The send record of `step` for `enrollment`, or None when there is none yet."""
        key = (enrollment.id, step.id, str(step.channel))
        if key in self.messages:
            return self.messages[key]
        if step.id in self.loaded_steps:
            return None
        # The enrollment moved past its current step (skip, or already sent): look it up alone.
        found = queue.find_message(self.session, enrollment.id, step.id, str(step.channel), enrollment.entry)
        if found is not None:
            self.messages[key] = found
        return found

    def sent_today(self, contacts: Iterable[Contact], contact: Contact, now: datetime) -> int:
        """Messages sent to `contact` on its local calendar day, counting this batch's new sends
        (loaded once for all of `contacts`)."""
        start, end = local_day_bounds(now, contact.timezone)
        stored = sum(1 for _channel, sent_at in self._recent(contacts, now).get(contact.id, ()) if start <= sent_at < end)
        return stored + self.prepared_for[contact.id]

    def texts_last_24h(self, contacts: Iterable[Contact], contact: Contact, now: datetime) -> list[datetime]:
        """When each text to `contact` in the 24 hours up to `now` went, oldest first; this batch's
        own texts count as sent `now`."""
        since = now - timedelta(hours=24)
        times = sorted(sent_at for channel, sent_at in self._recent(contacts, now).get(contact.id, ())
                       if channel == Channel.SMS and since < sent_at <= now)
        return times + [now] * self.texts_prepared_for[contact.id]

    def _recent(self, contacts: Iterable[Contact], now: datetime) -> dict[int, list[tuple[str, datetime]]]:
        if self._sent_times is None:
            self._sent_times = defaultdict(list)
            for contact_id, channel, sent_at in queue.recent_sends(self.session, (c.id for c in contacts), now):
                self._sent_times[contact_id].append((channel, sent_at))
        return self._sent_times


def decide(state: BatchState, enrollment: Enrollment, contact: Contact | None, now: datetime, *,
           worker_id: str, campaigns: dict[str, Campaign]) -> Outcome | Ready:
    """Walk one claimed enrollment to the step it must send now, or return why it sends nothing
    (the module docstring lists every ending)."""
    session = state.session
    if enrollment.claimed_by != worker_id:
        return Outcome.LOST_CLAIM
    if enrollment.status != EnrollmentStatus.ACTIVE:
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        return Outcome.EXITED
    campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version)
    if contact is None or campaign is None:
        # Campaign file removed while people were enrolled (or its timing version saved since this
        # process loaded them: the next pass's refresh loads it): hold them, do not guess.
        log.error("enrollment %s: campaign %s not loaded; holding", enrollment.id, enrollment.campaign_id)
        defer(enrollment, now + queue.RENDER_RETRY)
        return Outcome.ERROR
    if enrollment.step_entered_at is None:
        begin_entry(session, enrollment, campaign, now)
    for _ in range(MAX_WALK):
        if enrollment.step_index >= len(campaign.steps):
            complete(session, enrollment, now)
            return Outcome.COMPLETED
        if not usable_channels(contact, campaign):
            exit_unreachable(session, enrollment, contact, now)
            return Outcome.EXITED
        step = campaign.steps[enrollment.step_index]
        if not step.is_message:
            walked = walk_control(session, enrollment, contact, campaign, step, now)
            if walked is not None:
                return walked
            continue
        if enrollment.holdout and step.id not in holdout_receives(campaign):
            complete(session, enrollment, now, holdout=True)
            return Outcome.COMPLETED
        message = state.message(enrollment, step)
        if message is not None and message.status == MessageStatus.UNKNOWN:
            # Fate unknown: wait for the status callback / reconciliation to decide.
            defer(enrollment, now + queue.RECONCILE_WAIT)
            return Outcome.UNKNOWN
        if message is not None and message.status not in (MessageStatus.SENDING, MessageStatus.RETRYING):
            advance(session, enrollment, campaign, contact, now)  # done already
            if enrollment.status != EnrollmentStatus.ACTIVE:
                return Outcome.COMPLETED
            if enrollment.next_due_at is not None and enrollment.next_due_at > now:
                return Outcome.DEFERRED  # the next step is not due yet
            continue
        if message is not None and message.status == MessageStatus.SENDING:
            attempted = message.attempted_at or message.created_at
            if attempted + queue.LEASE > now:
                defer(enrollment, attempted + queue.LEASE)  # someone is still on it
                return Outcome.DEFERRED
            if requeue_unhanded(session, message, now):
                pass  # its worker stopped before handing it over: sent again below (same record)
            elif message.status != MessageStatus.SENDING or (message.attempted_at or attempted) + queue.LEASE > now:
                defer(enrollment, now + queue.RECONCILE_WAIT)  # settled or taken over meanwhile; look again
                return Outcome.DEFERRED
            else:
                return _stalled_send(session, enrollment, contact, step, message, now)
        if not step.enabled or step.channel not in usable_channels(contact, campaign):
            skip(session, enrollment, contact, step, message, now,
                 reason=None if step.enabled else f"step turned off in version {campaign.version}")
            advance(session, enrollment, campaign, contact, now)
            if enrollment.status != EnrollmentStatus.ACTIVE or (
                    enrollment.next_due_at is not None and enrollment.next_due_at > now):
                return Outcome.SKIPPED  # completed, or the next step waits for its own time
            continue
        break
    else:  # `journey_check` refuses loops without a wait; this guards a journey loaded without it
        log.error("enrollment %s: journey of %s did not settle in %d steps; holding", enrollment.id,
                  campaign.id, MAX_WALK)
        defer(enrollment, now + queue.RENDER_RETRY)
        return Outcome.ERROR
    if state.paused.get(step.channel):
        defer(enrollment, now + queue.PAUSE_RECHECK)
        return Outcome.PAUSED
    window = window_for(campaign, step.channel, contact.phone)
    if window is not None and next_opening(now, contact.timezone, window) > now:
        until = schedule_into_window(now, contact.timezone, window, enrollment.id)
        defer_with_reason(session, enrollment, contact, step, until, now,
                          held_reason(campaign, step.channel, contact.phone, contact.timezone, now))
        return Outcome.DEFERRED
    variant = assign_variant(enrollment.id, step)
    language = message_language(campaign, contact.language)
    sent_as = replace(step, template=template_for(step, variant, language))
    return Ready(enrollment, contact, campaign, sent_as, message, variant.id if variant else None, language)


def defer_over_cap(state: BatchState, ready: list[Ready], now: datetime) -> tuple[list[Ready], list[Outcome]]:
    """Apply each campaign's daily frequency cap to the new sends in `ready` (retries always go), and
    the rolling 24-hour count of the texting law for each number to every text.

    Returns the sends to make and one `DEFERRED` per send held back: to the contact's next local
    day (into the send window where it applies) for the cap, until the count allows for the law.
    One query for the whole batch, counting the batch's own sends too."""
    sendable: list[Ready] = []
    outcomes: list[Outcome] = []
    contacts = [item.contact for item in ready if item.message is None or item.step.channel == Channel.SMS]
    for item in ready:
        enrollment, contact, campaign, step = item.enrollment, item.contact, item.campaign, item.step
        if step.channel == Channel.SMS:
            if _texting_law_hold(state, contacts, item, now) is not None:
                outcomes.append(Outcome.DEFERRED)
                continue
        if item.message is None and state.sent_today(contacts, contact, now) >= campaign.frequency_cap_per_day:
            _start, later = local_day_bounds(now, contact.timezone)  # tomorrow, local time
            window = window_for(campaign, step.channel, contact.phone)
            if window is not None:
                later = schedule_into_window(later, contact.timezone, window, enrollment.id)
            defer(enrollment, later)
            outcomes.append(Outcome.DEFERRED)
            continue
        if item.message is None:
            state.prepared_for[contact.id] += 1
        if step.channel == Channel.SMS:
            state.texts_prepared_for[contact.id] += 1
        sendable.append(item)
    return sendable, outcomes


def _texting_law_hold(state: BatchState, contacts: list[Contact], item: Ready, now: datetime) -> datetime | None:
    """Hold a text back (and return until when) when the law for the contact's number allows at
    most N texts in a rolling 24 hours and N went already: until the oldest of those is 24 hours
    old, into the text window. None when it may go."""
    rule = texting_rules().for_number(item.contact.phone)
    if rule.max_per_24h is None:
        return None
    times = state.texts_last_24h(contacts, item.contact, now)
    if len(times) < rule.max_per_24h:
        return None
    until = times[-rule.max_per_24h] + timedelta(hours=24, seconds=1)
    window = window_for(item.campaign, Channel.SMS, item.contact.phone)
    if window is not None:
        until = schedule_into_window(until, item.contact.timezone, window, item.enrollment.id)
    defer_with_reason(state.session, item.enrollment, item.contact, item.step, until, now, rule.describe())
    return until


def requeue_unhanded(session: Session, message: Message, now: datetime) -> bool:
    """A `sending` record past its lease whose worker never handed it to the provider (no
    `handed_at`: the request never left) goes back to `retrying`, to be sent again as the same
    record — no duplicate is possible. Returns False (and changes nothing) when it was handed, or
    was settled or taken over meanwhile (re-read under a row lock first)."""
    queue.lock_message(session, message)
    attempted = message.attempted_at or message.created_at
    if message.status != MessageStatus.SENDING or message.handed_at is not None or attempted + queue.LEASE > now:
        return False
    message.status = MessageStatus.RETRYING
    message.attempts = max(0, (message.attempts or 0) - 1)  # the attempt never happened
    message.last_error = "worker stopped before handing it to the provider; sending it again"
    message.updated_at = now
    add_event(session, EventKind.MESSAGE_REQUEUED, now, contact_id=message.contact_id,
              enrollment_id=message.enrollment_id, message_id=message.id, worker=message.worker_id)
    log.info("message %s was never handed to the provider by its stopped worker; sending it again", message.id)
    return True


def _stalled_send(session: Session, enrollment: Enrollment, contact: Contact, step: Step, message: Message,
                  now: datetime) -> Outcome:
    """Its worker died after handing the send over and before recording the answer: fate unknown.
    Never resent blindly: it waits `RECONCILE_WAIT` for reconciliation."""
    message.status = MessageStatus.UNKNOWN
    message.last_error = "worker stopped during the provider call; awaiting reconciliation"
    message.updated_at = now
    add_event(session, EventKind.MESSAGE_UNKNOWN, now, contact_id=contact.id, enrollment_id=enrollment.id,
              message_id=message.id, step=step.id, channel=step.channel)
    log.warning("message %s (contact %s) marked unknown after a stalled send", message.id, contact.id)
    defer(enrollment, now + queue.RECONCILE_WAIT)
    return Outcome.UNKNOWN


# -- transitions ------------------------------------------------------------------------------------


def defer(enrollment: Enrollment, until: datetime) -> None:
    """Release the claim; the enrollment falls due again at `until`."""
    enrollment.next_due_at = until
    enrollment.claimed_by = None


def defer_with_reason(session: Session, enrollment: Enrollment, contact: Contact, step: Step, until: datetime,
                      now: datetime, reason: str) -> None:
    """`defer`, and say on the contact's timeline which step waits, until when (their local time) and
    why (quiet hours, or the texting law for their number)."""
    defer(enrollment, until)
    add_event(session, EventKind.MESSAGE_DEFERRED, now, contact_id=contact.id, enrollment_id=enrollment.id,
              step=step.id, channel=step.channel, until=local_label(until, contact.timezone), reason=reason)


def advance(session: Session, enrollment: Enrollment, campaign: Campaign, contact: Contact, now: datetime) -> None:
    """On from a message step to where it leads (due at its own time, with a `message_deferred` event
    when quiet hours or the texting law moved it), or complete the enrollment after the last."""
    move_to(session, enrollment, campaign, contact, next_index(campaign, enrollment.step_index), now)


def move_to(session: Session, enrollment: Enrollment, campaign: Campaign, contact: Contact, index: int | None,
            now: datetime) -> None:
    """The enrollment reaches step `index` now (None: the journey is over) and is released."""
    if index is None:
        complete(session, enrollment, now)
        return
    enrollment.step_index = index
    enrollment.step_entered_at = now
    enrollment.claimed_by = None
    scheduled = schedule_step(campaign, index, enrollment.enrolled_at, contact.timezone, enrollment.id,
                              phone=contact.phone, now=now)
    if scheduled is None:
        complete(session, enrollment, now)
        return
    enrollment.next_due_at = scheduled.due
    if scheduled.moved_because is not None and scheduled.due > now:
        step = campaign.steps[index]
        add_event(session, EventKind.MESSAGE_DEFERRED, now, contact_id=contact.id, enrollment_id=enrollment.id,
                  step=step.id, channel=step.channel, until=local_label(scheduled.due, contact.timezone),
                  reason=scheduled.moved_because)


# -- the journey's own steps ------------------------------------------------------------------------

MAX_WALK = 200  # steps one enrollment may pass in one turn (a journey is a few dozen at most)


def begin_entry(session: Session, enrollment: Enrollment, campaign: Campaign, now: datetime) -> None:
    """First look at an entry into the journey: it is reached now, and the holdout is drawn (fixed
    for the entry). A row from before journeys that is already under way is never put in the holdout."""
    enrollment.step_entered_at = enrollment.enrolled_at if enrollment.enrolled_at <= now else now
    fresh = enrollment.step_index == 0
    enrollment.holdout = fresh and in_holdout(enrollment.id, campaign)
    if enrollment.holdout:
        add_event(session, EventKind.JOURNEY_PATH, now, contact_id=enrollment.contact_id,
                  enrollment_id=enrollment.id, step="", path="holdout: receives only "
                  + ", ".join(sorted(holdout_receives(campaign))))


def walk_control(session: Session, enrollment: Enrollment, contact: Contact, campaign: Campaign, step: Step,
                 now: datetime) -> Outcome | None:
    """A branch, wait or exit reached by the walk: None when it moved the enrollment on (the walk
    goes on), else how this turn ends (DEFERRED: not its time yet, or still waiting; COMPLETED)."""
    not_before = enrollment.enrolled_at + step.delay
    if not_before > now:
        defer(enrollment, not_before)
        return Outcome.DEFERRED
    index = enrollment.step_index
    if step.kind == StepKind.EXIT:
        complete(session, enrollment, now, reason=step.exit_reason, step_id=step.id)
        return Outcome.COMPLETED
    facts = load_facts(session, enrollment, contact, step)
    if step.kind == StepKind.BRANCH:
        choice = choose(campaign, index, facts, now)
        target, label = choice.target, choice.label
    else:
        entered = enrollment.step_entered_at or enrollment.enrolled_at
        waited = wait_state(campaign, index, facts, entered, now)
        if not waited.over:
            defer(enrollment, waited.until or now + queue.RENDER_RETRY)
            return Outcome.DEFERRED
        target, label = waited.target, waited.label
    add_event(session, EventKind.JOURNEY_PATH, now, contact_id=contact.id, enrollment_id=enrollment.id,
              step=step.id, path=label)
    move_to(session, enrollment, campaign, contact, target, now)
    if enrollment.status != EnrollmentStatus.ACTIVE:
        return Outcome.COMPLETED
    if enrollment.next_due_at is not None and enrollment.next_due_at > now:
        return Outcome.DEFERRED
    return None


def advance_after_send(session: Session, enrollment: Enrollment, campaigns: dict[str, Campaign],
                       now: datetime) -> None:
    """Move on after this step's send was settled (sent or failed for good) — unless the
    enrollment was booked or stopped meanwhile (it leaves the queue) or its campaign file went
    away (it is only released)."""
    contact = queue.load_contact(session, enrollment.contact_id)
    campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
    if campaign is None:
        enrollment.claimed_by = None
        return
    if enrollment.status != EnrollmentStatus.ACTIVE:  # booked or stopped while we were sending
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        return
    advance(session, enrollment, campaign, contact, now)


def complete(session: Session, enrollment: Enrollment, now: datetime, *, reason: str = "",
             step_id: str = "", holdout: bool = False) -> None:
    """The journey is finished (its last step, an exit step saying `reason`, or the end of a holdout
    enrollment's share): out of the queue, with an `enrollment_completed` event."""
    enrollment.status = EnrollmentStatus.COMPLETED
    enrollment.next_due_at = None
    enrollment.claimed_by = None
    enrollment.ended_at = now
    detail: dict[str, object] = {}
    if reason:
        detail.update(reason=reason, step=step_id)
    if holdout:
        detail.update(holdout=True)
    add_event(session, EventKind.ENROLLMENT_COMPLETED, now, contact_id=enrollment.contact_id,
              enrollment_id=enrollment.id, **detail)


def exit_unreachable(session: Session, enrollment: Enrollment, contact: Contact, now: datetime) -> None:
    """No channel of the campaign can reach the contact any more: end the enrollment, as
    `unsubscribed` when they withdrew consent everywhere, else `unreachable`."""
    withdrew = not contact.email_consent and not contact.sms_consent
    enrollment.status = EnrollmentStatus.EXITED
    enrollment.exit_reason = ExitReason.UNSUBSCRIBED if withdrew else ExitReason.UNREACHABLE
    enrollment.next_due_at = None
    enrollment.claimed_by = None
    enrollment.ended_at = now
    add_event(session, EventKind.ENROLLMENT_ENDED, now, contact_id=contact.id, enrollment_id=enrollment.id,
              reason=enrollment.exit_reason)


def skip(session: Session, enrollment: Enrollment, contact: Contact, step: Step, message: Message | None,
         now: datetime, *, reason: str | None = None) -> None:
    """Record the step as skipped (with `reason`, else why the channel cannot be used), creating its
    send record if it has none; the caller moves the enrollment on."""
    if reason is None and step.channel == Channel.EMAIL:
        reason = blocked_text(contact, step.channel) or ("no email address" if not contact.email else "no email consent")
    elif reason is None:
        reason = blocked_text(contact, step.channel) or ("no phone number" if not contact.phone else "no SMS consent")
    if message is None:
        message = Message(enrollment_id=enrollment.id, contact_id=contact.id, campaign_id=enrollment.campaign_id,
                          step_id=step.id, channel=step.channel, template_name=step.template,
                          entry=enrollment.entry, created_at=now, updated_at=now)
        session.add(message)
    message.status = MessageStatus.SKIPPED
    message.last_error = reason[:500]
    message.updated_at = now
    session.flush()
    add_event(session, EventKind.MESSAGE_SKIPPED, now, contact_id=contact.id, enrollment_id=enrollment.id,
              message_id=message.id, step=step.id, channel=step.channel, reason=reason)


def hold(session: Session, ready: Ready, message_id: int, rendered: tuple[str | None, str | None, str],
         reason: str, now: datetime) -> None:
    """Store new send `message_id` of `ready` as `held` (rendered content kept for staff to see,
    `reason` as its error), write a `message_held` event, and move the enrollment on.

    Not retried: the same content would break the same rule. The sequence goes on like after a
    skip, so one unsafe message does not silence the rest (`content.send_rules`)."""
    enrollment, contact, step = ready.enrollment, ready.contact, ready.step
    subject, html, text = rendered
    session.add(Message(id=message_id, enrollment_id=enrollment.id, contact_id=contact.id,
                        campaign_id=enrollment.campaign_id, step_id=step.id, channel=step.channel,
                        template_name=step.template, status=MessageStatus.HELD, last_error=reason,
                        entry=enrollment.entry, variant=ready.variant, language=ready.language,
                        subject=subject, body_html=html, body_text=text, attempts=0,
                        created_at=now, updated_at=now))
    session.flush()
    add_event(session, EventKind.MESSAGE_HELD, now, contact_id=contact.id, enrollment_id=enrollment.id,
              message_id=message_id, step=step.id, channel=step.channel, reason=reason)
    log.error("message %s (contact %s, step %s) held, not sent: a content rule failed at send time",
              message_id, contact.id, step.id)
    advance(session, enrollment, ready.campaign, contact, now)
