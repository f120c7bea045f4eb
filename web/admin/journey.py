"""The campaign page's journey diagram: where each node goes in the SVG and what it says.

A pure layout of a campaign version and its live counts (`dispatch.journey_counts`): one node per
step down the left (channel, step, delay from enrollment, on/off, waiting now and sent), an arrow
between steps labelled with the wait, the finish after the last step, and the exits people can
take at any step on the right. `admin/_journey.html` draws it as inline SVG (no script, no CDN)
with a `<title>` on every node, and the same figures as a table for screen readers and copying.
"""

from __future__ import annotations

from dataclasses import dataclass

from patient_drip.content.campaign import Campaign
from patient_drip.content.campaign_versions import format_delay
from patient_drip.dispatch.journey_counts import EXITS, JourneyCounts

NODE_W, NODE_H, GAP = 400, 64, 46  # a step box, and the room for the arrow and its wait below it
LEFT, TOP = 10, 10
EXIT_X, EXIT_W, EXIT_H = 500, 230, 56
WIDTH = EXIT_X + EXIT_W + 10


@dataclass(frozen=True, slots=True)
class StepNode:
    index: int
    step_id: str
    channel: str
    delay: str  # from enrollment, as the files write it
    enabled: bool
    waiting: int
    paused: int
    sent: int
    y: int
    wait_before: str | None  # the wait from the step before ("2d", "no wait"); None for the first


@dataclass(frozen=True, slots=True)
class ExitNode:
    key: str
    label: str
    count: int
    y: int


@dataclass(frozen=True, slots=True)
class JourneyLayout:
    version: int
    steps: tuple[StepNode, ...]
    finish: ExitNode
    exits: tuple[ExitNode, ...]
    height: int
    width: int = WIDTH
    node_w: int = NODE_W
    node_h: int = NODE_H
    left: int = LEFT
    exit_x: int = EXIT_X
    exit_w: int = EXIT_W
    exit_h: int = EXIT_H


def _wait(before: Campaign, index: int) -> str | None:
    if index == 0:
        return None
    gap = before.steps[index].delay - before.steps[index - 1].delay
    return "no wait" if not gap else f"wait {format_delay(gap)}"


def journey_layout(campaign: Campaign, counts: JourneyCounts) -> JourneyLayout:
    """Where everything goes, for `campaign` (the version in force) and its counts."""
    steps = tuple(
        StepNode(index, step.id, str(step.channel), format_delay(step.delay), step.enabled,
                 counts.waiting.get(index, 0), counts.paused.get(index, 0), counts.sent.get(step.id, 0),
                 TOP + index * (NODE_H + GAP), _wait(campaign, index))
        for index, step in enumerate(campaign.steps))
    finish_y = TOP + len(steps) * (NODE_H + GAP)
    labels = dict(EXITS)
    finish = ExitNode("finished", labels["finished"], counts.exits.get("finished", 0), finish_y)
    exits = tuple(ExitNode(key, label, counts.exits.get(key, 0), TOP + 40 + n * (EXIT_H + 40))
                  for n, (key, label) in enumerate(EXITS) if key != "finished")
    return JourneyLayout(campaign.version, steps, finish, exits, finish_y + EXIT_H + TOP)
