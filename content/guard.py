"""Content rules for message templates: discreet SMS and subjects, approved numbers, required parts.

Rules (the id in brackets is printed with every issue and is stable; tests and docs refer to it):

- ``discreet-subject`` - an email subject (``{% block subject %}``) names no diagnosis or drug
  (``policy/restricted_terms.yaml``). Subjects show in notifications and on lock screens.
- ``discreet-sms`` - an SMS template names no diagnosis or drug, for the same reason.
- ``approved-claim`` - every number in a template's literal text (not inside ``{{ }}``,
  ``{% %}`` or ``{# #}``; for email also not in HTML markup, comments or ``<style>``) is listed in
  ``policy/approved_claims.yaml``, as a claim from the seed page or as a safe number (988, 911...).
- ``email-footer`` - an email, together with the layout it extends, outputs
  ``{{ unsubscribe_link }}``, ``{{ clinic_address }}`` and the 988 crisis line.
- ``booking-link`` - every message outputs ``{{ booking_link }}`` (an email: itself or its layout).
- ``absolute-claim`` - no absolute or promissory wording (``policy/absolute_language.yaml``,
  `content.absolutes`), in a template's own text; on rendered text through `content.claims`.
- ``new-claim`` - every medical sentence of the rendered text matches the clinic's claims library
  (`content.claims.check_claims`, run by the editor and `drip templates check`, not here).
- ``offer-terms`` - no template (layouts included) says "free" itself, in text or markup: whether
  the consultation is free is the clinic's setting (``DRIP_CONSULTATION_FREE``), which
  ``{{ consultation }}`` follows.

The footer and booking rules are checked on a *probe render*: the template is rendered with its
layout in a Jinja sandbox with a marker string for every variable, and the output is searched for
the markers. So a child that overrides the layout's footer block, or hides the link in
``{% if false %}``, is caught, which a search of the two source files would miss. When the
template cannot be rendered (a syntax error, which `drip templates check` reports on its own), the
sources themselves are searched instead.

Issues print as ``file:line: [rule] message``; ``line`` is 1-based and points at the offending line
of the file. A missing part has no line of its own: it is reported on the ``{% extends %}`` line
(or line 1).

``check_rendered_email`` / ``check_rendered_sms`` apply the same rules to real rendered output,
where a clinic name from the settings (e.g. "... Ketamine Center") can break discretion although
every template is clean.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import yaml
from jinja2 import BaseLoader, ChainableUndefined, ChoiceLoader, DictLoader, FileSystemLoader, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from patient_drip.content.rendering import TEMPLATE_VARIABLES, BoundedSandbox, RenderedEmail
from patient_drip.content.absolutes import ABSOLUTE_CLAIM, AbsoluteRules, find_absolutes, load_absolute_rules
from patient_drip.content.claims import NEW_CLAIM, load_medical_terms
from patient_drip.content.numbers import HYPHENS as _HYPHENS
from patient_drip.content.numbers import ApprovedNumber, NumberMention, extract_numbers, parse_approved_number
from patient_drip.content.languages import (
    DEFAULT_LANGUAGE,
    accent_insensitive,
    english_template,
    language_of_template,
    policy_file_name,
)
from patient_drip.content.required_parts import is_email_layout, missing_parts
from patient_drip.providers.types import Channel

__all__ = [
    "RULES",
    "ApprovedNumber",
    "Claim",
    "ContentPolicy",
    "GuardIssue",
    "NumberMention",
    "RestrictedTerm",
    "SafeNumber",
    "check_rendered_email",
    "check_rendered_sms",
    "check_template_source",
    "check_templates_dir",
    "extract_numbers",
    "load_policy",
]

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"

DISCREET_SUBJECT = "discreet-subject"
DISCREET_SMS = "discreet-sms"
APPROVED_CLAIM = "approved-claim"
EMAIL_FOOTER = "email-footer"
BOOKING_LINK = "booking-link"
OFFER_TERMS = "offer-terms"
UNREADABLE = "unreadable"
RULES = {
    ABSOLUTE_CLAIM: "no absolute or promissory wording (cure, guarantee, proven, 100%, no side effects...)",
    NEW_CLAIM: "every medical sentence is a claim in the clinic's claims library",
    DISCREET_SUBJECT: "an email subject names no diagnosis or drug",
    DISCREET_SMS: "a text message names no diagnosis or drug",
    APPROVED_CLAIM: "every number is an approved claim from the seed or a safe number",
    EMAIL_FOOTER: "an email (with its layout) has the unsubscribe link, the clinic address and 988",
    BOOKING_LINK: "every message has {{ booking_link }}",
    OFFER_TERMS: "no template calls the consultation free; {{ consultation }} follows the setting",
    UNREADABLE: "a template file is UTF-8 text",
}


@dataclass(frozen=True)
class GuardIssue:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message}"


# --- policy ----------------------------------------------------------------------------------


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


# --- source scanning -------------------------------------------------------------------------

_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.S)
_JINJA_CODE = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.S)
_HTML_HIDDEN = re.compile(r"<!--.*?-->|<(style|script|head)\b.*?</\1\s*>", re.S | re.I)
_HTML_TAG = re.compile(r"</?[A-Za-z!][^>]*>", re.S)
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_SUBJECT_BLOCK = re.compile(
    r"\{%-?\s*block\s+subject\s*[-+]?%\}(?P<body>.*?)\{%-?\s*endblock\b[^%]*%\}", re.S
)
_EXTENDS = re.compile(r"\{%-?\s*extends\s+([\"'])(?P<name>.+?)\1\s*-?%\}")
_VARIABLE = re.compile(r"\{\{-?\s*(?P<name>\w+)[^}]*\}\}")
_CRISIS_LINE = re.compile(r"(?<!\d)988(?!\d)")
_FREE = re.compile(r"\bfree\b", re.I)
# Another language's word for it too (an English "free" in a Spanish template is refused as well).
_FREE_IN = {"es": re.compile(r"\b(?:free|gratis|gratuit[oa]s?|sin\s+costo|sin\s+cargo)\b", re.I)}


def _blank(text: str, regex: re.Pattern[str]) -> str:
    """Replace every match with spaces, keeping its newlines, so offsets and line numbers hold."""
    return regex.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _unescape_entities(text: str) -> str:
    # Entities decode in place (&ndash; is a range dash); a decoded newline would shift lines.
    return _ENTITY.sub(lambda m: re.sub(r"[\r\n]", " ", html_unescape(m.group())), text)


def _visible_html_text(markup: str) -> str:
    """What a reader sees of an HTML document, line for line (tags and hidden parts blanked)."""
    return _unescape_entities(_blank(_blank(markup, _HTML_HIDDEN), _HTML_TAG))


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _restricted_issues(
    file: str, text: str, rule: str, policy: ContentPolicy, span: tuple[int, int] | None = None
) -> list[GuardIssue]:
    """Restricted words in `text` (or in `text[span]`), with line numbers counted in `text`."""
    start, end = span or (0, len(text))
    where = "an email subject" if rule == DISCREET_SUBJECT else "a text message"
    return [
        GuardIssue(
            file,
            _line(text, start + offset),
            rule,
            f"{word!r} ({term.category}: {term.term!r}) must not appear in {where}: it shows on "
            "lock screens and in notifications; say it in the message body instead",
        )
        for offset, word, term in policy.restricted_in(text[start:end])
    ]


def _number_issues(file: str, text: str, policy: ContentPolicy) -> list[GuardIssue]:
    issues = []
    for mention in extract_numbers(text, policy.language):
        if policy.approval(mention) is not None:
            continue
        hint = ""
        same_value = [a.entry for a in policy.approved_numbers if a.value == mention.value]
        if same_value:
            hint = f" ({mention.value} is approved only as {', '.join(map(repr, same_value))})"
        issues.append(
            GuardIssue(
                file,
                _line(text, mention.start),
                APPROVED_CLAIM,
                f"{mention.text!r} is not a number a clinician approved{hint}: use a figure from the "
                "claims library (the Claims page), written as it is there, or ask a clinician to add it",
            )
        )
    return issues


def _offer_issues(file: str, text: str, language: str = DEFAULT_LANGUAGE) -> list[GuardIssue]:
    # Anywhere outside comments, markup and Jinja strings included: an alt text shows too.
    return [GuardIssue(file, _line(text, m.start()), OFFER_TERMS, f'says "{m[0]}": whether the consultation is '
                       "free is the clinic's setting, not the message's - write {{ consultation }}, which says "
                       '"free" only when the clinic offers it free (the setting DRIP_CONSULTATION_FREE)')
            for m in _FREE_IN.get(language, _FREE).finditer(_unescape_entities(text))]


def _literal_text(source: str, channel: Channel) -> str:
    """The template's own text: Jinja code blanked, and for email the HTML markup too."""
    text = _blank(_blank(source, _JINJA_COMMENT), _JINJA_CODE)
    return _visible_html_text(text) if channel == "email" else text


def absolute_issues(file: str, text: str, policy: ContentPolicy) -> list[GuardIssue]:
    """Absolute and promissory wording in `text` (rule ``absolute-claim``, `content.absolutes`)."""
    return [GuardIssue(file, _line(text, m.start), ABSOLUTE_CLAIM, m.message)
            for m in find_absolutes(text, policy.absolutes)]


# --- required parts (footer, booking link) ---------------------------------------------------


def _marker(name: str) -> str:
    # Letters only: html2text and autoescape leave it alone, and it contains no number.
    return "zzguard" + name.replace("_", "") + "zz"


_MARKERS = {name: _marker(name) for name in TEMPLATE_VARIABLES}


def _probe_render(name: str, loader: BaseLoader, channel: Channel) -> str:
    """Render `name` with a marker for every variable; raises Jinja errors (and
    `RenderBudgetError` for a template that would run too long or grow too big)."""
    env = BoundedSandbox(loader=loader, undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                         autoescape=lambda n: bool(n and n.endswith((".html", ".htm"))))
    return env.get_template(name).render({**_MARKERS, "channel": str(channel)})


def _sources_as_output(sources: Iterable[str]) -> str:
    """Fallback when a probe render fails: each `{{ variable }}` becomes its marker."""
    return "\n".join(
        _VARIABLE.sub(lambda m: _MARKERS.get(m["name"], ""), _blank(s, _JINJA_COMMENT)) for s in sources
    )


def _part_issues(file: str, line: int, channel: Channel, output: str, visible: str, values: Mapping[str, object],
                 what: str) -> list[GuardIssue]:
    """Footer and booking-link issues for one rendered output.

    `output` is everything (links may sit in href attributes), `visible` what a reader sees,
    `values` the strings that stand for booking_link, unsubscribe_link and clinic_address.
    """
    kind = "layout" if channel == "layout" else "email" if channel == "email" else "sms"
    return [GuardIssue(file, line, rule, f"{what} {message}")
            for rule, message in missing_parts(kind, output, visible, values)]  # content/required_parts.py


def _required_part_issues(
    file: str, source: str, channel: Channel, templates: Mapping[str, str], templates_dir: Path | None,
    layout_alone: bool = False,
) -> list[GuardIssue]:
    extends = _EXTENDS.search(_blank(source, _JINJA_COMMENT))
    line = _line(source, extends.start()) if extends else 1
    layout = extends["name"] if extends else None
    name = "__content_guard__/checked" + Path(file).suffix
    what = f"this {channel}" + (f" (with its layout {layout})" if layout else "")
    part_kind: str = channel
    if layout_alone:
        what, part_kind = "this layout", "layout"  # checked alone: it has no booking link of its own
    loader: BaseLoader = DictLoader({**templates, name: source})
    if templates_dir is not None:
        loader = ChoiceLoader([loader, FileSystemLoader(str(templates_dir))])
    try:
        output = _probe_render(name, loader, channel)
    except TemplateNotFound as exc:
        missing = f"it uses {exc.name!r}, which was not found, so its footer and links cannot be checked"
        return [GuardIssue(file, line, EMAIL_FOOTER if channel == "email" else BOOKING_LINK, missing)]
    except Exception:  # any other template error is rendering's to report; search the sources instead
        try:
            layout_source = loader.get_source(SandboxedEnvironment(), layout)[0] if layout else ""
        except TemplateNotFound:
            layout_source = ""
        output = _sources_as_output([source, layout_source])
    visible = _visible_html_text(output) if channel == "email" else output
    return _part_issues(file, line, part_kind, output, visible, _MARKERS, what)  # type: ignore[arg-type]


# --- public checks ---------------------------------------------------------------------------


def check_template_source(
    path: str,
    source: str,
    *,
    channel: Channel,
    policy: ContentPolicy,
    is_layout: bool = False,
    templates: Mapping[str, str] | None = None,
    templates_dir: Path | None = None,
) -> list[GuardIssue]:
    """Check one template file's source against every rule; issues sorted by line.

    `path` is only used to label issues. `{% extends %}` and `{% include %}` resolve from
    `templates` (other templates' sources by Jinja name, "email/_layout.html"), then from files
    in `templates_dir`. An email layout (`is_layout=True`; `required_parts.is_email_layout`) must
    carry the footer itself (unsubscribe link, address, 988), and is checked again through every
    email that extends it; other partials are checked for discretion and numbers only.
    """
    no_comments = _blank(source, _JINJA_COMMENT)
    issues: list[GuardIssue] = []
    if channel == "email":
        for block in _SUBJECT_BLOCK.finditer(no_comments):
            issues += _restricted_issues(path, no_comments, DISCREET_SUBJECT, policy, block.span("body"))
    else:
        issues += _restricted_issues(path, no_comments, DISCREET_SMS, policy)
    issues += _number_issues(path, _literal_text(source, channel), policy)
    issues += _offer_issues(path, no_comments, policy.language)
    issues += absolute_issues(path, _literal_text(source, channel), policy)
    if not is_layout or (channel == "email" and is_email_layout(no_comments)):  # a layout carries the footer
        issues += _required_part_issues(path, source, channel, templates or {}, templates_dir, is_layout)
    return sorted(issues, key=lambda i: (i.line, i.rule))


def _without_values(text: str, variables: Mapping[str, object], language: str = DEFAULT_LANGUAGE) -> str:
    """`text` with the variables' values blanked (a street number, a phone or the consultation's
    length from the settings is not a claim)."""
    for value in sorted((v for v in variables.values() if isinstance(v, str) and len(v.strip()) >= 3),
                        key=len, reverse=True):
        # Whitespace may change on the way (html2text joins a multi-line address into one line).
        text = _blank(text, re.compile(r"\s+".join(map(re.escape, value.split()))))
    minutes = variables.get("consultation_minutes")
    word = "minute" if language == DEFAULT_LANGUAGE else "minut"  # "15 minutos"
    return _blank(text, re.compile(rf"(?<![\d.,]){minutes}(?=[\s-]*{word})")) if isinstance(minutes, int) else text


def check_rendered_email(
    name: str,
    rendered: RenderedEmail | None = None,
    *,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    variables: Mapping[str, object] | None = None,
    policy: ContentPolicy,
) -> list[GuardIssue]:
    """Check a rendered email: a `RenderedEmail`, or its `subject`, `html` and `text` parts.

    Issues are labelled "NAME (subject)", "NAME (html)" or "NAME (text)", with the line inside
    that part. This sees what only rendering shows, such as a clinic name from the settings
    ("Sunrise Ketamine Center") in a subject. Always checked: the subject's discretion and that
    both parts show 988. With the `variables` the email was rendered with, also: the booking and
    unsubscribe links and the clinic address are in both parts, and every number outside those
    values is approved (a street number is not a claim, a `{{ "90%" }}` is).
    """
    subject = rendered.subject if subject is None and rendered is not None else subject or ""
    html = rendered.html if html is None and rendered is not None else html or ""
    text = rendered.text if text is None and rendered is not None else text or ""
    issues = _restricted_issues(f"{name} (subject)", subject, DISCREET_SUBJECT, policy)
    parts = ((f"{name} (html)", html, _visible_html_text(html), "the HTML part"),
             (f"{name} (text)", text, text, "the plain-text part"))
    if variables is None:
        for file, _, visible, what in parts:
            if not _CRISIS_LINE.search(visible):
                issues.append(GuardIssue(file, 1, EMAIL_FOOTER, f"{what} does not show the 988 Suicide & "
                                         "Crisis Lifeline: every email footer has it"))
        return issues
    issues += _number_issues(f"{name} (subject)", _without_values(subject, variables, policy.language), policy)
    issues += _number_issues(f"{name} (text)", _without_values(text, variables, policy.language), policy)
    for file, output, visible, what in parts:
        issues += _part_issues(file, 1, "email", output, visible, variables, what)
    return issues


def check_rendered_sms(
    name: str, text: str, *, policy: ContentPolicy, variables: Mapping[str, object] | None = None
) -> list[GuardIssue]:
    """Check a rendered SMS body (issues labelled "NAME (sms)"). Always: discretion. With the
    `variables` it was rendered with, also: the booking link is in it, and every number outside
    those values is approved."""
    file = f"{name} (sms)"
    issues = _restricted_issues(file, text, DISCREET_SMS, policy)
    if variables is not None:
        issues += _number_issues(file, _without_values(text, variables, policy.language), policy)
        issues += _part_issues(file, 1, "sms", text, text, variables, "the text message")
    return issues


def check_templates_dir(templates_dir: Path, policy: ContentPolicy | None = None) -> list[GuardIssue]:
    """Check every template under `templates_dir` (``email/*.html``, ``sms/*.txt`` and shared
    partials); issues sorted by file and line, files labelled ``templates_dir/relative/path``.

    Files whose name starts with ``_`` (layouts, partials) and files outside ``email/`` and
    ``sms/`` are checked as layouts; the channel follows the suffix (.html email, .txt sms).
    A template in a language folder (``es/email/…``) is checked with that language's policy
    (`ContentPolicy.in_language`) and ``es/email``, ``es/sms`` are its ``email``, ``sms``.
    """
    policy = policy or load_policy()
    root = Path(templates_dir)
    sources: dict[str, str] = {}
    issues: list[GuardIssue] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".html", ".htm", ".txt"}):
        name = path.relative_to(root).as_posix()
        try:
            sources[name] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            issues.append(GuardIssue(str(path), 1, UNREADABLE, f"cannot be read as UTF-8 text: {exc}"))
    for name, source in sources.items():
        channel = Channel.SMS if name.endswith(".txt") else Channel.EMAIL
        top = english_template(name).split("/", 1)[0]
        is_layout = Path(name).name.startswith("_") or top not in ("email", "sms")
        issues += check_template_source(
            str(root / name), source, channel=channel, policy=policy.in_language(language_of_template(name)),
            is_layout=is_layout, templates=sources
        )
    return sorted(issues, key=lambda i: (i.file, i.line, i.rule))
