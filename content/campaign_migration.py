"""Moving people already in a campaign onto a newer timing version (`content.campaign_versions`).

A new version applies to new enrollments; in-flight ones (active or paused) keep theirs unless the
editor moves them. Before that, `migration_preview` says, per step, how many of them would

- **receive** it: still ahead of them, off in their version and on in the new one;
- **skip** it: still ahead of them, on in theirs and off in the new one;
- **repeat** it: always 0 — a timing version cannot reorder steps, and a send is keyed by
  (enrollment, entry, step, channel), so a step already sent is never sent again whatever the
  version (`repeat_note` says so; `already_had` counts those a loop brings back to a step they
  already had, who will not get it again);
- get it **earlier** or **later**: still ahead of them and on in the new version, with a shorter or
  longer delay.

"Ahead" is every step the journey can still reach from the step a person is at (that step
included: it has not gone yet) that has no send record of theirs in this entry. It is computed from
two grouped queries (where people are; which steps of theirs have a record) and the two versions.

`migrate_in_flight` then moves them (the one rule for it: the staff page calls it): sets
`enrollment.campaign_version`, recomputes `next_due_at` for the step each is at when that step's
timing changed and nothing of it was sent yet (`content.windows.schedule_step`, with `now`), and
audits the move with the editor's note. Idempotent: a second call finds nobody left on the old
version and changes nothing. An enrollment a worker holds right now is left where it is (counted
in `left`); moving again later picks it up.

Imports: models, `content.campaign`, `content.campaign_versions`, `content.journey`, `content.windows`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.content.campaign_versions import (MAX_NOTE, apply_timing, format_delay, stored_version,
                                                    version_row_timing)
from patient_drip.content.journey import edges
from patient_drip.content.windows import schedule_step
from patient_drip.models import Contact, Enrollment, EnrollmentStatus, Message, audit

IN_FLIGHT = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)
REPEAT_NOTE = ("Nobody repeats a step: a timing version changes delays and on/off, never the order of the "
               "steps, and each step is sent at most once per person (sends are keyed by step).")


class MigrationInvalid(Exception):
    """The move cannot be made as asked: field (`from`, `to`, `note`) → what to change."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


@dataclass(frozen=True, slots=True)
class StepPreview:
    step_id: str
    kind: str
    channel: str
    ahead: int  # people for whom this step is still to come
    receive: int
    skip: int
    repeat: int
    earlier: int
    later: int
    already_had: int  # a loop leads them back to it, but they had it: not sent again
    change: str  # the timing change in words ("2d → 3d", "turned on"); "" when none

    @property
    def changed(self) -> bool:
        return bool(self.receive or self.skip or self.earlier or self.later)


@dataclass(frozen=True, slots=True)
class MigrationPreview:
    campaign_id: str
    from_version: int
    to_version: int
    people: int  # in flight on the old version
    paused: int
    steps: tuple[StepPreview, ...]
    repeat_note: str = REPEAT_NOTE

    def total(self, what: str) -> int:
        """People-steps for `what` (receive, skip, repeat, earlier, later) over every step."""
        return sum(getattr(step, what) for step in self.steps)


@dataclass(frozen=True, slots=True)
class MigrationResult:
    moved: int
    rescheduled: int  # whose current step's due time was recomputed
    left: int  # held by a worker at that moment: still on the old version


def _on_version(number: int) -> ColumnElement[bool]:
    stored = stored_version_number(number)
    return Enrollment.campaign_version.is_(None) if stored is None else Enrollment.campaign_version == stored


def stored_version_number(number: int) -> int | None:
    """What `enrollment.campaign_version` holds for version `number` (NULL for 1, the file)."""
    return None if number == 1 else number


def in_flight_versions(session: Session, campaign_id: str) -> dict[int, int]:
    """How many people are in flight (active or paused) on each version of the campaign."""
    rows = session.execute(select(Enrollment.campaign_version, func.count())
                           .where(Enrollment.campaign_id == campaign_id, Enrollment.status.in_(IN_FLIGHT))
                           .group_by(Enrollment.campaign_version))
    found: dict[int, int] = defaultdict(int)
    for version, count in rows:
        found[int(version or 1)] += int(count)
    return dict(found)


def load_version(session: Session, campaign: Campaign, number: int) -> Campaign | None:
    """Version `number` of `campaign` — the campaign file (version 1): a later version cannot give
    back the file's timing — or None if it was not saved."""
    if campaign.version != 1:
        raise ValueError(f"load_version needs the campaign file, not version {campaign.version}")
    if number == 1:
        return campaign
    timing = version_row_timing(session, campaign.id, number)
    return None if timing is None else apply_timing(campaign, number, timing)


def _ahead(campaign: Campaign, index: int) -> set[int]:
    """Every step the journey can still reach from step `index`, that one included."""
    seen: set[int] = set()
    stack = [index]
    while stack:
        node = stack.pop()
        if node in seen or node >= len(campaign.steps):
            continue
        seen.add(node)
        stack.extend(edge.target for edge in edges(campaign, node) if edge.target is not None)
    return seen


def _change(old_delay: timedelta, new_delay: timedelta, old_on: bool, new_on: bool) -> str:
    parts = []
    if old_delay != new_delay:
        parts.append(f"{format_delay(old_delay)} → {format_delay(new_delay)}")
    if old_on != new_on:
        parts.append("turned on" if new_on else "turned off")
    return ", ".join(parts)


def migration_preview(session: Session, campaign_old_version: Campaign, campaign_new_version: Campaign) -> MigrationPreview:
    """What moving everyone in flight on `campaign_old_version` to `campaign_new_version` would do,
    step by step (see the module's docstring)."""
    old, new = campaign_old_version, campaign_new_version
    on_old = and_(Enrollment.campaign_id == old.id, Enrollment.status.in_(IN_FLIGHT), _on_version(old.version))
    at: dict[int, int] = defaultdict(int)
    paused = 0
    for index, status, count in session.execute(select(Enrollment.step_index, Enrollment.status, func.count())
                                                .where(on_old).group_by(Enrollment.step_index, Enrollment.status)):
        at[int(index)] += int(count)
        paused += int(count) if status == EnrollmentStatus.PAUSED else 0
    # Which steps of theirs already have a send record in their current entry, by where they are.
    had: dict[tuple[int, str], int] = defaultdict(int)
    for index, step_id, count in session.execute(
            select(Enrollment.step_index, Message.step_id, func.count(func.distinct(Enrollment.id)))
            .join(Message, and_(Message.enrollment_id == Enrollment.id, Message.entry == Enrollment.entry))
            .where(on_old).group_by(Enrollment.step_index, Message.step_id)):
        had[(int(index), str(step_id))] += int(count)

    counts: dict[str, dict[str, int]] = {step.id: defaultdict(int) for step in new.steps}
    for index, people in at.items():
        for reached in _ahead(new, index):
            step_id = new.steps[reached].id
            before = had.get((index, step_id), 0)
            still = people - before
            if reached != index:
                counts[step_id]["already_had"] += before
            counts[step_id]["ahead"] += still
            was, now_ = old.steps[reached], new.steps[reached]
            if was.is_message and not was.enabled and now_.enabled:
                counts[step_id]["receive"] += still
            if was.is_message and was.enabled and not now_.enabled:
                counts[step_id]["skip"] += still
            if now_.enabled and now_.delay < was.delay:
                counts[step_id]["earlier"] += still
            if now_.enabled and now_.delay > was.delay:
                counts[step_id]["later"] += still
    steps = tuple(
        StepPreview(step.id, str(step.kind), str(step.channel or ""), c["ahead"], c["receive"], c["skip"], 0,
                    c["earlier"], c["later"], c["already_had"],
                    _change(was.delay, step.delay, was.enabled, step.enabled))
        for step, was, c in ((s, old.steps[i], counts[s.id]) for i, s in enumerate(new.steps)))
    return MigrationPreview(old.id, old.version, new.version, sum(at.values()), paused, steps)


def migrate_in_flight(session: Session, campaign: Campaign, from_version: int, to_version: int, actor: str,
                      now: datetime, *, note: str = "") -> MigrationResult:
    """Move everyone in flight on `from_version` of `campaign` (the campaign file, version 1; its saved
    versions are read from the database) to `to_version` (see the module's
    docstring); audited as `campaign_version_migrated` when anyone moved. Raises `MigrationInvalid`
    when a version does not exist, the two are the same, or the note is too long."""
    problems: dict[str, str] = {}
    source = load_version(session, campaign, from_version)
    target = load_version(session, campaign, to_version)
    if source is None:
        problems["from"] = f"there is no version {from_version} of {campaign.id}"
    if target is None:
        problems["to"] = f"there is no version {to_version} of {campaign.id}"
    if from_version == to_version:
        problems["to"] = "they are on that version already"
    if len(note.strip()) > MAX_NOTE:
        problems["note"] = f"keep the note under {MAX_NOTE} characters"
    if problems:
        raise MigrationInvalid(problems)
    assert source is not None and target is not None
    changed = {index for index, (was, step) in enumerate(zip(source.steps, target.steps))
               if was.delay != step.delay or was.enabled != step.enabled}
    query = (select(Enrollment, Contact).join(Contact, Contact.id == Enrollment.contact_id)
             .where(Enrollment.campaign_id == campaign.id, Enrollment.status.in_(IN_FLIGHT),
                    _on_version(from_version)).order_by(Enrollment.id)
             # PostgreSQL: rows a worker is writing right now are left for the next move, never waited on.
             .with_for_update(of=Enrollment, skip_locked=True))
    moved = rescheduled = left = 0
    reschedule: list[tuple[Enrollment, Contact]] = []
    for enrollment, contact in session.execute(query).all():
        if enrollment.claimed_by is not None and enrollment.next_due_at is not None and enrollment.next_due_at > now:
            left += 1  # a worker holds it (its lease has not run out): it finishes with its own version
            continue
        enrollment.campaign_version = stored_version(target)
        moved += 1
        if (enrollment.status == EnrollmentStatus.ACTIVE and enrollment.next_due_at is not None
                and enrollment.step_index in changed):
            reschedule.append((enrollment, contact))
    # A step already under way (a send record in this entry: sending, retrying, sent) keeps its time.
    entries = {enrollment.id: enrollment.entry for enrollment, _contact in reschedule}
    started: set[tuple[int, str]] = set()
    for chunk in range(0, len(reschedule), 500):
        ids = [enrollment.id for enrollment, _contact in reschedule[chunk:chunk + 500]]
        started |= {(enrollment_id, step_id) for enrollment_id, step_id, entry in session.execute(
            select(Message.enrollment_id, Message.step_id, Message.entry).where(Message.enrollment_id.in_(ids)))
            if entry == entries[enrollment_id]}
    for enrollment, contact in reschedule:
        if (enrollment.id, target.steps[enrollment.step_index].id) in started:
            continue
        scheduled = schedule_step(target, enrollment.step_index, enrollment.enrolled_at, contact.timezone,
                                  enrollment.id, phone=contact.phone, now=now)
        if scheduled is not None:
            enrollment.next_due_at = scheduled.due
            rescheduled += 1
    if moved:
        audit(session, actor, "campaign_version_migrated", now, campaign=campaign.id, from_version=from_version,
              to_version=to_version, moved=moved, rescheduled=rescheduled, left=left, note=note.strip())
    session.flush()
    return MigrationResult(moved, rescheduled, left)
