"""A word-level diff of two rendered texts, with the sentences that need a clinician marked.

What the clinician reviews is what a patient reads, not template source: the live version's and
the draft's rendered visible text (`content.claims.sentences_of`) are compared word by word with
`difflib.SequenceMatcher` (stdlib; no junk heuristic, so short common words still align). Each
piece of the result says whether it was added, removed or kept, and whether it lies in a sentence
the claims check flagged (new claim, or refused wording), so the page can highlight exactly the
words that changed inside the sentences that need review.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DiffPiece", "word_diff"]

_TOKEN = re.compile(r"\n|[^\S\n]+|[^\s]+")


@dataclass(frozen=True, slots=True)
class DiffPiece:
    kind: str  # "same", "add", "del", "break" (a line break between blocks)
    text: str
    flag: str = ""  # "new" or "refused" when it lies in a flagged sentence of the new text


def _tokens(text: str) -> list[tuple[str, int]]:
    return [(m.group(), m.start()) for m in _TOKEN.finditer(text)]


def _flag_at(offset: int, spans: list[tuple[int, int, str]]) -> str:
    return next((kind for start, end, kind in spans if start <= offset < end), "")


def word_diff(old: str, new: str, flagged: Iterable[tuple[int, int, str]] = ()) -> list[DiffPiece]:
    """The pieces of `new` compared with `old`, word by word (whitespace kept as written; a line
    break is its own piece). `flagged`: (start, end, kind) spans of `new` to mark. Adjacent pieces
    of the same kind and flag are merged. An empty `old` makes everything an addition."""
    spans = list(flagged)
    a, b = _tokens(old), _tokens(new)
    matcher = difflib.SequenceMatcher(None, [t for t, _ in a], [t for t, _ in b], autojunk=False)
    pieces: list[DiffPiece] = []

    def put(kind: str, text: str, flag: str = "") -> None:
        if text == "\n":
            pieces.append(DiffPiece("break", text))
        elif pieces and pieces[-1].kind == kind and pieces[-1].flag == flag:
            pieces[-1] = DiffPiece(kind, pieces[-1].text + text, flag)
        else:
            pieces.append(DiffPiece(kind, text, flag))

    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            for text, _ in a[a1:a2]:
                if text != "\n":  # a removed line break would only split the removed words
                    put("del", text)
        if op in ("insert", "replace"):
            for text, at in b[b1:b2]:
                put("add", text, _flag_at(at, spans))
        if op == "equal":
            for text, at in b[b1:b2]:
                put("same", text, _flag_at(at, spans))
    return pieces
