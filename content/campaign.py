"""Campaign definitions: YAML files in `campaigns/` that marketing can read and edit.

Loaded into frozen objects and validated; every error names the file, the field and the problem.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Any

import yaml

from patient_drip.content.campaign_fields import (
    ID_PATTERN as _ID,
    MAX_DELAY,
    CampaignError,
    CampaignErrors,
    expect as _expect,
    line_of as _line_of,
    line_of_step,
    parse_delay,
    shown as _shown,
    step_ref,
    text_field as _text,
)
from patient_drip.content.journey_parse import (
    parse_holdout,
    parse_languages,
    parse_personas,
    parse_reentry,
    parse_step,
)
from patient_drip.content.campaign_model import EXIT_CONDITIONS, Campaign, SendWindow, Step
from patient_drip.content.journey_check import journey_problems
from patient_drip.content.journey_types import Holdout, Reentry

# booked / unsubscribed end a journey as before; staff_stop (staff end it) always does and may be
# listed to say so; crisis ends it instead of pausing it (`contacts.enrollment.pause_for_crisis`).
DEFAULT_EXITS = ("booked", "unsubscribed")
__all__ = ["Campaign", "CampaignError", "CampaignErrors", "SendWindow", "Step", "MAX_DELAY", "parse_delay",
           "parse_campaign", "load_campaigns", "get_campaign", "UnknownCampaign"]


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
        "email_requires_consent", "exit_on", "languages", "holdout", "reentry", "on_cancel",
        "pause_on_reply", "personas",
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
    exit_on = data.get("exit_on", list(DEFAULT_EXITS))
    _expect(exit_on, list, file, "exit_on", "a list")
    for condition in exit_on:
        if not isinstance(condition, str) or condition not in EXIT_CONDITIONS:
            raise CampaignError(file, "exit_on", f"{_shown(condition)} unknown; choose from {', '.join(EXIT_CONDITIONS)}")
    if "unsubscribed" not in exit_on:
        raise CampaignError(file, "exit_on", "must include unsubscribed: nobody is messaged after opting out")

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
            raise CampaignError(file, f"{path}.id", f"duplicate step id {step_id!r}", line_of_step(text, step_id))
        seen.add(step_id)
        path = f"steps[{index}] ({step_id})"
        try:
            parts = parse_step(raw_step, file, path)
        except CampaignError as exc:
            raise CampaignError(exc.file, exc.field_path, exc.problem, exc.line or line_of_step(text, step_id)) from None
        steps.append(Step(id=step_id, delay=parts.delay, channel=parts.channel, template=parts.template,
                          kind=parts.kind, next=parts.next, variants=parts.variants, rules=parts.rules,
                          otherwise=parts.otherwise, wait_for=parts.wait_for, timeout=parts.timeout,
                          on_event=parts.on_event, on_timeout=parts.on_timeout, exit_reason=parts.exit_reason))

    pause_on_reply = data.get("pause_on_reply", False)
    if not isinstance(pause_on_reply, bool):
        raise CampaignError(file, "pause_on_reply", "must be true or false", _line_of(text, "pause_on_reply"))
    campaign = Campaign(
        id=campaign_id,
        name=name,
        description=description,
        steps=tuple(steps),
        send_window=window,
        frequency_cap_per_day=cap,
        email_requires_consent=bool(data.get("email_requires_consent", True)),
        exit_on=tuple(exit_on),
        source_file=file,
        languages=parse_languages(data["languages"], file) if "languages" in data else ("en",),
        holdout=parse_holdout(data["holdout"], file) if "holdout" in data else Holdout(),
        reentry=parse_reentry(data["reentry"], file) if "reentry" in data else Reentry(),
        on_cancel=step_ref(data["on_cancel"], file, "on_cancel") if data.get("on_cancel") is not None else None,
        pause_on_reply=pause_on_reply,
        personas=parse_personas(data["personas"], file) if "personas" in data else {},
    )
    problems = journey_problems(campaign, templates_dir, text)
    if problems:
        raise problems[0] if len(problems) == 1 else CampaignErrors(problems)
    return campaign


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
