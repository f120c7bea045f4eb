"""The campaign as loaded: its send window, its steps and the journey around them, as frozen data.

Built by the parser (`content.campaign`); read by everything that schedules, renders, walks or draws
a campaign. Kept apart from the parser so the journey's own modules (`content.journey`,
`content.journey_check`) can read it without importing the parser that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta

from patient_drip.content.journey_types import Holdout, Persona, Reentry, Rule, StepKind, Variant
from patient_drip.models import Channel

# What may end a journey (`exit_on`): booked / unsubscribed as before; staff_stop (staff end it) always
# does and may be listed to say so; crisis ends it instead of pausing it.
EXIT_CONDITIONS = ("booked", "unsubscribed", "staff_stop", "crisis")


@dataclass(frozen=True, slots=True)
class SendWindow:
    start: time = time(9, 0)
    end: time = time(20, 0)
    skip_weekends: bool = False
    email: bool = True  # SMS always respects the window; email only when this is true
    spread_minutes: int = 20

    def applies_to(self, channel: str) -> bool:
        return channel == Channel.SMS or self.email


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a journey. A message step has a channel and a template; a branch its rules, a
    wait what it waits for and its timeout, an exit its reason (`content.journey_types`)."""

    id: str
    delay: timedelta  # the earliest time after enrolling it happens (0: as soon as it is reached)
    channel: Channel | None  # None for a branch, wait or exit
    template: str  # path relative to the templates folder ("" but for a message)
    # Off in a timing version (`content.campaign_versions`): skipped, never sent. A file's steps are on.
    enabled: bool = True
    kind: StepKind = StepKind.MESSAGE
    next: str | None = None  # where a message step leads (None: the next step in the file)
    variants: tuple[Variant, ...] = ()
    rules: tuple[Rule, ...] = ()
    otherwise: str | None = None  # a branch when no rule holds (None: the next step in the file)
    wait_for: str | None = None  # clicked, opened, replied, booked; None: a plain pause
    timeout: timedelta = timedelta(0)
    on_event: str | None = None
    on_timeout: str | None = None
    exit_reason: str = ""

    @property
    def is_message(self) -> bool:
        return self.kind == StepKind.MESSAGE


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    description: str
    steps: tuple[Step, ...]
    send_window: SendWindow = field(default_factory=SendWindow)
    frequency_cap_per_day: int = 2
    email_requires_consent: bool = True
    exit_on: tuple[str, ...] = ("booked", "unsubscribed")
    source_file: str = ""
    # The timing version these steps' delays and on/off come from; 1 is the file as written.
    version: int = 1
    # The journey (issue 13); the defaults are a linear campaign's behaviour before journeys.
    languages: tuple[str, ...] = ("en",)
    holdout: Holdout = field(default_factory=Holdout)
    reentry: Reentry = field(default_factory=Reentry)
    on_cancel: str | None = None  # where a cancelled booking re-enters the journey (the rebook path)
    pause_on_reply: bool = False  # a question by text pauses the journey for staff to answer
    personas: dict[str, Persona] = field(default_factory=dict)

    def step_index(self, step_id: str) -> int:
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        raise KeyError(step_id)

    @property
    def message_steps(self) -> tuple[Step, ...]:
        """The steps that send something, in file order (what reports and previews list)."""
        return tuple(step for step in self.steps if step.is_message)

    @property
    def is_linear(self) -> bool:
        """Only messages, each leading to the next in the file: a campaign as before journeys."""
        return all(step.is_message and step.next is None for step in self.steps)
