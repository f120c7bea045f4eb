"""The law's limits on texting, by where a number presumes its owner lives.

`policy/texting_rules.yaml` holds the rules as data, with their sources: a federal baseline
(8:00–21:00 local) for every number, and stricter state rules (Florida, Oklahoma, Maryland:
8:00–20:00 and at most three texts in a rolling 24 hours; Washington: 8:00–20:00) presumed from the
area code of a +1 number, as those laws presume.

The file is read from the package's own `policy/` folder, not from `DRIP_POLICY_DIR`: these are
legal minimums, and a clinic's configuration may narrow them (through a campaign's send window)
but never loosen them. Pure functions; imports only `content.campaign`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import time
from functools import lru_cache
from pathlib import Path

import yaml

from patient_drip.content.campaign import SendWindow

RULES_FILE = Path(__file__).resolve().parent.parent / "policy" / "texting_rules.yaml"
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class TextingRule:
    """One jurisdiction's limits: texts only between `start` and `end` local time, and (when set)
    at most `max_per_24h` texts in any rolling 24 hours."""

    id: str
    name: str
    source: str
    start: time
    end: time
    max_per_24h: int | None = None

    def describe(self) -> str:
        """Plain words for the timeline: 'Florida Telephone Solicitation Act (Fla. Stat. …): texts
        only 08:00–20:00 local time, at most 3 in 24 hours'."""
        limit = f", at most {self.max_per_24h} in 24 hours" if self.max_per_24h else ""
        return f"{self.name} ({self.source}): texts only {self.start:%H:%M}–{self.end:%H:%M} local time{limit}"


@dataclass(frozen=True, slots=True)
class TextingRules:
    """The baseline for every number and the state rules keyed by +1 area code."""

    baseline: TextingRule
    by_area_code: dict[str, TextingRule]

    def for_number(self, phone: str | None) -> TextingRule:
        """The rule for an E.164 number: its state's, presumed from a +1 area code, else the baseline."""
        if phone and phone.startswith("+1") and len(phone) == 12:
            return self.by_area_code.get(phone[2:5], self.baseline)
        return self.baseline

    def all(self) -> list[TextingRule]:
        """The baseline and every state rule, once each."""
        seen = {rule.id: rule for rule in self.by_area_code.values()}
        return [self.baseline, *seen.values()]


class TextingRulesError(ValueError):
    """The rules file is malformed; the message names the file and the entry."""


def _window(raw: object, where: str) -> tuple[time, time]:
    match = _WINDOW.match(str(raw or ""))
    if not match:
        raise TextingRulesError(f"{RULES_FILE.name}: {where}.window: expected HH:MM-HH:MM, got {raw!r}")
    start = time(int(match[1]), int(match[2]))
    end = time(int(match[3]), int(match[4]))
    if start >= end:
        raise TextingRulesError(f"{RULES_FILE.name}: {where}.window: the start must be before the end")
    return start, end


def _rule(raw: dict[str, object], where: str) -> TextingRule:
    for key in ("id", "name", "source"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise TextingRulesError(f"{RULES_FILE.name}: {where}.{key}: required text")
    start, end = _window(raw.get("window"), where)
    limit = raw.get("max_per_24h")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise TextingRulesError(f"{RULES_FILE.name}: {where}.max_per_24h: a whole number of at least 1")
    return TextingRule(id=str(raw["id"]), name=str(raw["name"]), source=str(raw["source"]), start=start, end=end,
                       max_per_24h=limit)


def parse_texting_rules(data: object) -> TextingRules:
    """Validate the YAML document; raises `TextingRulesError` naming the entry. Every state rule must
    be at least as strict as the baseline (a state law never allows more than federal law)."""
    if not isinstance(data, dict) or not isinstance(data.get("baseline"), dict):
        raise TextingRulesError(f"{RULES_FILE.name}: a 'baseline' rule is required")
    baseline = _rule(data["baseline"], "baseline")
    by_area_code: dict[str, TextingRule] = {}
    for index, raw in enumerate(data.get("states") or []):
        where = f"states[{index}]"
        if not isinstance(raw, dict):
            raise TextingRulesError(f"{RULES_FILE.name}: {where}: expected a mapping")
        rule = _rule(raw, where)
        rule = replace(rule, start=max(rule.start, baseline.start), end=min(rule.end, baseline.end))
        codes = raw.get("area_codes")
        if not isinstance(codes, list) or not codes:
            raise TextingRulesError(f"{RULES_FILE.name}: {where}.area_codes: a list of area codes is required")
        for code in codes:
            text = str(code)
            if not re.fullmatch(r"[2-9]\d\d", text):
                raise TextingRulesError(f"{RULES_FILE.name}: {where}.area_codes: {code!r} is not an area code")
            if text in by_area_code:
                raise TextingRulesError(f"{RULES_FILE.name}: {where}.area_codes: {text} is listed twice")
            by_area_code[text] = rule
    return TextingRules(baseline=baseline, by_area_code=by_area_code)


@lru_cache(maxsize=1)
def texting_rules() -> TextingRules:
    """The shipped rules (read once per process)."""
    return parse_texting_rules(yaml.safe_load(RULES_FILE.read_text(encoding="utf-8")))


def text_window(window: SendWindow, rule: TextingRule) -> SendWindow:
    """The strictest of a campaign's window and a jurisdiction's: the later start, the earlier end.
    Empty when they do not overlap (`window_overlaps` tells; campaign checks refuse that)."""
    return replace(window, start=max(window.start, rule.start), end=min(window.end, rule.end))


def window_overlaps(window: SendWindow, rule: TextingRule) -> bool:
    """Whether a text can go out at all under both the campaign's window and the rule."""
    narrowed = text_window(window, rule)
    return narrowed.start < narrowed.end


def rules_without_overlap(window: SendWindow) -> list[TextingRule]:
    """The rules under which a campaign with this window could never text anyone."""
    return [rule for rule in texting_rules().all() if not window_overlaps(window, rule)]


def narrowing_rule(window: SendWindow, rule: TextingRule) -> TextingRule | None:
    """`rule` when it is what makes the text window narrower than the campaign's own, else None
    (so the timeline names the law only when the law, not the campaign, moved the text)."""
    return rule if rule.start > window.start or rule.end < window.end else None
