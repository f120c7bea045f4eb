"""Campaign definitions: YAML files in `campaigns/` that marketing can read and edit.

Loaded into frozen objects and validated; every error names the file, the field and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import yaml

from patient_drip.models import Channel

_DELAY_PART = re.compile(r"(\d+)\s*(d|h|m|s)\b")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
EXIT_CONDITIONS = ("booked", "unsubscribed")


class CampaignError(Exception):
    """A campaign file is wrong. `str()` is `file: field: problem`."""

    def __init__(self, file: str, field_path: str, problem: str, line: int | None = None) -> None:
        self.file, self.field_path, self.problem, self.line = file, field_path, problem, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field_path}: {problem}" if field_path else f"{where}: {problem}")


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
    id: str
    delay: timedelta
    channel: Channel
    template: str  # path relative to the templates folder
    # Off in a timing version (`content.campaign_versions`): skipped, never sent. A file's steps are on.
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str
    description: str
    steps: tuple[Step, ...]
    send_window: SendWindow = field(default_factory=SendWindow)
    frequency_cap_per_day: int = 2
    email_requires_consent: bool = True
    exit_on: tuple[str, ...] = EXIT_CONDITIONS
    source_file: str = ""
    # The timing version these steps' delays and on/off come from; 1 is the file as written.
    version: int = 1

    def step_index(self, step_id: str) -> int:
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        raise KeyError(step_id)


MAX_DELAY = timedelta(days=366)  # a follow-up sequence is weeks long; a year is already generous
MAX_TEMPLATE_PATH = 200
_TEMPLATE_PATH = re.compile(r"(?:email|sms)/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")


def _shown(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut short: error messages quote what was written, not a megabyte of it."""
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_delay(value: Any) -> timedelta:
    """`0`, `30m`, `2h`, `3d`, `1d 12h` → timedelta (at most `MAX_DELAY`). Raises ValueError with
    the accepted forms."""
    problem = ValueError(f"{_shown(value)} is not a delay; write e.g. 0m, 30m, 2h, 3d or 1d 12h")
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
        raise ValueError(f"{_shown(value)} is longer than {MAX_DELAY.days} days")
    return total


def _parse_time(value: Any, file: str, path: str) -> time:
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not match or int(match[1]) > 24 or int(match[2]) > 59:
        raise CampaignError(file, path, f"{_shown(value)} is not a time of day; write HH:MM such as 09:00")
    hour, minute = int(match[1]), int(match[2])
    if hour == 24:
        if minute:
            raise CampaignError(file, path, "24:MM is not a time; use 24:00 for midnight at the end")
        return time(23, 59, 59)
    return time(hour, minute)


def _expect(data: Any, kind: type | tuple[type, ...], file: str, path: str, what: str) -> Any:
    if not isinstance(data, kind):
        raise CampaignError(file, path, f"must be {what}, got {type(data).__name__}")
    return data


def _text(data: Any, file: str, path: str, default: str = "") -> str:
    """A scalar field as text. Lists and mappings are refused before `str()` sees them: YAML
    aliases can make a small file stand for a gigantic nested list ("billion laughs")."""
    if data is None:
        return default
    if isinstance(data, (list, dict)):
        raise CampaignError(file, path, f"must be text, got a {type(data).__name__}")
    return str(data)


def _line_of(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*-?\s*{re.escape(key)}\s*:", line):
            return number
    return None


def parse_campaign(text: str, file: str, templates_dir: Path | None = None) -> Campaign:
    """Parse and validate one campaign file's text; `templates_dir` checks that templates exist."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise CampaignError(file, "", f"not valid YAML: {getattr(exc, 'problem', exc)}", line) from None
    except RecursionError:
        raise CampaignError(file, "", "not valid YAML: nested too deeply") from None
    data = _expect(data, dict, file, "(top level)", "a mapping of fields")
    known = {
        "id", "name", "description", "steps", "send_window", "frequency_cap_per_day",
        "email_requires_consent", "exit_on",
    }
    for key in data:
        if key not in known:
            raise CampaignError(file, _shown(key, 40).strip("'"),
                                f"unknown field; known fields: {', '.join(sorted(known))}",
                                _line_of(text, str(key)) if isinstance(key, str) else None)
    campaign_id = _text(data.get("id"), file, "id").strip()
    if not _ID.match(campaign_id):
        raise CampaignError(file, "id", "required: lowercase letters, digits and dashes", _line_of(text, "id"))
    name = _text(data.get("name"), file, "name") or campaign_id
    description = _text(data.get("description"), file, "description")

    window = SendWindow()
    if "send_window" in data:
        raw = _expect(data["send_window"], dict, file, "send_window", "a mapping")
        extra = set(raw) - {"start", "end", "skip_weekends", "email", "spread_minutes"}
        if extra:
            raise CampaignError(file, f"send_window.{sorted(map(str, extra))[0]}", "unknown field")
        spread = raw.get("spread_minutes", 20)
        if not isinstance(spread, int) or isinstance(spread, bool) or not 0 <= spread <= 240:
            raise CampaignError(file, "send_window.spread_minutes", "must be a whole number from 0 to 240")
        window = SendWindow(
            start=_parse_time(raw.get("start", "09:00"), file, "send_window.start"),
            end=_parse_time(raw.get("end", "20:00"), file, "send_window.end"),
            skip_weekends=bool(raw.get("skip_weekends", False)),
            email=bool(raw.get("email", True)),
            spread_minutes=spread,
        )
        if window.start >= window.end:
            raise CampaignError(file, "send_window", "start must be before end (windows cannot cross midnight)")

    cap = data.get("frequency_cap_per_day", 2)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise CampaignError(file, "frequency_cap_per_day", "must be a whole number of at least 1",
                            _line_of(text, "frequency_cap_per_day"))
    exit_on = data.get("exit_on", list(EXIT_CONDITIONS))
    _expect(exit_on, list, file, "exit_on", "a list")
    for condition in exit_on:
        if not isinstance(condition, str) or condition not in EXIT_CONDITIONS:
            raise CampaignError(file, "exit_on", f"{_shown(condition)} unknown; choose from {', '.join(EXIT_CONDITIONS)}")

    raw_steps = _expect(data.get("steps"), list, file, "steps", "a list of steps")
    if not raw_steps:
        raise CampaignError(file, "steps", "a campaign needs at least one step")
    steps: list[Step] = []
    seen: set[str] = set()
    for index, raw_step in enumerate(raw_steps):
        path = f"steps[{index}]"
        _expect(raw_step, dict, file, path, "a mapping with id, delay, channel, template")
        step_id = _text(raw_step.get("id"), file, f"{path}.id").strip()
        if not _ID.match(step_id):
            raise CampaignError(file, f"{path}.id", "required: lowercase letters, digits and dashes")
        if step_id in seen:
            raise CampaignError(file, f"{path}.id", f"duplicate step id {step_id!r}", _line_of(text, "id"))
        seen.add(step_id)
        path = f"steps[{index}] ({step_id})"
        extra = set(raw_step) - {"id", "delay", "channel", "template"}
        if extra:
            raise CampaignError(file, f"{path}.{sorted(map(str, extra))[0]}", "unknown field; a step has id, delay, channel, template")
        try:
            delay = parse_delay(raw_step.get("delay", "0m"))
        except ValueError as exc:
            raise CampaignError(file, f"{path}.delay", str(exc)) from None
        channel_name = _text(raw_step.get("channel"), file, f"{path}.channel").strip().lower()
        if channel_name not in (Channel.EMAIL, Channel.SMS):
            raise CampaignError(file, f"{path}.channel", f"{_shown(raw_step.get('channel'))} is not a channel; use email or sms")
        channel = Channel(channel_name)
        template = _text(raw_step.get("template"), file, f"{path}.template").strip()
        expected_prefix = "email/" if channel == Channel.EMAIL else "sms/"
        if not template.startswith(expected_prefix):
            raise CampaignError(file, f"{path}.template", f"an {channel} step's template must be under {expected_prefix}")
        if len(template) > MAX_TEMPLATE_PATH or not _TEMPLATE_PATH.fullmatch(template) or \
                ".." in template.split("/"):
            raise CampaignError(file, f"{path}.template",
                                f"{_shown(template)} is not a template name such as {expected_prefix}01-welcome.html")
        if templates_dir is not None and not (templates_dir / template).is_file():
            raise CampaignError(file, f"{path}.template", f"{template} does not exist in {templates_dir}")
        if steps and delay < steps[-1].delay:
            raise CampaignError(file, f"{path}.delay", "steps must be in order of delay")
        steps.append(Step(id=step_id, delay=delay, channel=channel, template=template))

    return Campaign(
        id=campaign_id,
        name=name,
        description=description,
        steps=tuple(steps),
        send_window=window,
        frequency_cap_per_day=cap,
        email_requires_consent=bool(data.get("email_requires_consent", True)),
        exit_on=tuple(exit_on),
        source_file=file,
    )


def load_campaigns(campaigns_dir: Path, templates_dir: Path | None = None) -> dict[str, Campaign]:
    """Every campaign in the folder, by id. Raises `CampaignError` on the first bad file."""
    if not campaigns_dir.is_dir():
        raise CampaignError(str(campaigns_dir), "", "campaigns folder not found (set DRIP_CAMPAIGNS_DIR)")
    campaigns: dict[str, Campaign] = {}
    for path in sorted([*campaigns_dir.glob("*.yaml"), *campaigns_dir.glob("*.yml")]):
        campaign = parse_campaign(path.read_text(encoding="utf-8"), str(path), templates_dir)
        if campaign.id in campaigns:
            raise CampaignError(str(path), "id", f"{campaign.id!r} is already defined in {campaigns[campaign.id].source_file}")
        campaigns[campaign.id] = campaign
    return campaigns


class UnknownCampaign(Exception):
    def __init__(self, campaign_id: str, known: list[str]) -> None:
        self.campaign_id = campaign_id
        listing = ", ".join(sorted(known)) or "none (add a file to campaigns/)"
        super().__init__(f"unknown campaign {campaign_id!r}; known campaigns: {listing}")


def get_campaign(campaigns: dict[str, Campaign], campaign_id: str) -> Campaign:
    try:
        return campaigns[campaign_id]
    except KeyError:
        raise UnknownCampaign(campaign_id, list(campaigns)) from None
