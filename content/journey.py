"""How a journey moves, as pure functions the dispatcher, `drip simulate`, the checks and the
diagram all share: where each step leads, which branch rule holds for a person, whether a wait is
over, which A/B variant an enrollment gets and whether it is in the holdout.

What a person did comes in as `Facts` (the dispatcher reads them from the timeline, the simulator
from a persona), so the same rules decide in both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from patient_drip.content.campaign_model import Campaign, Step
from patient_drip.content.journey_types import Condition, StepKind, Variant
from patient_drip.content.languages import DEFAULT_LANGUAGE, template_in_language


EdgeKind = Literal["next", "rule", "otherwise", "event", "timeout"]


@dataclass(frozen=True, slots=True)
class Edge:
    """A way out of a step: to step `target` (an index; None: the journey ends), what takes it
    (`kind`: a wait's `timeout` is the one that lets time pass) and its label on the diagram ("" for
    a plain next)."""

    target: int | None
    label: str = ""
    kind: EdgeKind = "next"


def _index(campaign: Campaign, step_id: str | None, default: int | None) -> int | None:
    if step_id is None:
        return default
    return campaign.step_index(step_id)


def following(campaign: Campaign, index: int) -> int | None:
    """The step after `index` in the file, or None after the last."""
    return index + 1 if index + 1 < len(campaign.steps) else None


def edges(campaign: Campaign, index: int) -> list[Edge]:
    """Every way out of step `index` (an exit has none)."""
    step = campaign.steps[index]
    after = following(campaign, index)
    if step.kind == StepKind.MESSAGE:
        return [Edge(_index(campaign, step.next, after))]
    if step.kind == StepKind.BRANCH:
        out = [Edge(campaign.step_index(rule.goto), rule.describe(), "rule") for rule in step.rules]
        return [*out, Edge(_index(campaign, step.otherwise, after), "otherwise", "otherwise")]
    if step.kind == StepKind.WAIT:
        timeout = _index(campaign, step.on_timeout, after)
        if step.wait_for is None:
            return [Edge(timeout, f"after {describe_duration(step.timeout)}", "timeout")]
        return [Edge(_index(campaign, step.on_event, after), step.wait_for, "event"),
                Edge(timeout, f"not {step.wait_for} in {describe_duration(step.timeout)}", "timeout")]
    return []


def next_index(campaign: Campaign, index: int) -> int | None:
    """Where a message step leads once it is done (sent, skipped or held)."""
    step = campaign.steps[index]
    return _index(campaign, step.next, following(campaign, index))


# What is derived from a loaded campaign is remembered by campaign object (a loaded campaign never
# changes; a new timing version is a new object): the dispatcher asks on every send.
_MEMO: dict[tuple[int, Hashable], tuple[Campaign, object]] = {}
_T = TypeVar("_T")


def _per_campaign(campaign: Campaign, key: Hashable, compute: Callable[[], _T]) -> _T:
    cached = _MEMO.get((id(campaign), key))
    if cached is not None and cached[0] is campaign:
        return cached[1]  # type: ignore[return-value]
    value = compute()
    if len(_MEMO) >= 4096:
        _MEMO.clear()
    _MEMO[(id(campaign), key)] = (campaign, value)
    return value


def reachable(campaign: Campaign, roots: Iterable[int], *, through_messages: bool = True) -> list[int]:
    """The steps reachable from `roots` (themselves included), in the order found; with
    `through_messages=False` a message step is reached but not passed (what one walk may send next)."""
    seen: dict[int, None] = {}
    stack = list(roots)
    while stack:
        at = stack.pop()
        if at in seen:
            continue
        seen[at] = None
        if through_messages or not campaign.steps[at].is_message:
            stack += [edge.target for edge in edges(campaign, at) if edge.target is not None]
    return list(seen)


def messages_ahead(campaign: Campaign, index: int) -> tuple[str, ...]:
    """Step `index`'s id when it is a message; else the ids of the message steps reachable from it
    through branches, waits and exits only (what one walk may send next)."""
    return _per_campaign(campaign, ("ahead", index), lambda: tuple(
        campaign.steps[at].id for at in reachable(campaign, [index], through_messages=False)
        if campaign.steps[at].is_message))


def describe_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(part for part in parts if part) or "0m"


# -- who the person is and what they did -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What branch rules and waits may look at: the person's attributes, and the times of what they
    did since this entry into the journey began (clicked, opened, replied, booked) and the steps
    they were sent in it."""

    interest: str = "none"
    language: str = DEFAULT_LANGUAGE
    source: str = ""
    email_consent: bool = False
    sms_consent: bool = False
    events: dict[str, tuple[datetime, ...]] = field(default_factory=dict)
    received: frozenset[str] = frozenset()

    def happened(self, event: str, since: datetime | None = None) -> datetime | None:
        """When `event` first happened (at or after `since`), or None."""
        times = [at for at in self.events.get(event, ()) if since is None or at >= since]
        return min(times) if times else None


def holds(condition: Condition, facts: Facts, now: datetime) -> bool:
    name = condition.name
    if name in ("email_consent", "sms_consent", "clicked", "opened", "replied"):
        wanted = condition.values == ("true",)
        actual = getattr(facts, name) if name.endswith("consent") else facts.happened(name) is not None
        return actual == wanted
    if name == "clicked_not_booked":
        clicked = facts.happened("clicked")
        if clicked is None or now - clicked < (condition.duration or timedelta(0)):
            return False
        booked = facts.happened("booked", since=clicked)
        return booked is None
    if name == "received":
        return any(step_id in facts.received for step_id in condition.values)
    if name == "not_received":
        return not any(step_id in facts.received for step_id in condition.values)
    value = {"interest": facts.interest or "none", "language": facts.language, "source": facts.source}[name]
    return value.lower() in condition.values


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a branch sends a person, and why in words (the simulation's "branch" key)."""

    target: int | None
    label: str


def choose(campaign: Campaign, index: int, facts: Facts, now: datetime) -> Choice:
    """The first rule of branch `index` whose every condition holds, else `otherwise`."""
    step = campaign.steps[index]
    for rule in step.rules:
        if all(holds(condition, facts, now) for condition in rule.conditions):
            return Choice(campaign.step_index(rule.goto), f"{step.id}: {rule.describe()}")
    return Choice(_index(campaign, step.otherwise, following(campaign, index)), f"{step.id}: otherwise")


@dataclass(frozen=True, slots=True)
class WaitState:
    """A wait's verdict now: over (with where to go and why) or not yet (until when)."""

    over: bool
    target: int | None = None
    label: str = ""
    until: datetime | None = None


def wait_state(campaign: Campaign, index: int, facts: Facts, entered_at: datetime, now: datetime) -> WaitState:
    """Wait `index`, reached at `entered_at`: has what it waits for happened since, or is it timed out?"""
    step = campaign.steps[index]
    after = following(campaign, index)
    if step.wait_for is not None:
        happened = facts.happened(step.wait_for, since=entered_at)
        if happened is not None and happened <= now:
            return WaitState(True, _index(campaign, step.on_event, after), f"{step.id}: {step.wait_for}")
    deadline = entered_at + step.timeout
    if now >= deadline:
        label = (f"{step.id}: waited {describe_duration(step.timeout)}" if step.wait_for is None
                 else f"{step.id}: not {step.wait_for} in {describe_duration(step.timeout)}")
        return WaitState(True, _index(campaign, step.on_timeout, after), label)
    return WaitState(False, until=deadline)


# -- A/B variants, holdout, language ------------------------------------------------------------------


def _bucket(*parts: object) -> int:
    """A stable number 0–9999 from `parts` (same enrollment and step: same number on every worker,
    in every process, after every restart)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


def assign_variant(enrollment_id: int, step: Step) -> Variant | None:
    """The variant of `step` enrollment `enrollment_id` gets, by weight; None without variants.
    Deterministic: a re-entry, a retry and a second worker all get the same one."""
    if not step.variants:
        return None
    point = _bucket("variant", step.id, enrollment_id) / 100  # 0.00 – 99.99
    total = 0
    for variant in step.variants:
        total += variant.weight
        if point < total:
            return variant
    return step.variants[-1]


def in_holdout(enrollment_id: int, campaign: Campaign) -> bool:
    """Is enrollment `enrollment_id` in the campaign's holdout share (by a stable hash)?"""
    share = campaign.holdout.percent
    return share > 0 and _bucket("holdout", campaign.id, enrollment_id) < share * 100


def holdout_receives(campaign: Campaign) -> frozenset[str]:
    """The steps a holdout enrollment is sent: the listed ones, else the first message step."""
    if campaign.holdout.receives:
        return frozenset(campaign.holdout.receives)
    first = next((step.id for step in campaign.steps if step.is_message), None)
    return frozenset([first] if first else [])


def step_delay(step: Step, variant: Variant | None) -> timedelta:
    return variant.delay if variant is not None and variant.delay is not None else step.delay


def template_for(step: Step, variant: Variant | None, language: str) -> str:
    """The template a message step sends for this variant in this language."""
    english = variant.template if variant is not None and variant.template else step.template
    return template_in_language(english, language)


def message_language(campaign: Campaign, language: str | None) -> str:
    """The language a person's messages from this campaign are in: theirs when the campaign has it."""
    return language if language and language in campaign.languages else DEFAULT_LANGUAGE


def templates_of(step: Step) -> Iterable[str]:
    """Every English template a message step may send (its own and its variants')."""
    yield step.template
    for variant in step.variants:
        if variant.template:
            yield variant.template


# -- how many texts a journey can send ----------------------------------------------------------------

MAX_PATHS = 20000  # a journey of a few dozen steps has far fewer; a bound keeps a pathological file cheap


@dataclass(frozen=True, slots=True)
class TextPlan:
    """The most texts one person can get from a journey (any path from its start, plus the rebook
    path), and the span from the first to the last of them (offsets from enrolling)."""

    most: int
    first_at: timedelta
    last_at: timedelta


def text_plan(campaign: Campaign) -> TextPlan:
    """Walk every path (each step sends at most once per entry; a branch rule that needs a step not
    received, or one received, is only followed when the path allows it) and keep the most texts."""
    return _per_campaign(campaign, "text_plan", lambda: _walk_text_plan(campaign))


def _walk_text_plan(campaign: Campaign) -> TextPlan:
    best = [0, timedelta.max, timedelta(0)]
    paths = 0

    def walk(index: int | None, at: timedelta, texts: frozenset[str], seen: frozenset[int]) -> int:
        nonlocal paths
        if index is None or index in seen or paths > MAX_PATHS:
            paths += 1
            return len(texts)
        step = campaign.steps[index]
        at = max(at, step.delay)
        seen = seen | {index}
        if step.is_message and step.enabled and step.channel == "sms":
            texts = texts | {step.id}
            best[1] = min(best[1], at)
            best[2] = max(best[2], at)
        if step.kind == StepKind.WAIT:  # the timeout's way out comes after the wait's time
            return max(walk(edge.target, at + (step.timeout if edge.kind == "timeout" else timedelta(0)), texts, seen)
                       for edge in edges(campaign, index))
        if step.kind == StepKind.BRANCH:
            results = [walk(campaign.step_index(rule.goto), at, texts, seen) for rule in step.rules
                       if _possible(rule.conditions, texts)]
            results.append(walk(_index(campaign, step.otherwise, following(campaign, index)), at, texts, seen))
            return max(results)
        outs = edges(campaign, index)
        return max((walk(edge.target, at, texts, seen) for edge in outs), default=len(texts))

    main = walk(0, timedelta(0), frozenset(), frozenset())
    rebook = (walk(campaign.step_index(campaign.on_cancel), timedelta(0), frozenset(), frozenset())
              if campaign.on_cancel else 0)
    best[0] = main + rebook
    first = best[1] if best[1] != timedelta.max else timedelta(0)
    return TextPlan(best[0], first, best[2])


def _possible(conditions: tuple[Condition, ...], texts: frozenset[str]) -> bool:
    for condition in conditions:
        if condition.name == "not_received" and any(value in texts for value in condition.values):
            return False
    return True
