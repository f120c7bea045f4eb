"""Numbers in message text: find them ("60–80%", "20 million", "24/7") and compare them with the
numbers a clinician approved (``policy/approved_claims.yaml``, rule ``approved-claim``).

Kept apart from the guard's other rules: the claims library and the guard both read numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HYPHENS", "ApprovedNumber", "NumberMention", "extract_numbers", "numbers_of_claims", "parse_approved_number"]

HYPHENS = r"\-‐‑‒–—−"  # for use inside [...]: ASCII hyphen escaped, then Unicode dashes


@dataclass(frozen=True)
class NumberMention:
    """A number found in text."""

    text: str  # as written: "60–80%"
    value: str  # normalised: "60-80%", "20 million", "2-7", "$400", "24/7", "9:30"
    following: str  # the next few words, lower case, punctuation as spaces: "minute consultation"
    start: int
    end: int


@dataclass(frozen=True)
class ApprovedNumber:
    value: str  # normalised, as NumberMention.value
    words: str  # words that must follow it ("minute"); "" = any context
    origin: str  # "claim 'response-rate'" or "safe_numbers"
    entry: str  # as written in the file

    def approves(self, mention: NumberMention) -> bool:
        # The last word is a stem: "15 minute" approves "15 minutes".
        return mention.value == self.value and mention.following.startswith(self.words)


_N = r"\d+(?:[.,]\d+)*"
_PCT = {"en": r"\s?(?:%|percent\b|per\s+cent\b)", "es": r"\s?(?:%|por\s*ciento\b)"}
_TO = {"en": r"to", "es": r"a"}  # a range in words: "60 to 80", "60 a 80"
# Scale words, and the English word each stands for (values are compared in English terms, so
# "20 millones" is the approved "20 million").
_SCALES = {"en": {"hundred": "hundred", "thousand": "thousand", "million": "million", "billion": "billion"},
           "es": {"mil millones": "billion", "millones": "million", "millón": "million", "millon": "million",
                  "mil": "thousand", "cien": "hundred"}}


def _number_regex(language: str) -> re.Pattern[str]:
    scales = "|".join(sorted(_SCALES[language], key=len, reverse=True)).replace(" ", r"\s+")
    return re.compile(
        rf"""
        (?<![^\W_])                                 # not the tail of a word or number: B12, 2.5
        (?<![^\W_][{HYPHENS}.,/:])                 # nor of COVID-19, v1.2, 12/25, 9:30
        (?P<cur>[$€£])?
        (?P<a>{_N})
        (?: :(?P<min>\d\d)                          # 9:30
          | /(?P<per>\d+)                           # 24/7
          | (?P<apct>{_PCT[language]})?
            (?: (?:\s*[{HYPHENS}]\s*|\s+{_TO[language]}\s+)     # a range: 60-80, 60–80, 60 to 80
                [$€£]?(?P<b>{_N}) )?
        )
        (?P<pct>{_PCT[language]})?
        (?:\s+(?P<scale>{scales})\b)?
        """,
        re.VERBOSE | re.IGNORECASE,
    )


_NUMBER_RES = {language: _number_regex(language) for language in _SCALES}
_NUMBER_RE = _NUMBER_RES["en"]


def _plain_number(digits: str, language: str) -> str:
    """Digits as compared: separators of thousands dropped, a decimal point a point ("1,000" and
    "1.000" in Spanish are 1000; "7,5" in Spanish is "7.5")."""
    if language == "es":
        return digits.replace(".", "").replace(",", ".")
    return digits.replace(",", "")


def _value(m: re.Match[str], language: str = "en") -> str:
    value = (m["cur"] or "") + _plain_number(m["a"], language)
    if m["min"]:
        value += ":" + m["min"]
    elif m["per"]:
        value += "/" + m["per"]
    elif m["b"]:
        value += "-" + _plain_number(m["b"], language)
    if m["apct"] or m["pct"]:
        value += "%"
    if m["scale"]:
        value += " " + _SCALES[language][" ".join(m["scale"].lower().split())]
    return value


def _words_after(text: str, end: int) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text[end : end + 60].casefold()).split())


def _regex(language: str) -> re.Pattern[str]:
    return _NUMBER_RES.get(language, _NUMBER_RE)


def extract_numbers(text: str, language: str = "en") -> list[NumberMention]:
    """Every number in `text` (ranges, percentages, "20 million", "$400", "24/7"), in order.

    Digits only: spelled-out numbers ("two") are not found. Never raises for any string.
    `language` ("en", "es") says how it is written: "por ciento", "60 a 80", "20 millones" and
    the decimal comma in Spanish; values are normalised the same way in every language.
    """
    return [
        NumberMention(m.group(), _value(m, language), _words_after(text, m.end()), m.start(), m.end())
        for m in _regex(language).finditer(text)
    ]



def parse_approved_number(entry: object, origin: str, path: Path, language: str = "en") -> ApprovedNumber:
    """The approved number an entry of approved_claims.yaml names ("15 minute", "60-80%"), written
    in `language` (approved_claims.es.yaml: "20 millones").

    Raises ValueError naming `path` and `origin` when the entry does not start with a number."""
    text = str(entry).strip()
    m = _regex(language).match(text)
    if not m:
        raise ValueError(f"{path}: {origin}: {text!r} does not start with a number")
    return ApprovedNumber(
        value=_value(m, language), words=_words_after(text, m.end()), origin=origin, entry=text
    )


def numbers_of_claims(texts: Iterable[str], origin: str = "claims library",
                      language: str = "en") -> tuple[ApprovedNumber, ...]:
    """The numbers a set of approved claim sentences state, each with the word after it ("6
    infusions" approves "6 infusions", not "6 weeks"): a clinician who approves a sentence approves
    its figures, so the number rule does not refuse what the claims library allows."""
    approved = []
    for text in texts:
        for mention in extract_numbers(text, language):
            word = mention.following.split(" ", 1)[0] if mention.following else ""
            approved.append(ApprovedNumber(mention.value, word, origin, f"{mention.text} {word}".strip()))
    return tuple(approved)
