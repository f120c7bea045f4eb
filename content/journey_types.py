"""The parts of a journey, as data: the kinds of step, A/B variants, branch rules and their
conditions, the holdout, re-entry and the personas `drip simulate` walks through it.

A journey is the campaign's list of steps read as a graph: each step leads to the next one in the
list unless it says where to go (`next`, a branch's `goto`, a wait's `on_event` / `on_timeout`), and
an `exit` step ends it. Pure data; imports nothing of ours but the channel names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Final


class StepKind(StrEnum):
    MESSAGE = "message"  # send an email or a text
    BRANCH = "branch"  # go one way or another on who the person is or what they did
    WAIT = "wait"  # wait for something the person does (or only for time), up to a timeout
    EXIT = "exit"  # the journey ends here


# What a wait can wait for, and the timeline events that say it happened (`models.EventKind` values).
WAIT_EVENTS: Final[dict[str, tuple[str, ...]]] = {
    "clicked": ("clicked",),  # a booking link in one of our messages
    "opened": ("email_open",),
    "replied": ("sms_reply",),
    "booked": ("booked",),
}

INTERESTS: Final = ("depression", "bipolar", "unsure", "none")  # "none": the form did not ask or they left it

# Conditions a branch rule may test, and what each takes.
ATTRIBUTE_CONDITIONS: Final = ("interest", "language", "source", "email_consent", "sms_consent")
EVENT_CONDITIONS: Final = ("clicked", "opened", "replied", "clicked_not_booked", "received", "not_received")
CONDITIONS: Final = ATTRIBUTE_CONDITIONS + EVENT_CONDITIONS


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of an A/B test of a step: its own template (content) and/or delay (timing)."""

    id: str
    weight: int  # percent; a step's weights add up to 100
    template: str | None = None  # None: the step's own
    delay: timedelta | None = None  # None: the step's own


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of a branch rule. `values` for attributes (any of them matches; booleans as
    "true"/"false"), `duration` for `clicked_not_booked`, step ids for `received`/`not_received`."""

    name: str
    values: tuple[str, ...] = ()
    duration: timedelta | None = None

    def describe(self) -> str:
        if self.name == "clicked_not_booked":
            hours = int((self.duration or timedelta()).total_seconds() // 3600)
            return f"clicked but not booked within {hours}h"
        if self.name in ("received", "not_received"):
            return f"{self.name.replace('_', ' ')} {' or '.join(self.values)}"
        return f"{self.name}={'/'.join(self.values)}"


@dataclass(frozen=True, slots=True)
class Rule:
    """`if` every condition holds, `goto` that step."""

    conditions: tuple[Condition, ...]
    goto: str

    def describe(self) -> str:
        return " and ".join(condition.describe() for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class Holdout:
    """A share of enrollments (fixed at enrollment) that receives only `receives`, so booking lift
    can be measured against everyone else. 0 % is off."""

    percent: float = 0.0
    receives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reentry:
    """Whether a person whose journey ended (finished or exited) may start it again, and how long
    after it ended. Off: a campaign runs once per person (the behaviour before journeys)."""

    allowed: bool = False
    after: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class PersonaEvent:
    """Something a simulated person does, `at` after enrolling: clicked, opened, replied, booked,
    cancelled, resumed (staff resume a sequence paused by a reply)."""

    kind: str
    at: timedelta


PERSONA_EVENTS: Final = ("clicked", "opened", "replied", "booked", "cancelled", "resumed")


@dataclass(frozen=True, slots=True)
class Persona:
    """A sample person for `drip simulate --persona`: who they are and what they do, when."""

    name: str
    interest: str = "none"
    language: str = "en"
    source: str = "web_form"
    email_consent: bool = True
    sms_consent: bool = True
    holdout: bool = False
    events: tuple[PersonaEvent, ...] = field(default_factory=tuple)
    description: str = ""
