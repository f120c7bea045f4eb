"""Absolute and promissory language (rule ``absolute-claim``): refused outright, with the reason.

Cure, guarantee, proven, permanent, no side effects, 100%, safe for everyone, works for everyone,
miracle, FDA-approved — and their variants — are listed with a plain-language reason in
``policy/absolute_language.yaml`` (data, so wording can be added without code). Unlike a new claim,
which a clinician may approve, a sentence with any of them can be neither saved, approved nor added
to the claims library: the SPEC never allows them.

A rule marked ``negatable`` lets a negation among the three words before the match through ("is
not a cure", "we cannot guarantee results"): that is safety language, which is then an ordinary
medical sentence that needs the library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from patient_drip.content.languages import DEFAULT_LANGUAGE, policy_file_name

__all__ = ["ABSOLUTE_CLAIM", "AbsoluteMatch", "AbsoluteRule", "find_absolutes", "load_absolute_rules"]

ABSOLUTE_CLAIM = "absolute-claim"
DEFAULT_FILE = Path(__file__).resolve().parent.parent / "policy" / "absolute_language.yaml"


@dataclass(frozen=True, slots=True)
class AbsoluteRule:
    id: str
    reason: str
    negatable: bool
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class AbsoluteMatch:
    """One refused phrase: the words as written, their offsets in the checked text, and why."""

    rule: str
    words: str
    reason: str
    start: int
    end: int

    @property
    def message(self) -> str:
        return f'"{self.words}" is not allowed: it {self.reason}'


@dataclass(frozen=True, slots=True)
class AbsoluteRules:
    rules: tuple[AbsoluteRule, ...]
    negations: frozenset[str]


@lru_cache(maxsize=8)
def _load(path: Path) -> AbsoluteRules:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ValueError(f"{path}: the list of absolute wording is missing") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ValueError(f"{path}: needs a 'rules' list")
    rules = []
    for i, item in enumerate(doc["rules"]):
        if not isinstance(item, dict) or not all(item.get(k) for k in ("id", "reason", "patterns")):
            raise ValueError(f"{path}: rules[{i}] needs an id, a reason and patterns")
        try:
            regex = re.compile(r"(?<![^\W_])(?:" + "|".join(f"(?:{p})" for p in item["patterns"]) + ")",
                               re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{path}: rule {item['id']!r}: a pattern is not a valid regular expression: {exc}") from None
        rules.append(AbsoluteRule(str(item["id"]), str(item["reason"]), bool(item.get("negatable")), regex))
    negations = frozenset(str(w).casefold() for w in doc.get("negations") or [])
    return AbsoluteRules(tuple(rules), negations)


def _policy_path(policy_dir: Path | None, language: str) -> Path:
    default = DEFAULT_FILE.with_name(policy_file_name(DEFAULT_FILE.name, language))
    path = (policy_dir / default.name) if policy_dir else default
    return (path if path.is_file() else default).resolve()


def load_absolute_rules(policy_dir: Path | None = None, language: str = DEFAULT_LANGUAGE) -> AbsoluteRules:
    """The rules from ``absolute_language.yaml`` in `policy_dir`; the shipped rules when
    `policy_dir` is None or has no such file. Cached per file. Raises ValueError naming the file
    and the rule.

    Another `language` ("es"): that language's rules (``absolute_language.es.yaml``, the shipped
    one when `policy_dir` has none) followed by the English ones, whose negations count too: an
    English promise left in a Spanish message is refused as well."""
    english = _load(_policy_path(policy_dir, DEFAULT_LANGUAGE))
    if language == DEFAULT_LANGUAGE:
        return english
    return _merged(_load(_policy_path(policy_dir, language)), english)


@lru_cache(maxsize=8)
def _merged(first: AbsoluteRules, then: AbsoluteRules) -> AbsoluteRules:
    return AbsoluteRules(first.rules + then.rules, first.negations | then.negations)


def _negated(text: str, start: int, negations: frozenset[str]) -> bool:
    before = re.findall(r"[\w']+", text[:start].replace("’", "'").casefold())[-3:]
    return any(word in negations or word.endswith("n't") for word in before)


def find_absolutes(text: str, rules: AbsoluteRules) -> list[AbsoluteMatch]:
    """Every refused phrase in `text`, in order (one per place: the first rule that matches there)."""
    found: list[AbsoluteMatch] = []
    for rule in rules.rules:
        for m in rule.regex.finditer(text):
            if rule.negatable and _negated(text, m.start(), rules.negations):
                continue
            if any(f.start < m.end() and m.start() < f.end for f in found):
                continue
            found.append(AbsoluteMatch(rule.id, m.group(), rule.reason, m.start(), m.end()))
    return sorted(found, key=lambda f: f.start)
