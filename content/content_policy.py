"""The clinic's content policy as loaded: restricted terms, approved claims and numbers, safe
numbers, absolute wording and medical terms, per language (`load_policy`). What the rules in
`content.guard` check messages against; read once per folder and language.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from patient_drip.content.absolutes import AbsoluteRules, load_absolute_rules
from patient_drip.content.claims import load_medical_terms
from patient_drip.content.languages import DEFAULT_LANGUAGE, accent_insensitive, policy_file_name
from patient_drip.content.numbers import HYPHENS as _HYPHENS
from patient_drip.content.numbers import ApprovedNumber, NumberMention, parse_approved_number

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"


@dataclass(frozen=True)
class RestrictedTerm:
    term: str  # as written in restricted_terms.yaml
    category: str  # "diagnoses", "drugs", ...
    regex: re.Pattern[str]


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    numbers: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class SafeNumber:
    number: str
    reason: str


@dataclass(frozen=True)
class ContentPolicy:
    restricted_terms: tuple[RestrictedTerm, ...]
    allowed_words: frozenset[str]
    claims: tuple[Claim, ...]
    safe_numbers: tuple[SafeNumber, ...]
    approved_numbers: tuple[ApprovedNumber, ...]
    absolutes: AbsoluteRules  # refused wording (absolute_language.yaml)
    medical_terms: re.Pattern[str]  # what makes a sentence medical (medical_terms.txt)
    language: str = DEFAULT_LANGUAGE  # the language of the messages it checks ("en", "es")
    policy_dir: Path | None = None  # where it was read from (resolved), for `in_language`

    def in_language(self, language: str) -> ContentPolicy:
        """The policy for messages in `language`, read from the same folder (this one when it is
        already that language's). Cached: cheap to ask for every message."""
        if language == self.language or self.policy_dir is None:
            return self
        return _load_policy(self.policy_dir, language)

    def restricted_in(self, text: str) -> list[tuple[int, str, RestrictedTerm]]:
        """(offset, word as written, term) for every restricted word in `text`, in text order."""
        # A quick search that can only rule terms out comes first (`_prefilter`): most texts have none.
        # (Another language's terms match accented letters the ASCII fold keeps: no quick search.)
        prefilter = _prefilter(self.restricted_terms) if self.language == DEFAULT_LANGUAGE else None
        if prefilter is not None and not prefilter.search(text.translate(_ASCII_FOLD)):
            return []
        matches = sorted(
            (
                (m.start(), m.end(), m.group(), term)
                for term in self.restricted_terms
                for m in term.regex.finditer(text)
            ),
            key=lambda f: (f[0], -f[1]),
        )
        found, covered = [], -1
        for start, end, word, term in matches:
            # "anti-depressants" is one word to report, though "anti-depress" and "depress" both match.
            if end > covered and word.casefold() not in self.allowed_words:
                found.append((start, word, term))
                covered = end
        return found

    def approval(self, mention: NumberMention) -> ApprovedNumber | None:
        return next((a for a in self.approved_numbers if a.approves(mention)), None)


# `restricted_in` is asked of every message the dispatcher sends, and a case-insensitive search of
# every term costs about 0.3 ms a text (Unicode case folding at each position). Almost no text
# has a term, so a cheaper search that can only say "none" when there is none comes first: the
# text with its letters mapped to lower-case ASCII the way `re.IGNORECASE` matches them, searched
# case-sensitively for the lower-cased terms. Under `re.IGNORECASE` an ASCII letter matches only
# itself, its other case and these four (checked over every code point): İ ı ſ K.
_ASCII_FOLD = str.maketrans({**{c: c.lower() for c in string.ascii_uppercase},
                             "\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
# id of a policy's terms → (those terms, their quick pattern); the terms are kept so the id stays theirs.
_PREFILTERS: dict[int, tuple[tuple[RestrictedTerm, ...], re.Pattern[str] | None]] = {}


def _prefilter(terms: tuple[RestrictedTerm, ...]) -> re.Pattern[str] | None:
    """A case-sensitive pattern that finds, in `_ASCII_FOLD`ed text, every place one of `terms`
    could match (a superset); None when a term is not ASCII (then every text is searched in full)."""
    known = _PREFILTERS.get(id(terms))
    if known is not None and known[0] is terms:
        return known[1]
    words = [term.term for term in terms]
    pattern = None
    if all(word.isascii() for word in words):
        # The terms' own patterns without the look-behind and the word tail (neither can make a
        # match where the core has none), lower-cased.
        pattern = re.compile("|".join(_term_core(word.lower()) for word in words) or r"(?!)")
    _PREFILTERS[id(terms)] = (terms, pattern)
    return pattern


def _term_core(term: str) -> str:
    """The words of `term`, escaped; a hyphen in an entry also matches a space or nothing
    ("self-harm", "self harm", "selfharm")."""
    words = [re.escape(w) for w in re.split(rf"[\s{_HYPHENS}]+", term.strip()) if w]
    glue = rf"[\s{_HYPHENS}]*" if re.search(rf"[{_HYPHENS}]", term) else rf"[\s{_HYPHENS}]+"
    return glue.join(words)


def _term_regex(term: str, language: str = DEFAULT_LANGUAGE) -> re.Pattern[str]:
    core = _term_core(term)
    if language != DEFAULT_LANGUAGE:  # "depresi" also matches "depresión", "mania" "manía"
        core = accent_insensitive(core)
    return re.compile(rf"(?<![^\W_]){core}[^\W_]*", re.IGNORECASE)


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: policy file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def _restricted_terms(terms_path: Path, language: str) -> tuple[list[RestrictedTerm], frozenset[str]]:
    terms_doc = _load_yaml(terms_path) or {}
    if not isinstance(terms_doc, dict) or not isinstance(terms_doc.get("terms"), dict):
        raise ValueError(f"{terms_path}: needs a 'terms' mapping of category -> list of terms")
    restricted = []
    for category, entries in terms_doc["terms"].items():
        if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
            raise ValueError(f"{terms_path}: terms.{category} must be a list of words")
        restricted += [RestrictedTerm(e.strip(), str(category), _term_regex(e, language)) for e in entries]
    allowed = frozenset(str(w).casefold() for w in terms_doc.get("allowed_words") or [])
    return restricted, allowed


def _claims(claims_path: Path, language: str) -> tuple[list[Claim], list[ApprovedNumber]]:
    claims_doc = _load_yaml(claims_path) or {}
    if not isinstance(claims_doc, dict):
        raise ValueError(f"{claims_path}: needs 'claims' and 'safe_numbers' lists")
    claims: list[Claim] = []
    approved: list[ApprovedNumber] = []
    for i, item in enumerate(claims_doc.get("claims") or []):
        fields = ("id", "text", "numbers", "source")
        missing = [k for k in fields if not isinstance(item, dict) or k not in item]
        if missing:
            raise ValueError(f"{claims_path}: claims[{i}] is missing {', '.join(missing)}")
        if not isinstance(item["numbers"], list):
            raise ValueError(f"{claims_path}: claim {item['id']!r}: numbers must be a list")
        claim = Claim(
            str(item["id"]), str(item["text"]), tuple(map(str, item["numbers"])), str(item["source"])
        )
        claims.append(claim)
        approved += [parse_approved_number(n, f"claim {claim.id!r}", claims_path, language) for n in claim.numbers]
    return claims, approved


def _safe_numbers(claims_path: Path) -> tuple[list[SafeNumber], list[ApprovedNumber]]:
    claims_doc = _load_yaml(claims_path) or {}
    safe: list[SafeNumber] = []
    approved: list[ApprovedNumber] = []
    for i, item in enumerate(claims_doc.get("safe_numbers") or []):
        if not isinstance(item, dict) or not item.get("number") or not item.get("reason"):
            raise ValueError(f"{claims_path}: safe_numbers[{i}] needs a number and a reason")
        safe.append(SafeNumber(str(item["number"]), str(item["reason"])))
        approved.append(parse_approved_number(item["number"], "safe_numbers", claims_path))
    return safe, approved


def _language_file(policy_dir: Path, name: str, language: str) -> Path:
    """`name` in `language` (`policy_file_name`) in `policy_dir`, or the shipped one when the
    folder has none (a clinic's own policy folder from before the language)."""
    path = policy_dir / policy_file_name(name, language)
    return path if language == DEFAULT_LANGUAGE or path.is_file() else DEFAULT_POLICY_DIR / path.name


@lru_cache(maxsize=8)
def _load_policy(policy_dir: Path, language: str = DEFAULT_LANGUAGE) -> ContentPolicy:
    restricted, allowed = _restricted_terms(policy_dir / "restricted_terms.yaml", language)
    claims_path = policy_dir / "approved_claims.yaml"
    claims, approved = _claims(claims_path, DEFAULT_LANGUAGE)
    safe, safe_approved = _safe_numbers(claims_path)
    if language != DEFAULT_LANGUAGE:
        # The language's own terms come on top of the English ones (an English drug name in a
        # Spanish text is as indiscreet); its numbers are its claims' (as written in it), and the
        # safe numbers (988, 911) are the same in every language.
        more, more_allowed = _restricted_terms(_language_file(policy_dir, "restricted_terms.yaml", language), language)
        restricted, allowed = more + restricted, allowed | more_allowed
        claims, approved = _claims(_language_file(policy_dir, "approved_claims.yaml", language), language)
    return ContentPolicy(tuple(restricted), allowed, tuple(claims), tuple(safe), tuple(approved + safe_approved),
                         load_absolute_rules(policy_dir, language), load_medical_terms(policy_dir, language),
                         language, policy_dir)


def load_policy(policy_dir: Path | None = None, language: str = DEFAULT_LANGUAGE) -> ContentPolicy:
    """Read ``restricted_terms.yaml`` and ``approved_claims.yaml`` from `policy_dir` (default: the
    repository's policy/). Cached per directory. Raises ValueError naming the file and entry.

    `language` ("es"): the policy for messages in that language (`ContentPolicy.in_language`):
    its restricted terms on top of the English ones, its medical terms, absolute wording and
    approved numbers (``*.es.*`` files beside the English ones; the shipped ones when the folder
    has none)."""
    return _load_policy((policy_dir or DEFAULT_POLICY_DIR).resolve(), language)
