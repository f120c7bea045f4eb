"""Medical claims in rendered message text: which sentences are claims, and which are approved.

The rule (``new-claim``): every sentence of a medical topic in what a patient reads (the rendered
email's visible HTML text and subject, or the rendered SMS) must match a claim in the clinic's
claims library (`content.claim_library`), which a clinician manages. A sentence that does not is a
*new claim*: it can be saved as a draft but not approved until a clinician adds it to the library.
Absolute and promissory language is a separate rule (`content.absolutes`), refused outright.

How the pieces are decided, and why:

- **What a sentence is.** Rendered HTML becomes lines of visible text (a block element such as
  ``<p>``, ``<li>`` or ``<h2>`` ends a line; ``<style>``, ``<head>`` and comments are not seen);
  each line is split after ``.``, ``!`` or ``?`` followed by a space and a capital, digit or quote,
  unless the word before is a known abbreviation ("Dr.", "e.g."). A hand-written splitter: message
  copy is short, edited prose with no dialogue or citations, and the libraries that do better on
  hard text (NLTK's punkt needs a model download; pySBD is unmaintained since 2021) would add a
  dependency for cases our templates do not have. The tests pin the cases we rely on.
- **What a medical topic is.** A sentence that contains any stem listed in
  ``policy/medical_terms.txt`` (diagnoses, the drug and its class, brain anatomy and chemistry,
  treatment, effect, risk). The list is data so a clinician can extend it without code; a stem
  matches at the start of a word ("depress" catches "depression").
- **When a sentence matches a claim.** Both are *normalised* and must then be equal: capitals,
  spacing, punctuation and hyphens do not count ("short-term" = "short term", "anti-depressant" =
  "antidepressant"), curly and straight quotes are the same, a range dash is a range ("2–7" =
  "2-7" but not "27"), "percent" is "%", and the rendered value of a template variable stands for
  the variable (so "Example Clinic" in the sentence matches ``{{ clinic_name }}`` in the claim).
  Any change of a *word* is a changed claim: "may" → "will", "some" → "all" or "weeks" → "days"
  changes what is promised, and only a clinician can judge that. So we tolerate format, never
  wording.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path

from patient_drip.content.languages import DEFAULT_LANGUAGE, accent_insensitive, policy_file_name

__all__ = [
    "NEW_CLAIM",
    "NEW_CLAIM_MESSAGE",
    "Sentence",
    "claim_key",
    "is_medical",
    "load_medical_terms",
    "sentences_of",
    "split_sentences",
    "visible_text",
]

NEW_CLAIM = "new-claim"
NEW_CLAIM_MESSAGE = "new claim — needs clinical review"

# Words after which a full stop does not end a sentence (lower case, without the dot).
# Spanish ones too ("Dra.", "Sr.", "p. ej."), for the Spanish templates (templates/es/).
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "vs", "e.g", "i.e", "etc", "u.s", "approx", "no", "inc",
                            "dra", "sr", "sra", "srta", "ud", "uds", "ej", "p.ej", "aprox", "ee.uu"})
# A sentence may open with Spanish inverted marks ("¿Qué…?", "¡Gracias!") and an accented capital.
_BOUNDARY = re.compile(r"(?<=[.!?])(?P<close>[\"'”’)]*)\s+(?=[\"'“‘(¿¡]*[A-Z0-9ÁÉÍÓÚÜÑ])")
_BLOCK_TAGS = frozenset({
    "p", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "div", "td", "th", "tr", "table", "br",
    "blockquote", "section", "article", "header", "footer", "hr", "title", "dt", "dd",
})
_HIDDEN_TAGS = frozenset({"style", "script", "head", "template"})


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of visible text; `start`/`end` are offsets in the text it was split from."""

    text: str
    start: int
    end: int


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """What a reader sees of an HTML email, one block (paragraph, list item, heading) a line.

    Spaces inside a line are collapsed; empty lines are dropped; invisible spacer characters
    (zero-width non-joiners, non-breaking spaces) are spaces. Never raises for any string."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    raw = "".join(parser.parts).replace("\u200c", " ").replace("\u00a0", " ").replace("\u200b", "")
    lines = (" ".join(line.split()) for line in raw.split("\n"))
    return "\n".join(line for line in lines if line)


def split_sentences(text: str) -> list[Sentence]:
    """Sentences of `text`, in order; a line break always ends one (see the module docstring)."""
    found: list[Sentence] = []
    offset = 0
    for line in text.split("\n"):
        start = 0
        for m in _BOUNDARY.finditer(line):
            end = m.start() + len(m["close"])
            before = line[start:m.start()]
            last_word = before.rsplit(None, 1)[-1].rstrip(".!?").casefold() if before.strip() else ""
            if last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word):
                continue  # "Dr. Kim", "e.g. this", an initial
            _add(found, line, start, end, offset)
            start = m.end()
        _add(found, line, start, len(line), offset)
        offset += len(line) + 1
    return found


def _add(found: list[Sentence], line: str, start: int, end: int, offset: int) -> None:
    piece = line[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        found.append(Sentence(stripped, offset + start + lead, offset + start + lead + len(stripped)))


def sentences_of(channel: str, *, html: str = "", text: str = "", subject: str = "") -> tuple[str, list[Sentence]]:
    """The text a patient reads and its sentences: for an email the subject (first line) and the
    visible HTML text, for an SMS the body. Offsets refer to the returned text."""
    if channel == "email":
        body = visible_text(html)
        whole = f"{subject}\n{body}" if subject.strip() else body
    else:
        whole = " ".join(text.split())
    return whole, split_sentences(whole)


# --- medical vocabulary -----------------------------------------------------------------------

DEFAULT_TERMS_FILE = Path(__file__).resolve().parent.parent / "policy" / "medical_terms.txt"


@lru_cache(maxsize=8)
def _load_terms(path: Path, language: str = DEFAULT_LANGUAGE) -> re.Pattern[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ValueError(f"{path}: the list of medical words is missing") from None
    stems = [line.split("#", 1)[0].strip() for line in lines]
    stems = [s for s in stems if s]
    if not stems:
        raise ValueError(f"{path}: lists no medical words")
    # A stem matches at the start of a word; a space or hyphen in a stem matches either.
    # Another language's stems match with or without their accents ("depresi" = "depresión").
    escape = re.escape if language == DEFAULT_LANGUAGE else (lambda word: accent_insensitive(re.escape(word)))
    alternatives = sorted((r"[\s\-]+".join(map(escape, re.split(r"[\s\-]+", s))) for s in stems),
                          key=len, reverse=True)
    return re.compile(r"(?<![^\W_])(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


def load_medical_terms(policy_dir: Path | None = None, language: str = DEFAULT_LANGUAGE) -> re.Pattern[str]:
    """The medical-topic matcher from ``medical_terms.txt`` in `policy_dir`; the shipped list when
    `policy_dir` is None or has no such file (a clinic's own policy folder from before the list).
    Raises ValueError naming the file when it is empty.

    Another `language` ("es") reads that language's list alone (``medical_terms.es.txt``; the
    shipped one when `policy_dir` has none), matched with or without accents."""
    default = DEFAULT_TERMS_FILE.with_name(policy_file_name(DEFAULT_TERMS_FILE.name, language))
    path = (policy_dir / default.name) if policy_dir else default
    path = path if path.is_file() else default
    return _load_terms(path.resolve(), language)


def is_medical(sentence: str, terms: re.Pattern[str]) -> bool:
    """Whether `sentence` is of a medical topic: it contains a listed stem."""
    return terms.search(sentence) is not None


# --- normalisation ---------------------------------------------------------------------------

_TEMPLATE_VARIABLE = re.compile(r"\{\{-?\s*(\w+)[^}]*?-?\}\}")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "′": "'"})
_DASH = "\u2010\u2011\u2012\u2013\u2014\u2212-"
_RANGE = re.compile(rf"(\d)\s*(?:[{_DASH}]|\bto\b)\s*(\d)")


# Variables whose value is wording a reader sees inside a sentence. Others ("channel" = "email",
# "step_id") are not replaced: "In our last email" must stay those words.
WORDING_VARIABLES = frozenset({"first_name", "clinic_name", "clinic_sms_name", "clinic_phone", "clinic_address",
                               "consultation", "booking_phrase"})


def with_placeholders(text: str, variables: Mapping[str, object] | None) -> str:
    """`text` with each wording variable's rendered value put back as ``{name}`` (longest values
    first; values shorter than three characters ignored: "Al" would eat "Also")."""
    if not variables:
        return text
    values = sorted(((str(v), k) for k, v in variables.items()
                     if k in WORDING_VARIABLES and isinstance(v, str) and len(v.strip()) >= 3),
                    key=lambda p: len(p[0]), reverse=True)
    for value, name in values:
        text = re.sub(r"\s+".join(map(re.escape, value.split())), "{" + name + "}", text, flags=re.IGNORECASE)
    return text


def claim_key(text: str, variables: Mapping[str, object] | None = None) -> str:
    """The form two sentences are compared in (see the module docstring for what is tolerated).

    `variables`: the values the text was rendered with; each wording variable (`WORDING_VARIABLES`)
    is replaced by its ``{name}`` (longest values first, values shorter than three characters
    ignored: "Al" would eat "Also"). A claim written with ``{{ name }}`` gets the same ``{name}``."""
    text = with_placeholders(_TEMPLATE_VARIABLE.sub(lambda m: "{" + m[1] + "}", text), variables)
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    text = re.sub(r"\bper\s*cent\b|\bpercent\b|\bpor\s*ciento\b", "%", text)
    text = _RANGE.sub(r"\1~\2", text)  # a range keeps its separator: "2-7" is not "27"
    text = text.replace("'s", "s")  # "ketamine's" = "ketamines" (the apostrophe is punctuation)
    # Letters, digits, %, a range mark and variable braces count; spaces, hyphens and the rest do not.
    return re.sub(r"[^\w%~{}]|_", "", text)


def approved_keys(texts: Iterable[str]) -> frozenset[str]:
    """The keys of the library's claim texts (for `claim_key` lookups)."""
    return frozenset(claim_key(t) for t in texts)


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LibraryClaim:
    """An approved claim as the check needs it: its record id (0 for a file entry) and wording."""

    id: int
    text: str


@dataclass(frozen=True)
class ClaimLibrary:
    """The approved claims a check compares sentences with, by key (`claim_key`)."""

    claims: tuple[LibraryClaim, ...]

    @property
    def by_key(self) -> dict[str, LibraryClaim]:
        return _index(self.claims)

    def find(self, sentence: str, variables: Mapping[str, object] | None = None) -> LibraryClaim | None:
        """The approved claim `sentence` matches, if any."""
        return self.by_key.get(claim_key(sentence, variables))


@lru_cache(maxsize=32)
def _index(claims: tuple[LibraryClaim, ...]) -> dict[str, LibraryClaim]:
    return {claim_key(c.text): c for c in reversed(claims)}  # the first claim wins a tie


@dataclass(frozen=True, slots=True)
class SentenceFinding:
    """What the check found for one sentence: `status` is "approved" (matches `claim`), "new"
    (a medical sentence not in the library) or "refused" (absolute language; `reasons` say why).
    `start`/`end` are offsets in the checked text; `refused` holds the offending phrases' offsets."""

    sentence: Sentence
    status: str
    claim: LibraryClaim | None = None
    reasons: tuple[str, ...] = ()
    refused: tuple[tuple[int, int], ...] = ()

    @property
    def message(self) -> str:
        if self.status == "refused":
            return "; ".join(self.reasons)
        return NEW_CLAIM_MESSAGE if self.status == "new" else "approved claim"


@dataclass(frozen=True)
class ClaimReport:
    """The sentences of one rendered message that the rules have something to say about."""

    text: str  # the visible text checked (subject first for an email)
    findings: tuple[SentenceFinding, ...]

    @property
    def new(self) -> list[SentenceFinding]:
        return [f for f in self.findings if f.status == "new"]

    @property
    def refused(self) -> list[SentenceFinding]:
        return [f for f in self.findings if f.status == "refused"]


def check_claims(channel: str, *, library: ClaimLibrary, terms: re.Pattern[str], absolutes: object,
                 html: str = "", text: str = "", subject: str = "",
                 variables: Mapping[str, object] | None = None) -> ClaimReport:
    """Check every sentence a patient reads (see `sentences_of`): absolute language anywhere is
    refused; a medical sentence that matches no library claim is new; a matching one is approved.

    `absolutes` is `content.absolutes.AbsoluteRules` (typed loosely to keep this module free of
    the rule file's loader). Never raises for any text."""
    from patient_drip.content.absolutes import find_absolutes

    whole, sentences = sentences_of(channel, html=html, text=text, subject=subject)
    findings = []
    for sentence in sentences:
        refused = find_absolutes(sentence.text, absolutes)  # type: ignore[arg-type]
        # A clinic named "… Ketamine Clinic" does not make "The {clinic_name} team" a medical claim.
        medical = is_medical(with_placeholders(sentence.text, variables), terms)
        claim = library.find(sentence.text, variables) if medical else None
        if refused:
            # Said first when it applies: the reader sees both that it is a new claim and why no
            # clinician may approve it.
            new = (NEW_CLAIM_MESSAGE,) if medical and claim is None else ()
            findings.append(SentenceFinding(
                sentence, "refused", reasons=new + tuple(dict.fromkeys(m.message for m in refused)),
                refused=tuple((sentence.start + m.start, sentence.start + m.end) for m in refused)))
        elif medical:
            findings.append(SentenceFinding(sentence, "approved" if claim else "new", claim))
    return ClaimReport(whole, tuple(findings))


def source_line(source: str, sentence: str) -> int:
    """The 1-based line of template `source` where `sentence` (rendered text) starts, found by its
    first words with any markup or template code between them; 1 when it cannot be found (a
    sentence made by a variable or a layout)."""
    words = re.findall(r"[^\W_]+", sentence)
    for count in (5, 3, 2):
        if len(words) < count:
            continue
        gap = r"(?:[\W_]|<[^>]*>|\{\{.*?\}\}|\{%.*?%\})+"
        m = re.search(r"(?<![^\W_])" + gap.join(map(re.escape, words[:count])), source, re.IGNORECASE | re.S)
        if m:
            return source.count("\n", 0, m.start()) + 1
    return 1
