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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import yaml
from jinja2 import BaseLoader, ChainableUndefined, ChoiceLoader, DictLoader, FileSystemLoader, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from patient_drip.content.rendering import TEMPLATE_VARIABLES, BoundedSandbox, RenderedEmail
from patient_drip.content.absolutes import ABSOLUTE_CLAIM, AbsoluteRules, find_absolutes
from patient_drip.content.claims import NEW_CLAIM
from patient_drip.content.numbers import HYPHENS as _HYPHENS
from patient_drip.content.numbers import ApprovedNumber, NumberMention, extract_numbers, parse_approved_number
from patient_drip.content.languages import (
    DEFAULT_LANGUAGE,
    accent_insensitive,
    english_template,
    language_of_template,
    policy_file_name,
)
from patient_drip.content.content_policy import (
    DEFAULT_POLICY_DIR,
    Claim,
    ContentPolicy,
    RestrictedTerm,
    SafeNumber,
    load_policy,
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
