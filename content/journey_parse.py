"""Reading a campaign file's journey parts: each step (a message, a branch, a wait or an exit) and
the journey-wide fields (languages, holdout, re-entry, the cancellation path, pause on reply,
personas). Every error names the file, the step and the field (`CampaignError`).

What refers to what (a `goto` to a step that exists, reachability, cycles, weights adding up, every
language's template) is checked on the whole journey afterwards by `content.journey_check`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from patient_drip.content.campaign_fields import (
    ID_PATTERN,
    CampaignError,
    delay_field,
    expect,
    parse_delay,
    shown,
    step_ref,
    text_field,
)
from patient_drip.content.journey_types import (
    ATTRIBUTE_CONDITIONS,
    CONDITIONS,
    INTERESTS,
    PERSONA_EVENTS,
    WAIT_EVENTS,
    Condition,
    Holdout,
    Persona,
    PersonaEvent,
    Reentry,
    Rule,
    StepKind,
    Variant,
)
from patient_drip.content.languages import LANGUAGES
from patient_drip.models import Channel

MAX_TEMPLATE_PATH = 200
# English templates under email/ or sms/; a language's own under its folder (es/email/…), which the
# campaign never names: it is found from the English path (`content.languages.template_in_language`).
_TEMPLATE_PATH = re.compile(r"(?:email|sms)/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
MESSAGE_FIELDS = frozenset({"id", "delay", "channel", "template", "next", "variants"})
BRANCH_FIELDS = frozenset({"id", "delay", "branch", "otherwise"})
WAIT_FIELDS = frozenset({"id", "delay", "wait", "on_event", "on_timeout"})
EXIT_FIELDS = frozenset({"id", "delay", "exit"})


@dataclass(frozen=True, slots=True)
class StepParts:
    """What one step entry says, before `content.campaign.Step` is built from it."""

    kind: StepKind
    delay: timedelta
    channel: Channel | None = None
    template: str = ""
    next: str | None = None
    variants: tuple[Variant, ...] = ()
    rules: tuple[Rule, ...] = ()
    otherwise: str | None = None
    wait_for: str | None = None
    timeout: timedelta = timedelta(0)
    on_event: str | None = None
    on_timeout: str | None = None
    exit_reason: str = ""


def step_kind(raw: dict[str, Any]) -> StepKind:
    if "branch" in raw:
        return StepKind.BRANCH
    if "wait" in raw:
        return StepKind.WAIT
    if "exit" in raw:
        return StepKind.EXIT
    return StepKind.MESSAGE


def parse_step(raw: dict[str, Any], file: str, path: str) -> StepParts:
    """One step entry (already known to be a mapping with a valid `id`)."""
    kind = step_kind(raw)
    allowed = {StepKind.MESSAGE: MESSAGE_FIELDS, StepKind.BRANCH: BRANCH_FIELDS,
               StepKind.WAIT: WAIT_FIELDS, StepKind.EXIT: EXIT_FIELDS}[kind]
    extra = set(map(str, raw)) - allowed
    if extra:
        raise CampaignError(file, f"{path}.{sorted(extra)[0]}",
                            f"unknown field for a {kind} step; it has {', '.join(sorted(allowed))}")
    delay = delay_field(raw.get("delay", "0m"), file, f"{path}.delay")
    if kind == StepKind.BRANCH:
        return _branch(raw, file, path, delay)
    if kind == StepKind.WAIT:
        return _wait(raw, file, path, delay)
    if kind == StepKind.EXIT:
        reason = text_field(raw.get("exit"), file, f"{path}.exit").strip().lower()
        if reason in ("true", "yes"):
            reason = "completed"
        if not ID_PATTERN.match(reason):
            raise CampaignError(file, f"{path}.exit", "say why it ends in a word or two, e.g. exit: completed")
        return StepParts(StepKind.EXIT, delay, exit_reason=reason)
    return _message(raw, file, path, delay)


def template_path(value: Any, channel: Channel, file: str, path: str) -> str:
    template = text_field(value, file, path).strip()
    expected_prefix = "email/" if channel == Channel.EMAIL else "sms/"
    if not template.startswith(expected_prefix):
        raise CampaignError(file, path, f"an {channel} step's template must be under {expected_prefix}")
    if len(template) > MAX_TEMPLATE_PATH or not _TEMPLATE_PATH.fullmatch(template) or ".." in template.split("/"):
        raise CampaignError(file, path, f"{shown(template)} is not a template name such as {expected_prefix}01-welcome.html")
    return template


def _message(raw: dict[str, Any], file: str, path: str, delay: timedelta) -> StepParts:
    channel_name = text_field(raw.get("channel"), file, f"{path}.channel").strip().lower()
    if channel_name not in (Channel.EMAIL, Channel.SMS):
        raise CampaignError(file, f"{path}.channel", f"{shown(raw.get('channel'))} is not a channel; use email or sms")
    channel = Channel(channel_name)
    template = template_path(raw.get("template"), channel, file, f"{path}.template")
    following = step_ref(raw["next"], file, f"{path}.next") if raw.get("next") is not None else None
    variants: list[Variant] = []
    if "variants" in raw:
        listed = expect(raw["variants"], list, file, f"{path}.variants", "a list of variants")
        if len(listed) < 2:
            raise CampaignError(file, f"{path}.variants", "an A/B test needs at least two variants")
        seen: set[str] = set()
        for number, item in enumerate(listed):
            where = f"{path}.variants[{number}]"
            expect(item, dict, file, where, "a mapping with id, weight and a template or a delay")
            extra = set(map(str, item)) - {"id", "weight", "template", "delay"}
            if extra:
                raise CampaignError(file, f"{where}.{sorted(extra)[0]}", "unknown field; a variant has id, weight, template, delay")
            variant_id = text_field(item.get("id"), file, f"{where}.id").strip()
            if not ID_PATTERN.match(variant_id) or len(variant_id) > 40:
                raise CampaignError(file, f"{where}.id", "required: a short name in lowercase letters, digits and dashes")
            if variant_id in seen:
                raise CampaignError(file, f"{where}.id", f"duplicate variant {variant_id!r}")
            seen.add(variant_id)
            weight = item.get("weight")
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
                raise CampaignError(file, f"{where}.weight", "must be a whole percent from 0 to 100")
            variant_template = (template_path(item["template"], channel, file, f"{where}.template")
                                if item.get("template") is not None else None)
            variant_delay = (delay_field(item["delay"], file, f"{where}.delay")
                             if item.get("delay") is not None else None)
            variants.append(Variant(variant_id, weight, variant_template, variant_delay))
    return StepParts(StepKind.MESSAGE, delay, channel=channel, template=template, next=following,
                     variants=tuple(variants))


def _branch(raw: dict[str, Any], file: str, path: str, delay: timedelta) -> StepParts:
    listed = expect(raw["branch"], list, file, f"{path}.branch", "a list of rules (if: …, goto: …)")
    if not listed:
        raise CampaignError(file, f"{path}.branch", "a branch needs at least one rule")
    rules: list[Rule] = []
    for number, item in enumerate(listed):
        where = f"{path}.branch[{number}]"
        expect(item, dict, file, where, "a mapping with if and goto")
        extra = set(map(str, item)) - {"if", "goto"}
        if extra:
            raise CampaignError(file, f"{where}.{sorted(extra)[0]}", "unknown field; a rule has if and goto")
        tests = expect(item.get("if"), dict, file, f"{where}.if", "a mapping of conditions")
        if not tests:
            raise CampaignError(file, f"{where}.if", "a rule needs at least one condition")
        conditions = tuple(_condition(str(name), value, file, f"{where}.if.{name}") for name, value in tests.items())
        rules.append(Rule(conditions, step_ref(item.get("goto"), file, f"{where}.goto")))
    otherwise = step_ref(raw["otherwise"], file, f"{path}.otherwise") if raw.get("otherwise") is not None else None
    return StepParts(StepKind.BRANCH, delay, rules=tuple(rules), otherwise=otherwise)


def _condition(name: str, value: Any, file: str, path: str) -> Condition:
    if name not in CONDITIONS:
        raise CampaignError(file, path, f"a branch on unknown attribute {shown(name)}; known: {', '.join(CONDITIONS)}")
    if name == "clicked_not_booked":
        return Condition(name, duration=delay_field(value, file, path))
    if name in ("received", "not_received"):
        refs = value if isinstance(value, list) else [value]
        return Condition(name, values=tuple(step_ref(ref, file, path) for ref in refs))
    if name in ("email_consent", "sms_consent", "clicked", "opened", "replied"):
        if not isinstance(value, bool):
            raise CampaignError(file, path, "must be true or false")
        return Condition(name, values=("true" if value else "false",))
    values = value if isinstance(value, list) else [value]
    words = tuple(text_field(item, file, path).strip().lower() for item in values)
    allowed = {"interest": INTERESTS, "language": LANGUAGES}.get(name)
    for word in words:
        if allowed is not None and word not in allowed:
            raise CampaignError(file, path, f"{shown(word)} is not a {name}; choose from {', '.join(allowed)}")
        if not word:
            raise CampaignError(file, path, "must name a value")
    assert name in ATTRIBUTE_CONDITIONS
    return Condition(name, values=words)


def _wait(raw: dict[str, Any], file: str, path: str, delay: timedelta) -> StepParts:
    spec = expect(raw["wait"], dict, file, f"{path}.wait", "a mapping with for (optional) and timeout")
    extra = set(map(str, spec)) - {"for", "timeout"}
    if extra:
        raise CampaignError(file, f"{path}.wait.{sorted(extra)[0]}", "unknown field; a wait has for and timeout")
    event = None
    if spec.get("for") is not None:
        event = text_field(spec["for"], file, f"{path}.wait.for").strip().lower()
        if event not in WAIT_EVENTS:
            raise CampaignError(file, f"{path}.wait.for", f"{shown(event)} cannot be waited for; choose from {', '.join(WAIT_EVENTS)}")
    if "timeout" not in spec:
        raise CampaignError(file, f"{path}.wait.timeout", "required: how long to wait at most, e.g. 2d")
    timeout = delay_field(spec["timeout"], file, f"{path}.wait.timeout")
    if timeout <= timedelta(0):
        raise CampaignError(file, f"{path}.wait.timeout", "must be longer than 0")
    on_event = step_ref(raw["on_event"], file, f"{path}.on_event") if raw.get("on_event") is not None else None
    if on_event is not None and event is None:
        raise CampaignError(file, f"{path}.on_event", "a wait without `for` has no event to go on")
    on_timeout = step_ref(raw["on_timeout"], file, f"{path}.on_timeout") if raw.get("on_timeout") is not None else None
    return StepParts(StepKind.WAIT, delay, wait_for=event, timeout=timeout, on_event=on_event, on_timeout=on_timeout)


# -- journey-wide fields ----------------------------------------------------------------------------


def parse_languages(value: Any, file: str) -> tuple[str, ...]:
    listed = expect(value, list, file, "languages", "a list such as [en, es]")
    languages = tuple(text_field(item, file, "languages").strip().lower() for item in listed)
    for language in languages:
        if language not in LANGUAGES:
            raise CampaignError(file, "languages", f"{shown(language)} is not a language we write in; choose from {', '.join(LANGUAGES)}")
    if "en" not in languages:
        raise CampaignError(file, "languages", "must include en (every message is approved in English first)")
    return tuple(dict.fromkeys(languages))


def parse_holdout(value: Any, file: str) -> Holdout:
    spec = expect(value, dict, file, "holdout", "a mapping with percent and receives")
    extra = set(map(str, spec)) - {"percent", "receives"}
    if extra:
        raise CampaignError(file, f"holdout.{sorted(extra)[0]}", "unknown field; the holdout has percent and receives")
    percent = spec.get("percent", 0)
    if not isinstance(percent, (int, float)) or isinstance(percent, bool) or not 0 <= percent <= 50:
        raise CampaignError(file, "holdout.percent", "must be a percent from 0 to 50 (we suggest 10)")
    receives = spec.get("receives", [])
    listed = receives if isinstance(receives, list) else [receives]
    return Holdout(float(percent), tuple(step_ref(ref, file, "holdout.receives") for ref in listed))


def parse_reentry(value: Any, file: str) -> Reentry:
    spec = expect(value, dict, file, "reentry", "a mapping with allowed and after")
    extra = set(map(str, spec)) - {"allowed", "after"}
    if extra:
        raise CampaignError(file, f"reentry.{sorted(extra)[0]}", "unknown field; re-entry has allowed and after")
    allowed = spec.get("allowed", False)
    if not isinstance(allowed, bool):
        raise CampaignError(file, "reentry.allowed", "must be true or false")
    return Reentry(allowed, delay_field(spec.get("after", "0m"), file, "reentry.after"))


_PERSONA_EVENT = re.compile(r"\s*([a-z]+)\s*@\s*([0-9dhms ]+?)\s*")


def parse_persona_events(text: str, where: str = "--events") -> tuple[PersonaEvent, ...]:
    """`clicked@1d, replied@3d` → events in time order. Raises ValueError naming the bad part."""
    events: list[PersonaEvent] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        match = _PERSONA_EVENT.fullmatch(part)
        if match is None:
            raise ValueError(f"{where}: {part!r} is not an event; write e.g. clicked@1d or replied@3d 4h")
        kind, when = match[1], match[2]
        if kind not in PERSONA_EVENTS:
            raise ValueError(f"{where}: {kind!r} is not an event; choose from {', '.join(PERSONA_EVENTS)}")
        events.append(PersonaEvent(kind, parse_delay(when)))
    return tuple(sorted(events, key=lambda event: event.at))


def parse_personas(value: Any, file: str) -> dict[str, Persona]:
    spec = expect(value, dict, file, "personas", "a mapping of persona names to who they are and what they do")
    personas: dict[str, Persona] = {}
    for raw_name, raw in spec.items():
        name = str(raw_name)
        where = f"personas.{name}"
        if not ID_PATTERN.match(name):
            raise CampaignError(file, where, "a persona's name is lowercase letters, digits and dashes")
        raw = expect(raw if raw is not None else {}, dict, file, where, "a mapping")
        extra = set(map(str, raw)) - {"interest", "language", "source", "email_consent", "sms_consent",
                                      "holdout", "events", "description"}
        if extra:
            raise CampaignError(file, f"{where}.{sorted(extra)[0]}", "unknown field")
        interest = text_field(raw.get("interest", "none"), file, f"{where}.interest").strip().lower()
        if interest not in INTERESTS:
            raise CampaignError(file, f"{where}.interest", f"choose from {', '.join(INTERESTS)}")
        language = text_field(raw.get("language", "en"), file, f"{where}.language").strip().lower()
        if language not in LANGUAGES:
            raise CampaignError(file, f"{where}.language", f"choose from {', '.join(LANGUAGES)}")
        flags = {}
        for flag, default in (("email_consent", True), ("sms_consent", True), ("holdout", False)):
            flags[flag] = raw.get(flag, default)
            if not isinstance(flags[flag], bool):
                raise CampaignError(file, f"{where}.{flag}", "must be true or false")
        try:
            events = parse_persona_events(text_field(raw.get("events", ""), file, f"{where}.events"), f"{where}.events")
        except ValueError as exc:
            raise CampaignError(file, f"{where}.events", str(exc).split(": ", 1)[-1]) from None
        personas[name] = Persona(name, interest, language, text_field(raw.get("source", "web_form"), file, where),
                                 flags["email_consent"], flags["sms_consent"], flags["holdout"], events,
                                 text_field(raw.get("description", ""), file, f"{where}.description"))
    return personas
