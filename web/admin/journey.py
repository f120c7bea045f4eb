"""The campaign page's journey diagram: what each node and arrow says, and where it goes in the SVG.

A pure layout of a campaign version and its live counts (`dispatch.journey_counts`). One node per
step — a message (channel, step, delay from enrolling, on/off), a branch (a hexagon: what it
chooses by), a wait (what it waits for, up to when), an exit (an end node) — plus where people
come in (enrolling; a cancelled booking's rebook path, `on_cancel`) and the end after a last step.
Every way out of a step is an arrow with its label (`content.journey.edges`: each branch rule,
"otherwise", a wait's event and its timeout; between two messages, the wait in between). The
geometry is a layered layout (`web.admin.journey_graph`); loops run up a lane on the right. The
exits people can take at any step (booked, unsubscribed, stopped) stand beside it.

Counts on each node: waiting there now (and paused), sent by a message step, passed by a branch or
a wait, ended at an exit. "Passed" needs no query of its own: it is every enrollment (any status)
whose step is one that can only be reached through that branch or wait (it *dominates* the step),
from the per-step figures the page reads anyway. Someone who went through a branch and on to a step
that can also be reached another way (the rebook path joining the journey) is not counted as past it.

`admin/_journey.html` draws it as inline SVG (no script, no CDN) with a `<title>` on every node, and
the same figures — every node with its ways out — as a table for screen readers and copying.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.campaign_versions import format_delay
from patient_drip.content.journey import describe_duration, edges
from patient_drip.content.journey_types import StepKind
from patient_drip.dispatch.journey_counts import EXITS, JourneyCounts
from patient_drip.web.admin.journey_graph import CHAR_W, Box, Link, layered

NODE_W, NODE_H = 260, 76  # a step
END_H = 56  # an exit step, the finish
ENTRY_W, ENTRY_H = 230, 44  # where people come in
EXIT_W, EXIT_H, EXIT_GAP = 270, 56, 30  # the side panel's exits
TITLE_CHARS = int((NODE_W - 28) / (CHAR_W + 1))  # a bold 14px title line

START, REBOOK, FINISH = "start", "rebook", "finish"


@dataclass(frozen=True, slots=True)
class Way:
    """A way out of a node: its label ("" for a plain next) and where it leads."""

    label: str
    target: str


@dataclass(frozen=True, slots=True)
class Node:
    key: str  # `start`, `rebook`, `finish`, or the step id
    dom_id: str
    kind: str  # message, branch, wait, exit, start, rebook, finish
    step_id: str  # "" for start, rebook and finish
    channel: str
    title: str
    detail: str
    counts: str  # the node's figures in words
    tooltip: str
    enabled: bool
    delay: str
    waiting: int
    paused: int
    sent: int
    passed: int
    ended: int
    x: int  # left
    y: int  # top
    width: int
    height: int
    ways: tuple[Way, ...]

    @property
    def cx(self) -> int:
        return self.x + self.width // 2

    @property
    def hexagon(self) -> str:
        """A branch's outline: a hexagon pointed at both sides."""
        x, y, w, h, inset = self.x, self.y, self.width, self.height, 18
        return (f"{x},{y + h // 2} {x + inset},{y} {x + w - inset},{y} {x + w},{y + h // 2} "
                f"{x + w - inset},{y + h} {x + inset},{y + h}")


@dataclass(frozen=True, slots=True)
class Arrow:
    source: str
    target: str
    label: str
    label_lines: tuple[str, ...]
    label_x: int
    label_y: int
    path: str
    back: bool  # closes a loop (drawn up the side)
    wait: bool  # a plain next between two messages, labelled with the wait in between
    target_step: str  # the target's step id ("" for the finish)


@dataclass(frozen=True, slots=True)
class ExitNode:
    key: str
    label: str
    count: int
    y: int


@dataclass(frozen=True, slots=True)
class JourneyLayout:
    version: int
    linear: bool
    nodes: tuple[Node, ...]
    arrows: tuple[Arrow, ...]
    exits: tuple[ExitNode, ...]
    finished: int
    width: int
    height: int
    exit_x: int
    exit_w: int = EXIT_W
    exit_h: int = EXIT_H

    @property
    def steps(self) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.step_id)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _title(prefix: str, step: Step) -> str:
    text = f"{prefix} · {step.id}{'' if step.enabled or not step.is_message else ' (off)'}"
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1] + "…"


def _detail(campaign: Campaign, step: Step) -> str:
    if step.kind == StepKind.MESSAGE:
        extra = f" · A/B: {', '.join(f'{v.id} {v.weight}%' for v in step.variants)}" if step.variants else ""
        if not step.delay and not campaign.is_linear and campaign.steps.index(step) > 0:
            return f"when reached{extra}"  # a help or rebook message: its time is the path's
        return f"{format_delay(step.delay)} after enrolling{extra}"
    if step.kind == StepKind.BRANCH:
        names = []
        for rule in step.rules:
            for condition in rule.conditions:
                if condition.name not in names:
                    names.append(condition.name)
        when = f"day {step.delay.days}: " if step.delay else ""
        shown = ", ".join(names[:2]).replace("_", " ") + (f" +{len(names) - 2}" if len(names) > 2 else "")
        return f"{when}by {shown}" if names else "always otherwise"
    if step.kind == StepKind.WAIT:
        if step.wait_for is None:
            return f"pauses {describe_duration(step.timeout)}"
        return f"waits for {step.wait_for}, up to {describe_duration(step.timeout)}"
    return f"ends: {step.exit_reason}" if step.exit_reason else "the journey ends here"


def _dominators(graph: dict[str, list[str]], roots: list[str]) -> dict[str, set[str]]:
    """For every node reachable from `roots`, the nodes every path from a root to it goes through."""
    reachable: list[str] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        if node in reachable:
            continue
        reachable.append(node)
        stack.extend(reversed(graph.get(node, [])))
    preds: dict[str, list[str]] = {node: [] for node in reachable}
    for node in reachable:
        for target in graph.get(node, []):
            preds[target].append(node)
    everything = set(reachable)
    dom = {node: ({node} if node in roots else set(everything)) for node in reachable}
    changed = True
    while changed:
        changed = False
        for node in reachable:
            if node in roots:
                continue
            incoming = [dom[p] for p in preds[node]]
            new = {node} | (set.intersection(*incoming) if incoming else set())
            if new != dom[node]:
                dom[node], changed = new, True
    return dom


def journey_layout(campaign: Campaign, counts: JourneyCounts) -> JourneyLayout:
    """Where everything goes, for `campaign` (the version in force) and its counts."""
    steps = campaign.steps
    key_of = {index: step.id for index, step in enumerate(steps)}
    ways: dict[str, list[Way]] = {START: [Way("", steps[0].id)]}
    if campaign.on_cancel is not None:
        ways[REBOOK] = [Way("", campaign.on_cancel)]
    wait_arrows: set[tuple[str, str]] = set()
    for index, step in enumerate(steps):
        out = []
        for edge in edges(campaign, index):
            target = FINISH if edge.target is None else key_of[edge.target]
            label = edge.label
            if not label and edge.target is not None and step.is_message and steps[edge.target].is_message:
                gap = steps[edge.target].delay - step.delay
                # A linear campaign says "no wait" as before; a journey shows only real waits.
                label = (f"wait {format_delay(gap)}" if gap.total_seconds() > 0
                         else "no wait" if campaign.is_linear else "")
                if label:
                    wait_arrows.add((step.id, target))
            out.append(Way(label, target))
        ways[step.id] = out
    has_finish = any(way.target == FINISH for out in ways.values() for way in out)

    # How many went past each branch and wait: everyone whose step only that node leads to.
    graph = {key: [way.target for way in out] for key, out in ways.items()}
    roots = [START] + ([REBOOK] if campaign.on_cancel is not None else [])
    dom = _dominators(graph, roots)
    at = {key_of[index]: count for index, count in counts.at.items() if index in key_of}
    passed = {key: sum(count for other, count in at.items() if other != key and key in dom.get(other, ()))
              for key in ways}
    exit_ended = {key_of[index]: count for index, count in counts.completed.items()
                  if index in key_of and steps[index].kind == StepKind.EXIT}
    finished = counts.exits.get("finished", 0) - sum(exit_ended.values())

    sizes: dict[str, tuple[int, int]] = {START: (ENTRY_W, ENTRY_H)}
    if campaign.on_cancel is not None:
        sizes[REBOOK] = (ENTRY_W, ENTRY_H)
    for step in steps:
        sizes[step.id] = (NODE_W, END_H if step.kind == StepKind.EXIT else NODE_H)
    if has_finish:
        sizes[FINISH] = (NODE_W, END_H)
    links = [Link(key, way.target, way.label) for key, out in ways.items() for way in out]
    drawing = layered([Box(key, w, h) for key, (w, h) in sizes.items()], links, roots)

    def node(key: str, **fields: object) -> Node:
        box = drawing.boxes[key]
        defaults: dict[str, object] = dict(step_id="", channel="", enabled=True, delay="", waiting=0, paused=0,
                                           sent=0, passed=0, ended=0, ways=tuple(ways.get(key, ())))
        defaults.update(fields)
        return Node(key=key, x=box.left, y=box.y, width=box.width, height=box.height, **defaults)  # type: ignore[arg-type]

    enrolled = sum(counts.at.values())
    nodes = [node(START, dom_id="journey-start", kind="start", title="Enrolled", detail="",
                  counts=_plural(enrolled, "person", "people"),
                  tooltip=f"Where the journey starts: {_plural(enrolled, 'person', 'people')} enrolled")]
    if campaign.on_cancel is not None:
        nodes.append(node(REBOOK, dom_id="journey-rebook", kind="rebook", title="Cancelled a booking",
                          detail="", counts="",
                          tooltip=f"A cancelled booking re-enters the journey at {campaign.on_cancel}"))
    for index, step in enumerate(steps):
        waiting, paused = counts.waiting.get(index, 0), counts.paused.get(index, 0)
        detail = _detail(campaign, step)
        more = f" ({paused} more paused)" if paused else ""
        if step.kind == StepKind.MESSAGE:
            channel = "email" if step.channel == "email" else "text message"
            sent = counts.sent.get(step.id, 0)
            figures = f"{waiting} waiting · {sent} sent"
            off = "" if step.enabled else f", turned off in version {campaign.version}"
            tooltip = f"{step.id} ({channel}), {detail}{off}: {waiting} waiting here now{more}, {sent} sent"
            nodes.append(node(step.id, dom_id=f"node-{step.id}", kind="message", step_id=step.id,
                              channel=str(step.channel), title=_title("Email" if step.channel == "email" else "Text", step),
                              detail=detail, counts=figures, tooltip=tooltip, enabled=step.enabled,
                              delay=format_delay(step.delay), waiting=waiting, paused=paused, sent=sent))
        elif step.kind in (StepKind.BRANCH, StepKind.WAIT):
            went = passed[step.id]
            word = "Branch" if step.kind == StepKind.BRANCH else "Wait"
            tooltip = f"{word} {step.id}, {detail}: {waiting} waiting here now{more}, {went} went past it"
            nodes.append(node(step.id, dom_id=f"node-{step.id}", kind=str(step.kind), step_id=step.id,
                              title=_title(word, step), detail=detail, counts=f"{waiting} waiting · {went} passed",
                              tooltip=tooltip, delay=format_delay(step.delay), waiting=waiting, paused=paused,
                              passed=went))
        else:
            ended = exit_ended.get(step.id, 0)
            nodes.append(node(step.id, dom_id=f"node-{step.id}", kind="exit", step_id=step.id,
                              title=_title("Exit", step), detail=detail, counts=f"{ended} ended here",
                              tooltip=f"Exit {step.id}, {detail}: {_plural(ended, 'person', 'people')} ended here",
                              ended=ended))
    if has_finish:
        nodes.append(node(FINISH, dom_id="exit-finished", kind="finish", title="Finished the sequence", detail="",
                          counts=_plural(finished, "person", "people"), ended=finished,
                          tooltip=f"Exit: Finished the sequence: {_plural(finished, 'person', 'people')}"))

    names = {n.key: (n.step_id or n.title) for n in nodes}
    arrows = tuple(
        Arrow(route.link.source, route.link.target, route.link.label, route.label_lines, route.label_x,
              route.label_y, route.path, route.back, (route.link.source, route.link.target) in wait_arrows,
              route.link.target if route.link.target in ways and route.link.target not in (START, REBOOK) else "")
        for route in drawing.routes)
    named_nodes = tuple(replace(n, ways=tuple(Way(w.label, names.get(w.target, w.target)) for w in n.ways))
                        for n in nodes)

    exit_x = drawing.width + 40
    labels = dict(EXITS)
    exits = tuple(ExitNode(key, labels[key], counts.exits.get(key, 0), 40 + n * (EXIT_H + EXIT_GAP))
                  for n, (key, _label) in enumerate(EXITS) if key != "finished")
    height = max(drawing.height, exits[-1].y + EXIT_H + 12 if exits else 0)
    return JourneyLayout(campaign.version, campaign.is_linear, named_nodes, arrows, exits, finished,
                         exit_x + EXIT_W + 12, height, exit_x)

