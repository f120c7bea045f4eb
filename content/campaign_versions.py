"""Timing versions of a campaign: marketing changes a step's delay or turns a step off in the staff
UI; each save is a new numbered version (author, time, note, audited), stored in `campaign_version`.

The campaign file is version 1 and stays the base: a version changes only delays and on/off, never
which steps exist or their content (templates still go through clinician sign-off). A new enrollment
records the version in force when it enrolled (`version_in_force`); every schedule of its steps uses
that version to the end (`campaign_for`), so people already in the sequence keep their timing.

`CampaignBook` is the runtime's set of campaigns: by id the version in force, plus every saved
version, built once and rebuilt only when a version is saved (`versions_stamp`), so the dispatcher's
hot path is a dictionary lookup. `Campaign` objects stay frozen: a version is a new object.

Imports: models and `content.campaign` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign, parse_delay
from patient_drip.models import CampaignVersion, audit

MAX_NOTE = 500
NOTE_FIELD = "note"
ORDER_RULE = ("each step's delay must be at least the one before it, in the file's order "
              "(steps that are off included), so the sequence keeps its order")


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One step's timing in a version."""

    delay: timedelta
    enabled: bool


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One saved version for the history: who, when, why, what changed."""

    number: int
    author: str
    created_at: datetime
    note: str
    changes: tuple[str, ...]


class TimingInvalid(Exception):
    """The form's every problem at once: field name (`delay-<step id>`, `enabled`, `note`,
    `version`) → what to change."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


def delay_field(step_id: str) -> str:
    """The form field of a step's delay."""
    return f"delay-{step_id}"


def format_delay(delay: timedelta) -> str:
    """A delay as the campaign files write it: `0m`, `30m`, `2h`, `3d`, `1d 12h`."""
    seconds = int(delay.total_seconds())
    if seconds == 0:
        return "0m"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts)


def timing_of(campaign: Campaign) -> dict[str, StepTiming]:
    """Each step's delay and on/off in `campaign`, by step id."""
    return {step.id: StepTiming(step.delay, step.enabled) for step in campaign.message_steps}


def apply_timing(campaign: Campaign, number: int, timing: Mapping[str, StepTiming]) -> Campaign:
    """`campaign` (any version: they share steps and content) with the delays and on/off of
    `timing` as version `number`. A step the timing does not name (added to the file since) keeps
    the file's delay and stays on."""
    steps = tuple(replace(step, delay=timing[step.id].delay, enabled=timing[step.id].enabled)
                  if step.id in timing else step for step in campaign.steps)
    return replace(campaign, steps=steps, version=number)


def _stored(timing: Mapping[str, StepTiming]) -> dict[str, object]:
    return {step_id: {"delay_seconds": int(t.delay.total_seconds()), "enabled": t.enabled}
            for step_id, t in timing.items()}


def _loaded(raw: Mapping[str, object]) -> dict[str, StepTiming]:
    loaded: dict[str, StepTiming] = {}
    for step_id, value in raw.items():
        if isinstance(value, dict):
            loaded[step_id] = StepTiming(timedelta(seconds=int(value.get("delay_seconds", 0))),
                                         bool(value.get("enabled", True)))
    return loaded


def check_timing(campaign: Campaign, delays: Mapping[str, str], enabled: set[str], note: str,
                 based_on: int | None) -> dict[str, StepTiming]:
    """The timing the form asks for, checked against `campaign` (the version in force); raises
    `TimingInvalid` with every problem at once: a delay that is not a delay (`30m`, `2h`, `3d`,
    `1d 12h`) or is negative, delays out of order (`ORDER_RULE`), every step off, no note, no
    change, or a version saved by someone else since the form was opened (`based_on`)."""
    problems: dict[str, str] = {}
    timing: dict[str, StepTiming] = {}
    for step in campaign.message_steps:
        field = delay_field(step.id)
        text = (delays.get(step.id) or "").strip()
        if text.startswith("-"):
            problems[field] = f"{step.id}: a delay cannot be negative"
            continue
        try:
            delay = parse_delay(text)
        except ValueError as exc:
            problems[field] = f"{step.id}: {exc}"
            continue
        timing[step.id] = StepTiming(delay, step.id in enabled)
    previous: tuple[str, timedelta] | None = None
    # A journey's order is its arrows, not its file (a help text reached on day 5 may be written
    # after the day-13 email with no delay): only a linear campaign's delays must rise.
    for step in campaign.message_steps if campaign.is_linear else ():
        if step.id not in timing:
            continue
        if previous is not None and timing[step.id].delay < previous[1]:
            problems.setdefault(delay_field(step.id),
                                f"{step.id}: {format_delay(timing[step.id].delay)} is before {previous[0]}'s "
                                f"{format_delay(previous[1])}; {ORDER_RULE}")
        previous = (step.id, timing[step.id].delay)
    if not any(step.id in enabled for step in campaign.message_steps):
        problems["enabled"] = "at least one step must stay on"
    if not note.strip():
        problems[NOTE_FIELD] = "say why the timing changes (the note is kept in the history)"
    elif len(note.strip()) > MAX_NOTE:
        problems[NOTE_FIELD] = f"keep the note under {MAX_NOTE} characters"
    if based_on is not None and based_on != campaign.version:
        problems["version"] = (f"version {campaign.version} was saved since you opened this page; "
                               "reload it and make your change again")
    if not problems and timing == timing_of(campaign):
        problems["version"] = "nothing changed: edit a delay or turn a step on or off"
    if problems:
        raise TimingInvalid(problems)
    return timing


def describe_changes(before: Campaign, after: Mapping[str, StepTiming]) -> list[str]:
    """What differs, in words: `checkin-sms: 4d → 5d`, `reminder-sms: turned off`."""
    changes = []
    for step in before.message_steps:
        new = after.get(step.id)
        if new is None:
            continue
        if new.delay != step.delay:
            changes.append(f"{step.id}: {format_delay(step.delay)} → {format_delay(new.delay)}")
        if new.enabled != step.enabled:
            changes.append(f"{step.id}: turned {'on' if new.enabled else 'off'}")
    return changes


def version_in_force(session: Session, campaign: Campaign) -> Campaign:
    """The version of `campaign` that a new enrollment follows: the latest saved, else the file.
    Read from the database (one indexed row), so a process whose cache is behind still enrolls
    people on the version in force."""
    row = session.scalars(select(CampaignVersion).where(CampaignVersion.campaign_id == campaign.id)
                          .order_by(CampaignVersion.number.desc()).limit(1)).first()
    if row is None:
        return campaign if campaign.version == 1 else apply_timing(campaign, 1, {})
    if row.number == campaign.version:
        return campaign
    return apply_timing(campaign, row.number, _loaded(row.timing))


def stored_version(campaign: Campaign) -> int | None:
    """What `enrollment.campaign_version` holds for an enrollment on `campaign`: NULL for the file."""
    return None if campaign.version == 1 else campaign.version


def save_version(session: Session, campaign: Campaign, delays: Mapping[str, str], enabled: set[str], note: str,
                 actor: str, now: datetime, *, based_on: int | None = None) -> Campaign:
    """Save a new timing version of `campaign` (the one rule for it: the staff UI calls it) and
    audit it; returns the new version. New enrollments follow it from the commit on; enrollments
    already running keep theirs. Raises `TimingInvalid` (see `check_timing`)."""
    current = version_in_force(session, campaign)
    timing = check_timing(current, delays, enabled, note, based_on)
    number = current.version + 1
    changes = describe_changes(current, timing)
    session.add(CampaignVersion(campaign_id=campaign.id, number=number, timing=_stored(timing), changes=changes,
                                note=note.strip(), author=actor, created_at=now))
    audit(session, actor, "campaign_timing_changed", now, campaign=campaign.id, version=number,
          changes=changes, note=note.strip())
    session.flush()
    return apply_timing(current, number, timing)


def version_row_timing(session: Session, campaign_id: str, number: int) -> dict[str, StepTiming] | None:
    """The delays and on/off saved as version `number` (2 and up) of the campaign, or None."""
    row = session.scalars(select(CampaignVersion).where(CampaignVersion.campaign_id == campaign_id,
                                                        CampaignVersion.number == number)).first()
    return None if row is None else _loaded(row.timing)


def history(session: Session, campaign_id: str) -> list[VersionRecord]:
    """Every saved version of the campaign, newest first (version 1, the file, is not a row)."""
    rows = session.scalars(select(CampaignVersion).where(CampaignVersion.campaign_id == campaign_id)
                           .order_by(CampaignVersion.number.desc()))
    return [VersionRecord(r.number, r.author, r.created_at, r.note, tuple(r.changes)) for r in rows]


def versions_stamp(session: Session) -> int:
    """Changes whenever a version is saved anywhere (the newest row's id): the runtime reloads then."""
    return int(session.scalar(select(func.max(CampaignVersion.id))) or 0)


class CampaignBook(dict[str, Campaign]):
    """Campaigns by id — each the version in force — and every version by (id, number).

    A dict, so the code that only needs "the campaign" (intake, enroll, simulate, the funnel) keeps
    taking `dict[str, Campaign]`; what schedules an enrollment's steps asks `campaign_for`."""

    def __init__(self, files: Mapping[str, Campaign], versions: Mapping[tuple[str, int], Campaign]) -> None:
        self.files = dict(files)
        self.versions: dict[tuple[str, int], Campaign] = dict(versions)
        in_force = dict(files)
        for (campaign_id, number), campaign in sorted(versions.items()):
            if campaign_id in in_force and number >= in_force[campaign_id].version:
                in_force[campaign_id] = campaign
        super().__init__(in_force)

    def version(self, campaign_id: str, number: int | None) -> Campaign | None:
        if not number or number == 1:
            return self.files.get(campaign_id)
        return self.versions.get((campaign_id, number))


def load_book(session: Session, files: Mapping[str, Campaign]) -> CampaignBook:
    """The campaign files with every saved version of theirs (versions of a campaign whose file
    went away are left out: nothing can be scheduled for it anyway)."""
    versions = {(row.campaign_id, row.number): apply_timing(files[row.campaign_id], row.number, _loaded(row.timing))
                for row in session.scalars(select(CampaignVersion)) if row.campaign_id in files}
    return CampaignBook(files, versions)


def campaign_for(campaigns: Mapping[str, Campaign], campaign_id: str, version: int | None,
                 session: Session | None = None) -> Campaign | None:
    """The campaign, as version `version` (NULL: 1), that schedules an enrollment's steps. Every
    place that schedules a step for an enrollment asks this, so in-flight enrollments keep their
    version's timing. A version saved after this process last loaded them is read with `session`
    when one is given (a web process that has not refreshed yet); without one (the dispatcher's hot
    path, which refreshes every pass) it is None, like a campaign whose file went away: the caller
    holds the enrollment and never guesses."""
    if isinstance(campaigns, CampaignBook):
        found = campaigns.version(campaign_id, version)
    else:  # a plain mapping (a test, `enroll`'s own) holds one version each
        found = campaigns.get(campaign_id)
        found = found if found is not None and found.version == (version or 1) else None
    if found is not None or session is None:
        return found
    base = campaigns.files.get(campaign_id) if isinstance(campaigns, CampaignBook) else campaigns.get(campaign_id)
    if base is None:
        return None
    if not version or version == 1:
        return base if base.version == 1 else None  # a plain mapping holding a later version: not the file
    row = session.scalars(select(CampaignVersion).where(CampaignVersion.campaign_id == campaign_id,
                                                        CampaignVersion.number == version)).first()
    return None if row is None else apply_timing(base, row.number, _loaded(row.timing))
