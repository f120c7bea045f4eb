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
_PCT = r"\s?(?:%|percent\b|per\s+cent\b)"
_NUMBER_RE = re.compile(
    rf"""
    (?<![^\W_])                                 # not the tail of a word or number: B12, 2.5
    (?<![^\W_][{HYPHENS}.,/:])                 # nor of COVID-19, v1.2, 12/25, 9:30
    (?P<cur>[$€£])?
    (?P<a>{_N})
    (?: :(?P<min>\d\d)                          # 9:30
      | /(?P<per>\d+)                           # 24/7
      | (?P<apct>{_PCT})?
        (?: (?:\s*[{HYPHENS}]\s*|\s+to\s+)     # a range: 60-80, 60–80, 60 to 80
            [$€£]?(?P<b>{_N}) )?
    )
    (?P<pct>{_PCT})?
    (?:\s+(?P<scale>hundred|thousand|million|billion)\b)?
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _value(m: re.Match[str]) -> str:
    value = (m["cur"] or "") + m["a"].replace(",", "")
    if m["min"]:
        value += ":" + m["min"]
    elif m["per"]:
        value += "/" + m["per"]
    elif m["b"]:
        value += "-" + m["b"].replace(",", "")
    if m["apct"] or m["pct"]:
        value += "%"
    if m["scale"]:
        value += " " + m["scale"].lower()
    return value


def _words_after(text: str, end: int) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text[end : end + 60].casefold()).split())


def extract_numbers(text: str) -> list[NumberMention]:
    """Every number in `text` (ranges, percentages, "20 million", "$400", "24/7"), in order.

    Digits only: spelled-out numbers ("two") are not found. Never raises for any string.
    """
    return [
        NumberMention(m.group(), _value(m), _words_after(text, m.end()), m.start(), m.end())
        for m in _NUMBER_RE.finditer(text)
    ]



def parse_approved_number(entry: object, origin: str, path: Path) -> ApprovedNumber:
    """The approved number an entry of approved_claims.yaml names ("15 minute", "60-80%").

    Raises ValueError naming `path` and `origin` when the entry does not start with a number."""
    text = str(entry).strip()
    m = _NUMBER_RE.match(text)
    if not m:
        raise ValueError(f"{path}: {origin}: {text!r} does not start with a number")
    return ApprovedNumber(
        value=_value(m), words=_words_after(text, m.end()), origin=origin, entry=text
    )


def numbers_of_claims(texts: Iterable[str], origin: str = "claims library") -> tuple[ApprovedNumber, ...]:
    """The numbers a set of approved claim sentences state, each with the word after it ("6
    infusions" approves "6 infusions", not "6 weeks"): a clinician who approves a sentence approves
    its figures, so the number rule does not refuse what the claims library allows."""
    approved = []
    for text in texts:
        for mention in extract_numbers(text):
            word = mention.following.split(" ", 1)[0] if mention.following else ""
            approved.append(ApprovedNumber(mention.value, word, origin, f"{mention.text} {word}".strip()))
    return tuple(approved)
