"""Classify an inbound SMS reply: carrier keyword, crisis, free-text opt-out, or anything else.

Order of precedence (first that applies wins):

1. An exact carrier keyword - the whole message is STOP, START, HELP, ... or a Spanish one (ALTO,
   AYUDA, SI, ... see the sets below), ignoring case, accents, surrounding whitespace, punctuation and emoji. Carriers and Twilio act on these
   keywords themselves, so our answer must agree with theirs.
2. CRISIS - a phrase from ``policy/crisis_phrases.txt`` not covered by
   ``policy/crisis_exclusions.txt``. It beats everything except an exact keyword: "stop texting me,
   I want to die" is a crisis first. A crisis reply that *also* asks to stop ("stop texting me")
   carries that opt-out in `Classification.opt_out`: both are acted on, the opt-out is never lost.
3. OPT_OUT_TEXT - an opt-out in the person's own words (``policy/optout_phrases.txt``, minus
   ``policy/optout_exclusions.txt``), or a stretched keyword such as "STOPPP".
4. OTHER.

Matching works on a normalised form of the text (see `normalise`): Unicode NFKC, case folded,
accents and apostrophes removed ("can't" == "cant"), letters repeated three or more times squeezed
to one ("dieee" == "die"), and every run of anything that is not a letter or digit (punctuation,
emoji, symbols) turned into one space. The phrase files describe their own pattern syntax in their
headers; it is meant to be edited by a clinician, not a programmer.

People who do not want a filter to notice them write around it: "k1ll myself", "$uicide",
"k i l l myself", "k.i.l.l", "wanna diee". So for a crisis each message is also read in *decoded*
forms (see `_readings`): letters spelled out one by one joined into a word, leetspeak inside words
turned back into letters (1 read once as i and once as l), and each of those with doubled letters
squeezed (matched against the phrase lines squeezed the same way). A word spelled out together
with its neighbours ("q u i e r o m o r i r") is searched for the phrase lines with their spaces
taken out. A crisis phrase found in any reading counts (an exclusion only excuses a match within
the same reading), so decoding can add a crisis match, never take one away: a missed crisis is
the costly error, a false alarm costs staff a glance. Opt-outs are read as written only, so
"s t o p" stays a message for staff, as carriers read it.

Inputs longer than `MAX_REPLY_CHARS` are cut to that length before anything else, so a hostile or
broken webhook payload cannot make classification slow. A real SMS is at most 1,600 characters
(Twilio's limit for a concatenated message), so nothing a person can send is lost.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

__all__ = [
    "HELP_KEYWORDS",
    "MAX_REPLY_CHARS",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SPANISH_KEYWORDS",
    "YES_WORDS",
    "Classification",
    "PhraseLists",
    "PhrasePattern",
    "ReplyKind",
    "classify_reply",
    "keyword_language",
    "load_phrase_lists",
    "normalise",
]

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"
MAX_REPLY_CHARS = 2000



class ReplyKind(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    CRISIS = "crisis"
    OPT_OUT_TEXT = "opt_out_text"
    OTHER = "other"


# Twilio's default opt-out / opt-in / help keywords (CTIA), plus REVOKE and OPTOUT, which the FCC's
# 2024 consent-revocation rule names as words that revoke consent.
OPT_OUT_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
OPT_IN_KEYWORDS = frozenset({"start", "unstop", "yes"})
HELP_KEYWORDS = frozenset({"help", "info"})
# Their Spanish counterparts, written without accents (a keyword is matched with accents removed:
# "SÍ" == "si", "Parár" == "parar"). Like the English ones they count only as the whole message:
# "fin de semana" or "baja la dosis?" is a message for staff (unless the free-text opt-out lines
# say otherwise). Twilio does not act on these itself, so we confirm them (`web.webhooks`).
SPANISH_OPT_OUT_KEYWORDS = frozenset({"alto", "parar", "para", "cancelar", "detener", "baja", "fin"})
SPANISH_OPT_IN_KEYWORDS = frozenset({"comenzar", "iniciar", "si"})
SPANISH_HELP_KEYWORDS = frozenset({"ayuda"})
SPANISH_KEYWORDS = SPANISH_OPT_OUT_KEYWORDS | SPANISH_OPT_IN_KEYWORDS | SPANISH_HELP_KEYWORDS
# A YES to "confirm your request" (`contacts.intake`), in each language.
YES_WORDS = frozenset({"yes", "si"})
_KEYWORDS: dict[str, ReplyKind] = {
    **dict.fromkeys(OPT_OUT_KEYWORDS | SPANISH_OPT_OUT_KEYWORDS, ReplyKind.OPT_OUT),
    **dict.fromkeys(OPT_IN_KEYWORDS | SPANISH_OPT_IN_KEYWORDS, ReplyKind.OPT_IN),
    **dict.fromkeys(HELP_KEYWORDS | SPANISH_HELP_KEYWORDS, ReplyKind.HELP),
}


def keyword_language(keyword: str | None) -> str | None:
    """"es" for a Spanish keyword (as `Classification.matched` holds it), "en" for an English one,
    None for anything else: the language to answer a number we do not know in."""
    if keyword in SPANISH_KEYWORDS:
        return "es"
    return "en" if keyword in _KEYWORDS else None


@dataclass(frozen=True)
class Classification:
    kind: ReplyKind
    matched: str | None  # the keyword, or the phrase-file line as written, that decided `kind`
    # For a CRISIS reply: the opt-out phrase it also contains ("stop texting me, I want to die"),
    # else None. The patient asked for two things; the webhook does both.
    opt_out: str | None = None


@dataclass(frozen=True)
class PhrasePattern:
    """One line of a phrase file, compiled: as written, with doubled letters squeezed (matched
    against a message read the same way), and with the spaces taken out (searched for inside a
    word that was spelled out letter by letter, "q u i e r o m o r i r")."""

    text: str  # the line as written, shown to staff as the reason for a classification
    origin: str  # "crisis_phrases.txt:42"
    regex: re.Pattern[str]
    squeezed: re.Pattern[str] | None = None
    squashed: re.Pattern[str] | None = None

    def spans(self, normalised: str, *, squeezed: bool = False) -> list[tuple[int, int]]:
        regex = self.squeezed if squeezed and self.squeezed is not None else self.regex
        return [m.span() for m in regex.finditer(normalised)]


@dataclass(frozen=True)
class PhraseLists:
    crisis: tuple[PhrasePattern, ...]
    crisis_exclusions: tuple[PhrasePattern, ...]
    optout: tuple[PhrasePattern, ...]
    optout_exclusions: tuple[PhrasePattern, ...]


# --- normalisation ---------------------------------------------------------------------------

# Apostrophe look-alikes phones and keyboards produce; all are dropped so "don’t" == "dont".
_APOSTROPHES = dict.fromkeys(map(ord, "'’‘‛′`´ʼ＇"), None)
_SENTENCE_END = re.compile(r"[.!?;…\n\r]+")
_NOT_WORD = re.compile(r"[\W_]+")
_STRETCHED = re.compile(r"([^\W\d_])\1{2,}")  # a letter three or more times in a row
_DOUBLED = re.compile(r"([^\W\d_])\1+")  # a letter twice or more: "diee", "wantt"


def _visible(text: str) -> str:
    """`text` without invisible format characters (zero-width space/joiners, word joiner, BOM,
    soft hyphen, direction marks): pasted text and some keyboards put them inside words, and
    "k\u200bill" must read as "kill" -- a crisis or an opt-out must not hide behind them."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _words(text: str) -> str:
    text = unicodedata.normalize("NFKC", _visible(text)).casefold().translate(_APOSTROPHES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _STRETCHED.sub(r"\1", text)
    return _NOT_WORD.sub(" ", text).strip()


def _normalise_with_boundaries(body: str) -> tuple[str, tuple[int, ...]]:
    """`normalise(body)` plus the offsets of the spaces that stand where a sentence ended."""
    parts = [w for w in (_words(s) for s in _SENTENCE_END.split(body[:MAX_REPLY_CHARS])) if w]
    boundaries: list[int] = []
    pos = -1
    for part in parts[:-1]:
        pos += len(part) + 1
        boundaries.append(pos)
    # NFKC can expand a character up to 18-fold; cap again so matching time stays bounded.
    return " ".join(parts)[: 4 * MAX_REPLY_CHARS], tuple(boundaries)


# Leetspeak: digits and symbols that stand for letters inside a word ("k1ll", "$uicide", "d13",
# "ki||"). Only tokens that also hold a letter are decoded, so "30 pills" and "call 911" keep
# their numbers.
_LEET = str.maketrans({"3": "e", "0": "o", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "l"})
_LEET_ONE = ("i", "l")  # "k1ll" is i, "ki11" is l: read both ways
_LEET_CHARS = frozenset("13450@$|7")
_TOKEN = re.compile(r"\S+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_INNER_BANG = re.compile(r"(?<=[^\W\d_])!(?=[^\W\d_])")  # "k!ll"; elsewhere "!" ends a sentence
# Three or more single letters (or leet characters) with the same little gap of spacing or
# punctuation between each: "k i l l", "k.i.l.l", "s-u-i-c-i-d-e", "k 1 l l". The gap must repeat
# exactly, so "k.i.l.l m.y.s.e.l.f" reads as two words, not one.
_SPELLED_CHAR = r"(?:[^\W\d_]|[13450@$|7])"
_SPELLED = re.compile(
    rf"(?<![\w@$|]){_SPELLED_CHAR}([\s.\-_*·,+~/]{{1,3}}){_SPELLED_CHAR}(?:\1{_SPELLED_CHAR})+(?![\w@$|])"
)


def _decode_leet(text: str, one: str) -> str:
    """`text` with leetspeak inside lettered tokens turned back into letters, "1" read as `one`."""

    def token(match: re.Match[str]) -> str:
        word = match.group()
        if not _HAS_LETTER.search(word) or _LEET_CHARS.isdisjoint(word):
            return word
        return word.translate(_LEET).replace("1", one)

    return _TOKEN.sub(token, _INNER_BANG.sub("i", text))


@dataclass(frozen=True)
class _Reading:
    """One way of reading a message: its normalised text and sentence ends; `squeezed` when every
    doubled letter was squeezed too (then it is matched against the squeezed patterns)."""

    text: str
    boundaries: tuple[int, ...]
    squeezed: bool = False


def _readings(body: str) -> tuple[list[_Reading], list[str]]:
    """The readings a message is matched in for a crisis: as written first, then decoded
    (spelled-out letters joined; leetspeak with 1 read as i, then as l; then doubled letters
    squeezed, "wanna diee"). Also the words that were spelled out letter by letter, joined and
    decoded, for the squashed patterns."""
    body = body[:MAX_REPLY_CHARS]
    readings = [_Reading(*_normalise_with_boundaries(body))]
    text = unicodedata.normalize("NFKC", _visible(body)).casefold()
    spelled: list[str] = []

    def join(match: re.Match[str]) -> str:
        spelled.append(match.group().replace(match.group(1), ""))
        return spelled[-1]

    joined = _SPELLED.sub(join, text)
    sources = [text] + [_decode_leet(joined, one) for one in _LEET_ONE]
    for source in sources[1:]:
        decoded = _Reading(*_normalise_with_boundaries(source))
        if decoded not in readings:
            readings.append(decoded)
    for source in sources:
        squeezed = _Reading(*_normalise_with_boundaries(_DOUBLED.sub(r"\1", source)), squeezed=True)
        if squeezed not in readings:
            readings.append(squeezed)
    runs = [_words(_decode_leet(run, one)).replace(" ", "") for run in spelled for one in _LEET_ONE]
    return readings, list(dict.fromkeys(runs))


def normalise(body: str) -> str:
    """The form phrase patterns are matched against: lower-case words separated by single spaces.

    Only the first `MAX_REPLY_CHARS` characters of `body` are looked at.
    """
    return _normalise_with_boundaries(body)[0]


# --- phrase files ----------------------------------------------------------------------------

_GAP = "..."
_NUMBER = "<number>"
_MAX_GAP_WORDS = 2


def _compile_pattern(line: str, origin: str) -> PhrasePattern:
    """Compile one phrase-file line; ValueError naming `origin` (file:line) when it is malformed."""
    if "#" in line:
        raise ValueError(f"{origin}: comments must be on a line of their own, starting with #: {line!r}")
    pieces: list[str] = []  # regex for each word or gap, in order
    kinds: list[str] = []
    for raw in line.split():
        if raw == _GAP:
            pieces.append(rf"(?:[^ ]+ ){{0,{_MAX_GAP_WORDS}}}")
            kinds.append("gap")
            continue
        if raw.casefold() == _NUMBER:
            pieces.append(r"[0-9][^ ]*")
            kinds.append("word")
            continue
        wildcard = raw.endswith("*")
        words = _words(raw.rstrip("*")).split()
        if not words or "*" in raw.rstrip("*"):
            raise ValueError(
                f"{origin}: {raw!r} is not a word; write whole words, with * only at the end of a word"
            )
        for i, word in enumerate(words):
            suffix = r"[^ ]*" if wildcard and i == len(words) - 1 else ""
            pieces.append(re.escape(word) + suffix)
            kinds.append("word")
    if not pieces:
        raise ValueError(f"{origin}: empty pattern")
    if kinds[0] == "gap" or kinds[-1] == "gap" or any(a == b == "gap" for a, b in zip(kinds, kinds[1:])):
        raise ValueError(f"{origin}: '...' must stand between two words: {line!r}")
    squeezed = [_DOUBLED.sub(r"\1", piece) if kind == "word" else piece for piece, kind in zip(pieces, kinds)]
    # Spelled-out text has no spaces left: the words run together, a gap is a few more letters.
    squashed = "".join(piece if kind == "word" else r"[^ ]{0,16}" for piece, kind in zip(pieces, kinds))
    return PhrasePattern(text=line, origin=origin, regex=_joined(pieces, kinds), squeezed=_joined(squeezed, kinds),
                         squashed=re.compile(squashed))


def _joined(pieces: list[str], kinds: list[str]) -> re.Pattern[str]:
    """The regex of a phrase line: its words separated by one space, matched as whole words."""
    regex = ""
    for i, (piece, kind) in enumerate(zip(pieces, kinds)):
        regex += piece
        if kind == "word" and i < len(pieces) - 1:
            regex += " "
    return re.compile(rf"(?<![^ ]){regex}(?![^ ])")


def _read_patterns(path: Path) -> tuple[PhrasePattern, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: phrase file not found") from None
    patterns = []
    for number, raw in enumerate(lines, start=1):
        line = " ".join(raw.split())
        if line and not line.startswith("#"):
            patterns.append(_compile_pattern(line, f"{path.name}:{number}"))
    return tuple(patterns)


@lru_cache(maxsize=8)
def _load(policy_dir: Path) -> PhraseLists:
    return PhraseLists(
        crisis=_read_patterns(policy_dir / "crisis_phrases.txt"),
        crisis_exclusions=_read_patterns(policy_dir / "crisis_exclusions.txt"),
        optout=_read_patterns(policy_dir / "optout_phrases.txt"),
        optout_exclusions=_read_patterns(policy_dir / "optout_exclusions.txt"),
    )


def load_phrase_lists(policy_dir: Path | None = None) -> PhraseLists:
    """Read and compile the four phrase files in `policy_dir` (default: the repository's policy/).

    Cached per directory: the files are read once per process. Raises ValueError naming the file
    and line of a malformed pattern or a missing file.
    """
    return _load((policy_dir or DEFAULT_POLICY_DIR).resolve())


# --- classification --------------------------------------------------------------------------


def _first_match(
    normalised: str,
    boundaries: tuple[int, ...],
    patterns: tuple[PhrasePattern, ...],
    exclusions: tuple[PhrasePattern, ...],
    *,
    squeezed: bool = False,
) -> PhrasePattern | None:
    """The first pattern (in file order) that matches somewhere no exclusion covers (`squeezed`:
    `normalised` has its doubled letters squeezed, so the squeezed forms of the patterns are used).

    An exclusion only counts within one sentence, so "I can't go on. Tuesday is..." is not
    excused by "can't go on tuesday".
    """
    excluded: list[tuple[int, int]] | None = None  # computed only when something matched
    for pattern in patterns:
        spans = pattern.spans(normalised, squeezed=squeezed)
        if not spans:
            continue
        if excluded is None:
            excluded = [
                (s, e)
                for ex in exclusions
                for s, e in ex.spans(normalised, squeezed=squeezed)
                if not any(s < b < e for b in boundaries)
            ]
        if any(all(e <= xs or s >= xe for xs, xe in excluded) for s, e in spans):
            return pattern
    return None


def _crisis_match(body: str, phrases: PhraseLists) -> tuple[PhrasePattern | None, _Reading]:
    """The crisis line found in any reading of `body` (see `_readings`), or in a word spelled out
    letter by letter; and the as-written reading (for the opt-out check)."""
    readings, spelled = _readings(body)
    for reading in readings:
        found = _first_match(reading.text, reading.boundaries, phrases.crisis, phrases.crisis_exclusions,
                             squeezed=reading.squeezed)
        if found is not None:
            return found, readings[0]
    for run in spelled:
        for pattern in phrases.crisis:
            if pattern.squashed is not None and pattern.squashed.search(run):
                return pattern, readings[0]
    return None, readings[0]


def _opt_out(normalised: str, boundaries: tuple[int, ...], phrases: PhraseLists) -> str | None:
    """The opt-out in the person's own words, or a stretched keyword ("STOPPP"); None if neither.

    Read as written only: the decoded readings exist so that no crisis hides; an opt-out is
    recognised as before ("s t o p" stays a message for staff)."""
    if _KEYWORDS.get(normalised) is ReplyKind.OPT_OUT:  # a stretched keyword: "STOPPP", "Stooop"
        return normalised
    found = _first_match(normalised, boundaries, phrases.optout, phrases.optout_exclusions)
    return None if found is None else found.text


def _keyword(body: str) -> str | None:
    """The whole message, if it is a keyword once trimmed of whitespace, punctuation and emoji."""
    text = unicodedata.normalize("NFKC", _visible(body[:MAX_REPLY_CHARS]))
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    word = text[start:end].casefold()
    # Accents do not matter ("SÍ", "Párar"): the same folding as the phrase files (`_words`).
    word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return word if word in _KEYWORDS else None


def classify_reply(body: str, phrases: PhraseLists | None = None) -> Classification:
    """Classify one inbound SMS body. Never raises for any string; only its first
    `MAX_REPLY_CHARS` characters are considered. `phrases` defaults to `load_phrase_lists()`.
    """
    keyword = _keyword(body)
    if keyword is not None:
        return Classification(_KEYWORDS[keyword], keyword)
    phrases = phrases or load_phrase_lists()
    crisis, as_written = _crisis_match(body, phrases)
    opt_out = _opt_out(as_written.text, as_written.boundaries, phrases)
    if crisis is not None:
        return Classification(ReplyKind.CRISIS, crisis.text, opt_out=opt_out)
    if opt_out is not None:
        return Classification(ReplyKind.OPT_OUT_TEXT, opt_out)
    return Classification(ReplyKind.OTHER, None)
