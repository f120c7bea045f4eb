"""The checks a journey must pass as a whole before it is loaded: every step it names exists, every
step can be reached, no loop runs without a wait, A/B weights add up to 100, and every template
exists in every language the campaign speaks. Each problem names the file, the step and the field;
all of them are reported at once, and nothing half-valid is loaded.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from patient_drip.content.campaign_model import Campaign, Step
from patient_drip.content.campaign_fields import CampaignError, line_of, line_of_step
from patient_drip.content.journey import edges, reachable, templates_of
from patient_drip.content.journey_types import StepKind
from patient_drip.content.languages import template_in_language


def journey_problems(campaign: Campaign, templates_dir: Path | None, text: str = "") -> list[CampaignError]:
    """Every problem of `campaign`'s journey (empty when it is sound)."""
    file = campaign.source_file
    ids = {step.id for step in campaign.steps}
    problems: list[CampaignError] = []

    def problem(step_id: str | None, field: str, why: str) -> None:
        where = f"steps[{campaign.step_index(step_id)}] ({step_id}).{field}" if step_id else field
        line = line_of_step(text, step_id) if step_id else line_of(text, field.split(".")[0])
        problems.append(CampaignError(file, where, why, line))

    for step in campaign.steps:
        for field, ref in _references(step):
            if ref not in ids:
                problem(step.id, field, f"there is no step {ref!r}")
        if step.variants:
            total = sum(variant.weight for variant in step.variants)
            if total != 100:
                problem(step.id, "variants", f"weights add up to {total}, not 100")
    for field, ref in _campaign_references(campaign):
        if ref not in ids:
            problem(None, field, f"there is no step {ref!r}")
    if problems:
        return problems  # the graph below needs every reference to resolve

    if not campaign.message_steps:
        problem(None, "steps", "a journey needs at least one message step")
    receives = set(campaign.holdout.receives)
    for step in campaign.steps:
        if step.id in receives and not step.is_message:
            problem(None, "holdout.receives", f"{step.id!r} is a {step.kind} step, not a message")
    if campaign.on_cancel is not None and campaign.steps[campaign.step_index(campaign.on_cancel)].kind == StepKind.EXIT:
        problem(None, "on_cancel", "the rebook path must start with a step that does something, not an exit")

    for index in _unreachable(campaign):
        step = campaign.steps[index]
        problem(step.id, "id", "cannot be reached: no step leads here (give a `next`, `goto` or path to it, or remove it)")
    for cycle in _cycles_without_wait(campaign):
        names = " → ".join(campaign.steps[index].id for index in [*cycle, cycle[0]])
        closing = campaign.steps[cycle[-1]]  # the step whose way out closes the loop
        field = {StepKind.MESSAGE: "next", StepKind.BRANCH: "branch", StepKind.WAIT: "wait"}.get(closing.kind, "id")
        problem(closing.id, field, f"loops without a wait ({names}): it would run forever at once")

    if campaign.is_linear:
        for before, step in zip(campaign.steps, campaign.steps[1:]):
            if step.delay < before.delay:
                problem(step.id, "delay", "steps must be in order of delay")
    if templates_dir is not None:
        for step in campaign.message_steps:
            for template in templates_of(step):
                for language in campaign.languages:
                    path = template_in_language(template, language)
                    if not (templates_dir / path).is_file():
                        why = (f"{template} does not exist in {templates_dir}" if language == "en" else
                               f"has an English template but no {language} one: {path} does not exist in {templates_dir}")
                        problem(step.id, "template", why)
    return problems


def _references(step: Step) -> list[tuple[str, str]]:
    """(field, step id) of every step `step` names."""
    found = [(field, value) for field, value in (("next", step.next), ("otherwise", step.otherwise),
                                                  ("on_event", step.on_event), ("on_timeout", step.on_timeout))
             if value is not None]
    for number, rule in enumerate(step.rules):
        found.append((f"branch[{number}].goto", rule.goto))
        for condition in rule.conditions:
            if condition.name in ("received", "not_received"):
                found += [(f"branch[{number}].if.{condition.name}", value) for value in condition.values]
    return found


def _campaign_references(campaign: Campaign) -> list[tuple[str, str]]:
    found = [("holdout.receives", ref) for ref in campaign.holdout.receives]
    if campaign.on_cancel is not None:
        found.append(("on_cancel", campaign.on_cancel))
    return found


def _unreachable(campaign: Campaign) -> list[int]:
    """Steps no path reaches from the first step (or from the rebook path's start)."""
    roots = [0] + ([campaign.step_index(campaign.on_cancel)] if campaign.on_cancel else [])
    found = set(reachable(campaign, roots))
    return [index for index in range(len(campaign.steps)) if index not in found]


def _cycles_without_wait(campaign: Campaign) -> list[list[int]]:
    """Loops whose steps include no wait (a wait with a timeout lets time pass; a message step
    with a delay does not: once past its time it goes at once, so such a loop would spin)."""
    def passes_time(index: int) -> bool:
        step = campaign.steps[index]
        return step.kind == StepKind.WAIT and step.timeout > timedelta(0)

    graph = {index: [edge.target for edge in edges(campaign, index)
                     if edge.target is not None and not passes_time(edge.target)]
             for index in range(len(campaign.steps)) if not passes_time(index)}
    cycles: list[list[int]] = []
    state: dict[int, int] = {}  # 1: on the path, 2: done
    path: list[int] = []

    def visit(node: int) -> None:
        state[node] = 1
        path.append(node)
        for target in graph.get(node, []):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return cycles
