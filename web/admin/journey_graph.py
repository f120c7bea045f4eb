"""A layered drawing of a small directed graph (the journey diagram's geometry), pure and
deterministic: boxes and labelled links in, each box's position and each link's path out.

The classic layered (Sugiyama) recipe, kept small for the few dozen nodes of a journey:

1. Links that close a loop (found by a depth-first walk from the roots, in link order) are set
   aside as *back links*; the rest form a DAG.
2. Longest-path layering: a box sits one layer below the deepest box that leads to it, so every
   forward link points down.
3. Every forward link gets one stand-in per row it crosses; layers are interleaved with *label rows*,
   and a labelled link's first stand-in is as wide as its label — labels never overlap a box or each
   other, and long links bend around boxes instead of through them.
4. Rows are ordered by barycentre sweeps (down, up), keeping the order with the fewest crossings.
5. Each item is pulled towards the mean position of its neighbours and pushed apart from its row
   neighbours (the left-packed and right-packed placements averaged), a few sweeps.
6. Back links run up a lane of their own on the right, along the gaps between rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MARGIN = 12
NODE_GAP, DUMMY_GAP = 36, 14  # between two boxes in a row; when a stand-in is involved
ROW_GAP_ABOVE, ROW_GAP_BELOW = 30, 12  # around each label row (links bend in the one above)
LINE_H = 17  # one line of an arrow's label
CHAR_W = 7.2  # an average 13px character, to size labels without a font
LABEL_MAX_CHARS = 30  # a label wraps onto a second line after this many characters
LANE_GAP = 14
ARRIVAL_GAP = 16  # between arrowheads arriving at one box


@dataclass(frozen=True, slots=True)
class Box:
    key: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Link:
    source: str
    target: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class Placed:
    key: str
    x: int  # centre
    y: int  # top
    width: int
    height: int
    layer: int

    @property
    def left(self) -> int:
        return self.x - self.width // 2

    @property
    def bottom(self) -> int:
        return self.y + self.height


@dataclass(frozen=True, slots=True)
class Route:
    link: Link
    path: str  # SVG path data, ending at the target (the arrowhead goes there)
    label_lines: tuple[str, ...]
    label_x: int  # where the label's first line starts (text-anchor start)
    label_y: int
    back: bool  # closes a loop: drawn up a lane on the right


@dataclass(frozen=True, slots=True)
class Drawing:
    boxes: dict[str, Placed]
    routes: tuple[Route, ...]
    width: int
    height: int


def wrap(label: str) -> tuple[str, ...]:
    """A label in at most two lines of about `LABEL_MAX_CHARS` (the rest elided with …)."""
    if not label:
        return ()
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > LABEL_MAX_CHARS:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], " ".join(lines[1:])]
    return tuple(text if len(text) <= LABEL_MAX_CHARS + 8 else text[:LABEL_MAX_CHARS + 7] + "…" for text in lines)


def label_width(lines: Sequence[str]) -> int:
    return int(max((len(line) for line in lines), default=0) * CHAR_W) + 10


@dataclass
class _Item:
    key: str
    rank: int
    left: float  # extent left of the anchor (where links attach)
    right: float
    height: int
    dummy: bool
    x: float = 0.0


def _back_links(keys: list[str], links: list[Link], roots: list[str]) -> set[int]:
    """Indexes of the links that close a loop, by a depth-first walk from `roots` in link order."""
    out: dict[str, list[int]] = {key: [] for key in keys}
    for number, link in enumerate(links):
        out[link.source].append(number)
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    back: set[int] = set()
    for root in [*roots, *keys]:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, at = stack[-1]
            if at == len(out[node]):
                state[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, at + 1)
            number = out[node][at]
            target = links[number].target
            if state.get(target) == 1:
                back.add(number)
            elif target not in state:
                state[target] = 1
                stack.append((target, 0))
    return back


def _layers(keys: list[str], forward: list[Link]) -> dict[str, int]:
    """Longest-path layering of the DAG `forward` (a box with no way in is in layer 0)."""
    preds: dict[str, list[str]] = {key: [] for key in keys}
    indegree = {key: 0 for key in keys}
    succs: dict[str, list[str]] = {key: [] for key in keys}
    for link in forward:
        preds[link.target].append(link.source)
        succs[link.source].append(link.target)
        indegree[link.target] += 1
    ready = [key for key in keys if indegree[key] == 0]
    layer = {key: 0 for key in keys}
    while ready:
        node = ready.pop(0)
        for target in succs[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return layer


def _crossings(rows: list[list[str]], succ: dict[str, list[str]]) -> int:
    total = 0
    for upper, lower in zip(rows, rows[1:]):
        position = {key: n for n, key in enumerate(lower)}
        pairs = [(i, position[t]) for i, key in enumerate(upper) for t in succ[key] if t in position]
        total += sum(1 for n, (a, b) in enumerate(pairs) for c, d in pairs[n + 1:] if (a - c) * (b - d) < 0)
    return total


def _order(rows: list[list[str]], succ: dict[str, list[str]], pred: dict[str, list[str]]) -> list[list[str]]:
    """Barycentre sweeps; the order with the fewest crossings wins (ties: the earlier)."""
    best, best_crossings = [list(row) for row in rows], _crossings(rows, succ)
    current = [list(row) for row in rows]
    for sweep in range(8):
        down = sweep % 2 == 0
        span = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for r in span:
            neighbour = current[r - 1] if down else current[r + 1]
            position = {key: n for n, key in enumerate(neighbour)}
            links = pred if down else succ

            def centre(key: str, r: int = r) -> float:
                near = [position[other] for other in links[key] if other in position]
                return sum(near) / len(near) if near else float(current[r].index(key))

            current[r] = sorted(current[r], key=centre)
        crossings = _crossings(current, succ)
        if crossings < best_crossings:
            best, best_crossings = [list(row) for row in current], crossings
    return best


def _gap(a: _Item, b: _Item) -> float:
    return NODE_GAP if not a.dummy and not b.dummy else DUMMY_GAP


def _pack(row: list[_Item], desired: list[float]) -> None:
    """Put the row's items as near `desired` as their order and widths allow."""
    pushed_right = list(desired)
    for n in range(1, len(row)):
        least = pushed_right[n - 1] + row[n - 1].right + _gap(row[n - 1], row[n]) + row[n].left
        pushed_right[n] = max(pushed_right[n], least)
    pushed_left = list(desired)
    for n in range(len(row) - 2, -1, -1):
        most = pushed_left[n + 1] - row[n + 1].left - _gap(row[n], row[n + 1]) - row[n].right
        pushed_left[n] = min(pushed_left[n], most)
    for n, item in enumerate(row):
        item.x = (pushed_right[n] + pushed_left[n]) / 2
    for n in range(1, len(row)):  # averaging can leave a little overlap: push right again
        least = row[n - 1].x + row[n - 1].right + _gap(row[n - 1], row[n]) + row[n].left
        row[n].x = max(row[n].x, least)


def layered(boxes: Sequence[Box], links: Sequence[Link], roots: Sequence[str]) -> Drawing:
    """Lay out `boxes` and `links` top to bottom, `roots` (in order) first and leftmost."""
    keys = [box.key for box in boxes]
    size = {box.key: box for box in boxes}
    all_links = list(links)
    back = _back_links(keys, all_links, list(roots))
    forward = [link for n, link in enumerate(all_links) if n not in back]
    layer = _layers(keys, forward)

    items: dict[str, _Item] = {key: _Item(key, 2 * layer[key], size[key].width / 2, size[key].width / 2,
                                          size[key].height, False) for key in keys}
    succ: dict[str, list[str]] = {key: [] for key in keys}
    chains: list[tuple[Link, list[str], tuple[str, ...]]] = []
    for number, link in enumerate(forward):
        lines = wrap(link.label)
        chain = [link.source]
        for rank in range(2 * layer[link.source] + 1, 2 * layer[link.target]):
            key = f"\0{number}:{rank}"
            first = rank == 2 * layer[link.source] + 1
            width = label_width(lines) if first and lines else 0
            items[key] = _Item(key, rank, 6, 6 + width, LINE_H * len(lines) if first else 0, True)
            succ[key] = []
            chain.append(key)
        chain.append(link.target)
        for a, b in zip(chain, chain[1:]):
            succ[a].append(b)
        chains.append((link, chain, lines))
    pred: dict[str, list[str]] = {key: [] for key in items}
    for key, targets in succ.items():
        for target in targets:
            pred[target].append(key)

    # The first order: a depth-first walk from the roots, each box's links in their order.
    ranks = max((item.rank for item in items.values()), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(ranks)]
    seen: set[str] = set()
    for root in [*roots, *keys, *items]:
        stack = [root]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            rows[items[key].rank].append(key)
            stack.extend(reversed(succ[key]))
    rows = _order(rows, succ, pred)

    # Positions: packed rows, then pulled towards their neighbours, a few sweeps down and up.
    for row in rows:
        _pack([items[key] for key in row], [0.0] * len(row))
    for sweep in range(6):
        down = sweep % 2 == 0
        for r in (range(1, ranks) if down else range(ranks - 2, -1, -1)):
            row = [items[key] for key in rows[r]]
            desired = []
            for item in row:
                near = [items[other].x for other in (pred if down else succ)[item.key]]
                desired.append(sum(near) / len(near) if near else item.x)
            _pack(row, desired)
    left_most = min((item.x - item.left for item in items.values()), default=0.0)
    for item in items.values():
        item.x = round(item.x - left_most + MARGIN)

    # Rows top to bottom: a box row is as tall as its tallest box; a label row as its labels.
    tops: list[int] = []
    row_height: list[int] = []  # a label row's includes the gap below it
    y = MARGIN
    for r in range(ranks):
        height = max((items[key].height for key in rows[r]), default=0)
        if r % 2:
            y += ROW_GAP_ABOVE
            height = max(height, 12) + ROW_GAP_BELOW
        tops.append(y)
        row_height.append(height)
        y += height
    bottom = y

    placed: dict[str, Placed] = {}
    for key in keys:
        item = items[key]
        top = tops[item.rank] + (row_height[item.rank] - item.height) // 2 if item.rank % 2 == 0 else tops[item.rank]
        placed[key] = Placed(key, int(item.x), top, size[key].width, item.height, layer[key])

    routes: list[Route] = []
    right_most = max((item.x + item.right for item in items.values()), default=0.0)
    paths: list[list[tuple[int, int]]] = []
    for link, chain, _lines in chains:
        source, target = placed[link.source], placed[link.target]
        points = [(source.x, source.bottom)]
        for key in chain[1:-1]:
            rank = items[key].rank
            points.append((int(items[key].x), tops[rank]))
            points.append((int(items[key].x), tops[rank] + row_height[rank] - (ROW_GAP_BELOW if rank % 2 else 0)))
        points.append((target.x, target.y))
        paths.append(points)
    # Arrows into the same box arrive side by side, in the order they come from, not on one point.
    arriving: dict[str, list[int]] = {}
    for number, (link, _chain, _lines) in enumerate(chains):
        arriving.setdefault(link.target, []).append(number)
    for target_key, numbers in arriving.items():
        if len(numbers) < 2:
            continue
        numbers.sort(key=lambda n: paths[n][-2][0])
        spacing = min(ARRIVAL_GAP, placed[target_key].width * 0.6 / (len(numbers) - 1))
        for position, number in enumerate(numbers):
            end_x, end_y = paths[number][-1]
            paths[number][-1] = (int(end_x + (position - (len(numbers) - 1) / 2) * spacing), end_y)
    for (link, chain, lines), points in zip(chains, paths):
        label_x, label_y = 0, 0
        if lines:
            first = items[chain[1]]
            label_x, label_y = int(first.x) + 8, tops[first.rank] + 13
        routes.append(Route(link, _curve(points), lines, label_x, label_y, False))

    lane = right_most + LANE_GAP
    for n in sorted(back):
        link = all_links[n]
        source, target = placed[link.source], placed[link.target]
        lines = wrap(link.label)
        below, above = source.bottom + 10, target.y - ROW_GAP_BELOW // 2
        start_x, end_x = source.x + source.width // 2 - 18, target.x + target.width // 2 - 18
        path = (f"M{start_x},{source.bottom} L{start_x},{below} L{int(lane)},{below} "
                f"L{int(lane)},{above} L{end_x},{above} L{end_x},{target.y}")
        routes.append(Route(link, path, lines, int(lane) + 6, (below + above) // 2, True))
        lane += LANE_GAP + (label_width(lines) if lines else 0)
    width = int(max(lane, right_most + MARGIN)) + MARGIN
    return Drawing(placed, tuple(routes), width, bottom + MARGIN)


def _curve(points: list[tuple[int, int]]) -> str:
    """A smooth path through `points`, leaving and entering each vertically."""
    x0, y0 = points[0]
    parts = [f"M{x0},{y0}"]
    for (x1, y1), (x2, y2) in zip(points, points[1:]):
        if x1 == x2:
            parts.append(f"L{x2},{y2}")
        else:
            middle = (y1 + y2) // 2
            parts.append(f"C{x1},{middle} {x2},{middle} {x2},{y2}")
    return " ".join(parts)
