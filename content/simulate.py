"""`drip simulate`: what a sample person would receive, in order, fully rendered — no database.

The person is a persona (`content.journey_types.Persona`: who they are and what they do, when), and
the journey is walked with the same rules the dispatcher uses (`content.journey`: branches, waits,
A/B variants, the holdout), on a virtual clock. Offsets are the planned times after the request;
the send window and the daily cap, which only ever move a message later, are applied by the
dispatcher, not here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.context import message_context, render_sms_fitted
from patient_drip.content.first_sms import sms_frequency
from patient_drip.content.journey import (
    Facts,
    assign_variant,
    choose,
    holdout_receives,
    message_language,
    next_index,
    step_delay,
    template_for,
    wait_state,
)
from patient_drip.content.journey_parse import parse_persona_events
from patient_drip.content.journey_types import Persona, PersonaEvent, StepKind
from patient_drip.content.rendering import Renderer, sms_info
from patient_drip.content.template_store import live_files
from patient_drip.content.tokens import LinkTokens
from patient_drip.models import Channel
from patient_drip.settings import Settings

SAMPLE_FIRST_NAME = "Alex"
PREVIEW_KEY = "simulation-preview-key"  # preview links are not valid on the live service
SAMPLE_ENROLLMENT_ID = 1  # the A/B variants shown are this sample enrollment's
DEFAULT_PERSONA = Persona("sample", description="a sample person who does nothing but read")
_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # any instant: offsets are what is shown
MAX_STEPS = 500


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    step: str
    channel: str
    offset_seconds: int
    subject: str | None
    text: str
    html: str | None
    name_dropped: bool = False  # the SMS was too long with the name: sent nameless (not in the JSON)
    branch: str | None = None  # the branch and wait decisions since the message before, in words
    variant: str | None = None  # the A/B variant sent
    language: str = "en"


@dataclass(frozen=True, slots=True)
class JourneyNote:
    """Something that happened on the way that is not a message (paused, booked, exited, holdout)."""

    offset_seconds: int
    text: str
    last: bool = False  # an ending: listed after the messages of the same moment


@dataclass(slots=True)
class Simulation:
    persona: Persona
    messages: list[SimulatedMessage] = field(default_factory=list)
    notes: list[JourneyNote] = field(default_factory=list)


def simulate_campaign(settings: Settings, campaign: Campaign, renderer: Renderer | None = None,
                      first_name: str = SAMPLE_FIRST_NAME) -> list[SimulatedMessage]:
    """Every message the default persona receives, in send order (see `simulate_journey`)."""
    return simulate_journey(settings, campaign, DEFAULT_PERSONA, renderer, first_name).messages


def simulate_journey(settings: Settings, campaign: Campaign, persona: Persona, renderer: Renderer | None = None,
                     first_name: str = SAMPLE_FIRST_NAME) -> Simulation:
    """Walk `campaign` as `persona` would, rendering each message for a person named `first_name`
    (ids are illustrative). The name goes through the same rules as a real send: the one message
    context cleans it, and an SMS that would exceed two segments with it is rendered nameless."""
    # The files as they may go live: without a clinician-pending passage (see template_store.live_part).
    renderer = renderer or Renderer(settings.templates_dir, overrides=live_files(settings.templates_dir))
    walk = _Walk(settings, campaign, persona, renderer, first_name)
    walk.run()
    return walk.result


class _Walk:
    """One persona's way through a journey on a virtual clock (`at`: time since the request)."""

    def __init__(self, settings: Settings, campaign: Campaign, persona: Persona, renderer: Renderer,
                 first_name: str) -> None:
        self.settings, self.campaign, self.persona, self.renderer = settings, campaign, persona, renderer
        self.first_name = first_name
        self.tokens = LinkTokens(PREVIEW_KEY)
        self.result = Simulation(persona)
        self.language = message_language(campaign, persona.language)
        self.pending = list(persona.events)  # what the person does, in time order, not yet applied
        self.done: list[PersonaEvent] = []
        self.received: set[str] = set()
        self.path: list[str] = []
        self.at = timedelta(0)
        self.entered = timedelta(0)
        self.index: int | None = 0

    def note(self, text: str, at: timedelta | None = None, *, last: bool = False) -> None:
        self.result.notes.append(JourneyNote(int((self.at if at is None else at).total_seconds()), text, last))

    def facts(self, now: timedelta) -> Facts:
        events: dict[str, tuple[datetime, ...]] = {}
        for event in self.done:
            if event.at <= now and event.kind in ("clicked", "opened", "replied", "booked"):
                events[event.kind] = (*events.get(event.kind, ()), _EPOCH + event.at)
        persona = self.persona
        return Facts(interest=persona.interest, language=persona.language, source=persona.source,
                     email_consent=persona.email_consent, sms_consent=persona.sms_consent, events=events,
                     received=frozenset(self.received))

    def run(self) -> None:
        if self.persona.holdout:
            self.note("in the holdout: receives only " + ", ".join(sorted(holdout_receives(self.campaign))))
        for _ in range(MAX_STEPS):
            if self.index is None or self.index >= len(self.campaign.steps):
                self.note("journey finished", last=True)
                return
            step = self.campaign.steps[self.index]
            due = max(self.at, step_delay(step, assign_variant(SAMPLE_ENROLLMENT_ID, step)))
            if step.kind == StepKind.WAIT:
                due = self._wait_end(step, due)
            before = (self.index, self.at)
            if not self._live_until(due):
                return
            if (self.index, self.at) != before:
                continue  # paused and resumed, or sent down the rebook path: look again from there
            self.at = due
            if not self._act(step):
                return
        self.note(f"stopped after {MAX_STEPS} steps", last=True)

    def _wait_end(self, step: Step, due: timedelta) -> timedelta:
        """When wait `step` ends: the first awaited event after it was reached, else its timeout."""
        deadline = self.entered + step.timeout
        if step.wait_for is not None:
            for event in [*self.done, *self.pending]:
                if event.kind == step.wait_for and self.entered <= event.at <= deadline:
                    return max(due, event.at)
        return max(due, deadline)

    def _live_until(self, due: timedelta) -> bool:
        """Apply what the person does before `due`; False when the journey stops for good."""
        while self.pending and self.pending[0].at <= due:
            event = self.pending.pop(0)
            self.done.append(event)
            stop = self._on_event(event)
            if stop is not None:
                return stop
        return True

    def _on_event(self, event: PersonaEvent) -> bool | None:
        """React to one event; None: carry on; True/False: resume at once / stop for good."""
        kind, campaign = event.kind, self.campaign
        if kind == "booked" and "booked" in campaign.exit_on:
            self.note("booked: the journey ends", event.at)
            cancel = next((e for e in self.pending if e.kind == "cancelled"), None)
            if cancel is None:
                return False
            self._drop_until(cancel)
            if campaign.on_cancel is None:
                self.note("booking cancelled: the journey continues where it was", cancel.at)
                self.at = max(self.at, cancel.at)
                return True
            self.note("booking cancelled: the rebook path starts", cancel.at)
            self._jump(campaign.step_index(campaign.on_cancel), cancel.at, "on_cancel")
            return True
        step = campaign.steps[self.index or 0]
        waiting_for_reply = step.kind == StepKind.WAIT and step.wait_for == "replied"
        if kind == "replied" and campaign.pause_on_reply and not waiting_for_reply:
            self.note("replied with a question: the journey pauses; a staff task opens", event.at)
            resume = next((e for e in self.pending if e.kind == "resumed"), None)
            if resume is None:
                self.note("still paused: staff have not resumed it", event.at, last=True)
                return False
            self._drop_until(resume)
            self.note("staff resumed the journey", resume.at)
            self.at = max(self.at, resume.at)
            return True
        return None

    def _drop_until(self, event: PersonaEvent) -> None:
        while self.pending and self.pending[0] is not event:
            self.done.append(self.pending.pop(0))
        if self.pending:
            self.done.append(self.pending.pop(0))

    def _jump(self, index: int | None, at: timedelta, why: str) -> None:
        if why:
            self.path.append(why)
        self.index, self.at, self.entered = index, max(self.at, at), max(self.at, at)

    def _act(self, step: Step) -> bool:
        """Do `step` (the one at `self.index`) at `self.at`; False when the journey ends here."""
        campaign, index = self.campaign, self.index or 0
        now = _EPOCH + self.at
        if step.kind == StepKind.EXIT:
            self.note(f"exit: {step.exit_reason}", last=True)
            return False
        if step.kind == StepKind.BRANCH:
            choice = choose(campaign, index, self.facts(self.at), now)
            self._jump(choice.target, self.at, choice.label)
            return True
        if step.kind == StepKind.WAIT:
            state = wait_state(campaign, index, self.facts(self.at), _EPOCH + self.entered, now)
            self._jump(state.target, self.at, state.label)
            return True
        if self.persona.holdout and step.id not in holdout_receives(campaign):
            self.note("holdout: the rest of the journey is not sent", last=True)
            return False
        channel_ok = step.enabled and (self.persona.email_consent if step.channel == Channel.EMAIL
                                       else self.persona.sms_consent)
        if channel_ok:
            self._send(step)
        else:
            self.path.append(f"{step.id}: skipped ({'turned off' if not step.enabled else f'no {step.channel} consent'})")
        self._jump(next_index(campaign, index), self.at, "")
        return True

    def _send(self, step: Step) -> None:
        campaign = self.campaign
        variant = assign_variant(SAMPLE_ENROLLMENT_ID, step)
        template = template_for(step, variant, self.language)
        number = len(self.result.messages) + 1
        context = message_context(self.settings, self.tokens, first_name=self.first_name, contact_id=1,
                                  message_id=number, campaign_name=campaign.name, step_id=step.id,
                                  channel=step.channel, sms_frequency=sms_frequency(campaign, self.language),
                                  language=self.language)
        branch = "; ".join(self.path) or None
        self.path = []
        offset = int(self.at.total_seconds())
        common = {"branch": branch, "variant": variant.id if variant else None, "language": self.language}
        if step.channel == Channel.EMAIL:
            email = self.renderer.render_email(template, context)
            self.result.messages.append(SimulatedMessage(step.id, "email", offset, email.subject, email.text,
                                                         email.html, **common))
        else:
            fitted = render_sms_fitted(self.renderer, template, context)
            self.result.messages.append(SimulatedMessage(step.id, "sms", offset, None, fitted.body, None,
                                                         fitted.name_dropped, **common))
        self.received.add(step.id)


def format_offset(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"day {days} +{hours:02d}:{rest // 60:02d}"


def as_json(messages: list[SimulatedMessage]) -> str:
    """The SPEC's JSON array: step, channel, offset_seconds, subject, text, html per message, and the
    journey's `branch` (the decisions that led to it, or null) and A/B `variant` (or null)."""
    fields = ("step", "channel", "offset_seconds", "subject", "text", "html", "branch", "variant")
    return json.dumps([{key: asdict(message)[key] for key in fields} for message in messages], indent=2,
                      ensure_ascii=False)


def as_text(campaign: Campaign, messages: list[SimulatedMessage], notes: list[JourneyNote] | None = None,
            persona: Persona | None = None) -> str:
    window = campaign.send_window
    lines = [
        f"Campaign {campaign.id}: {campaign.name}"
        f"{f' (timing version {campaign.version})' if campaign.version != 1 else ''}",
    ]
    if persona is not None and persona is not DEFAULT_PERSONA:
        who = [f"interest {persona.interest}", f"language {persona.language}"]
        if not persona.sms_consent:
            who.append("no text consent")
        if persona.holdout:
            who.append("holdout")
        events = ", ".join(f"{event.kind}@{format_offset(int(event.at.total_seconds()))}" for event in persona.events)
        lines.append(f"Persona {persona.name}: {persona.description or ', '.join(who)}"
                     f" ({'; '.join(who)}{'; does: ' + events if events else ''})")
    lines += [
        f"{len(messages)} messages; send window {window.start:%H:%M}-{window.end:%H:%M} in the contact's time zone"
        f" (SMS always{', email too' if window.email else ''}); at most {campaign.frequency_cap_per_day} a day.",
        "",
    ]
    timeline: list[tuple[int, int, object]] = [(m.offset_seconds, 1, m) for m in messages]
    timeline += [(n.offset_seconds, 2 if n.last else 0, n) for n in notes or []]
    number = 0
    for _offset, _order, item in sorted(timeline, key=lambda entry: (entry[0], entry[1])):
        if isinstance(item, JourneyNote):
            lines.append(f"  ~ {format_offset(item.offset_seconds)}  {item.text}")
            lines.append("")
            continue
        assert isinstance(item, SimulatedMessage)
        number += 1
        header = (f"[{number}] {format_offset(item.offset_seconds)}  {item.channel.upper()}  step {item.step}"
                  f"{f'  variant {item.variant}' if item.variant else ''}"
                  f"{f'  ({item.language})' if item.language != 'en' else ''}")
        lines.append(header)
        lines.append("-" * len(header))
        if item.branch:
            lines.append(f"(path: {item.branch})")
        if item.channel == "email":
            lines.append(f"Subject: {item.subject}")
            lines.append("")
            lines.append(item.text.rstrip())
        else:
            info = sms_info(item.text)
            lines.append(item.text)
            lines.append(f"({info.characters} characters, {info.encoding}, {info.segments} segment"
                         f"{'s' if info.segments != 1 else ''}"
                         f"{'; sent without the name, which made it too long' if item.name_dropped else ''})")
        lines.append("")
    return "\n".join(lines)


class UnknownPersona(ValueError):
    """A persona or persona option `drip simulate` cannot use (the message says which and why)."""


def persona_for(campaign: Campaign, name: str | None, *, events: str | None = None, interest: str | None = None,
                language: str | None = None, no_sms: bool = False, holdout: bool = False,
                default: Persona = DEFAULT_PERSONA) -> Persona:
    """The persona `drip simulate` walks: the campaign's `name` (or the default sample person), with
    the options given inline replacing its fields. Raises `UnknownPersona`."""
    if name is not None and name not in campaign.personas:
        known = ", ".join(sorted(campaign.personas)) or "none (add `personas:` to the campaign file)"
        raise UnknownPersona(f"unknown persona {name!r} for {campaign.id}; known personas: {known}")
    base = campaign.personas[name] if name is not None else default
    changes: dict[str, object] = {}
    if events is not None:
        try:
            changes["events"] = parse_persona_events(events)
        except ValueError as exc:
            raise UnknownPersona(str(exc)) from None
    if interest is not None:
        changes["interest"] = interest
    if language is not None:
        changes["language"] = language
    if no_sms:
        changes["sms_consent"] = False
    if holdout:
        changes["holdout"] = True
    if changes and name is None:
        changes["name"] = "inline"
        changes["description"] = ""
    return replace(base, **changes) if changes else base
