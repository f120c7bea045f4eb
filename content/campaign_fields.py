"""What every part of a campaign file's parser shares: the error that names the file, the field and
the problem, and the readers of one field (delay, text, a value of the right type).

Kept apart from `content.campaign` so the journey parser (`content.journey_parse`) can use them
without importing the campaign module that imports it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DELAY_PART = re.compile(r"(\d+)\s*(d|h|m|s)\b")
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
MAX_DELAY = timedelta(days=366)  # a follow-up sequence is weeks long; a year is already generous


class CampaignError(Exception):
    """A campaign file is wrong. `str()` is `file: field: problem`."""

    def __init__(self, file: str, field_path: str, problem: str, line: int | None = None) -> None:
        self.file, self.field_path, self.problem, self.line = file, field_path, problem, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field_path}: {problem}" if field_path else f"{where}: {problem}")


class CampaignErrors(CampaignError):
    """Several problems found at once (the journey checks report every one): `problems` holds each,
    `str()` one per line. The first one's file and field are this error's."""

    def __init__(self, problems: list[CampaignError]) -> None:
        first = problems[0]
        super().__init__(first.file, first.field_path, first.problem, first.line)
        self.problems = problems
        self.args = ("\n".join(str(problem) for problem in problems),)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


def shown(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut short: error messages quote what was written, not a megabyte of it."""
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_delay(value: Any) -> timedelta:
    """`0`, `30m`, `2h`, `3d`, `1d 12h` → timedelta (at most `MAX_DELAY`). Raises ValueError with
    the accepted forms."""
    problem = ValueError(f"{shown(value)} is not a delay; write e.g. 0m, 30m, 2h, 3d or 1d 12h")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        if value > MAX_DELAY.total_seconds():
            raise ValueError(f"{value} seconds is longer than {MAX_DELAY.days} days")
        return timedelta(seconds=value)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or len(str(value)) > 100:
        raise problem
    text = str(value).strip().lower()
    if text in ("0", "now", "immediately"):
        return timedelta(0)
    parts = _DELAY_PART.findall(text)
    if not parts or _DELAY_PART.sub("", text).strip():
        raise problem
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    total = timedelta()
    try:
        for amount, unit in parts:
            total += timedelta(**{units[unit]: int(amount)})
    except OverflowError:
        total = MAX_DELAY + timedelta(days=1)
    if total > MAX_DELAY:
        raise ValueError(f"{shown(value)} is longer than {MAX_DELAY.days} days")
    return total


def expect(data: Any, kind: type | tuple[type, ...], file: str, path: str, what: str) -> Any:
    if not isinstance(data, kind):
        raise CampaignError(file, path, f"must be {what}, got {type(data).__name__}")
    return data


def text_field(data: Any, file: str, path: str, default: str = "") -> str:
    """A scalar field as text. Lists and mappings are refused before `str()` sees them: YAML
    aliases can make a small file stand for a gigantic nested list ("billion laughs")."""
    if data is None:
        return default
    if isinstance(data, (list, dict)):
        raise CampaignError(file, path, f"must be text, got a {type(data).__name__}")
    return str(data)


def line_of(text: str, key: str) -> int | None:
    """The first line of a campaign file's text that sets `key` (for the error's location)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*-?\s*{re.escape(key)}\s*:", line):
            return number
    return None


def line_of_step(text: str, step_id: str) -> int | None:
    """The line where step `step_id` starts (`- id: x` or `{id: x, …}`)."""
    pattern = re.compile(rf"(?:^|[\s{{,-])id\s*:\s*['\"]?{re.escape(step_id)}['\"]?\s*(?:[,}}#]|$)")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def delay_field(value: Any, file: str, path: str) -> timedelta:
    try:
        return parse_delay(value)
    except ValueError as exc:
        raise CampaignError(file, path, str(exc)) from None


def step_ref(value: Any, file: str, path: str) -> str:
    """A reference to another step by its id (checked to exist by `content.journey_check`)."""
    ref = text_field(value, file, path).strip()
    if not ID_PATTERN.match(ref):
        raise CampaignError(file, path, f"{shown(value)} is not a step id (lowercase letters, digits and dashes)")
    return ref
