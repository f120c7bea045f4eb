"""Render a template's edited source for a sample contact and collect every problem with it.

Used by the editor's live preview, by "save draft" (refused while there are problems) and by the
approval page. Problems: syntax errors, undefined variables (StrictUndefined), a missing subject,
SMS over two segments or outside GSM-7, a first SMS without what carriers expect
(`content.first_sms`), a preheader or plain-text opening that is not discreet (`content.discretion`),
— each in the template's own language (`content.languages`: es/… has the Spanish rules and claims) —
a layout without its footer (`content.required_parts`, through the guard), and the content guard's
rules (content_guard.py). The guard is optional here: if the module or its policy files cannot be
loaded, the preview still works and says that content rules were not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from patient_drip.content.names import message_first_name
from patient_drip.content.campaign import Campaign
from patient_drip.content import discretion
from patient_drip.content.checks import sample_context
from patient_drip.content.claim_library import load_library
from patient_drip.content.claims import ClaimLibrary, ClaimReport, SentenceFinding, check_claims, source_line
from patient_drip.content.first_sms import first_sms_problems, first_sms_step
from patient_drip.content.languages import english_template, language_of_template, template_in_language
from patient_drip.content.numbers import numbers_of_claims
from patient_drip.models import Channel
from patient_drip.content.rendering import SMS_MAX_SEGMENTS, RenderedEmail, RenderError, Renderer, SmsInfo, sms_info
from patient_drip.runtime import Runtime
from patient_drip.content.template_store import published_sources, template_files

log = logging.getLogger("drip.admin")


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    line: int | None = None
    rule: str = ""
    where: str = ""  # "subject", "html", "text", "sms" for issues found in the rendered output


@dataclass
class Preview:
    name: str
    channel: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    sms: SmsInfo | None = None
    rendered_as: str = ""  # for a layout: the email rendered with it
    # The medical sentences of the rendered text against the claims library (None: not checked).
    claims: ClaimReport | None = None

    @property
    def ok(self) -> bool:
        """No problems: the version may be saved (new claims do not stop a draft, only approval)."""
        return not self.problems

    @property
    def new_claims(self) -> list[SentenceFinding]:
        """Sentences that need a clinician: medical, and not in the claims library."""
        return self.claims.new if self.claims is not None else []


def template_channel(name: str) -> str:
    return "sms" if english_template(name).startswith("sms/") or name.endswith(".txt") else "email"


def is_layout(name: str) -> bool:
    return Path(name).name.startswith("_")


def all_sources(rt: Runtime, session: Session) -> dict[str, str]:
    """Every template as the renderer sees it: files, overridden by published versions."""
    return {**template_files(rt.settings.templates_dir), **published_sources(session)}




def step_for(campaigns: dict[str, Campaign], name: str) -> tuple[str, str, Campaign | None]:
    """(step id, campaign name, campaign) of the first step that sends this template (or, for a
    translation such as es/sms/01-welcome.txt, its English original)."""
    name = english_template(name)
    for campaign in campaigns.values():
        for step in campaign.message_steps:
            if step.template == name:
                return step.id, campaign.name, campaign
    return "sample-step", "Sample campaign", None


def _first_sms_of(campaigns: dict[str, Campaign], name: str) -> list[Campaign]:
    """The campaigns whose first text message is template `name` (or its English original)."""
    name = english_template(name)
    return [c for c in campaigns.values() if (step := first_sms_step(c)) is not None and step.template == name]


def _render_target(rt: Runtime, name: str, sources: dict[str, str]) -> str | None:
    """What to render to preview `name`: itself, or for a layout an email that extends it."""
    if not is_layout(name):
        return name
    language = language_of_template(name)  # a Spanish layout is seen through a Spanish email
    for campaign in rt.campaigns.values():
        for step in campaign.message_steps:
            target = template_in_language(step.template, language)
            if step.channel == Channel.EMAIL and name in sources.get(target, ""):
                return target
    return next((n for n in sorted(sources) if english_template(n).startswith("email/") and not is_layout(n)
                 and language_of_template(n) == language and name in sources[n]), None)


def _call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a content-guard function with the keyword arguments its signature accepts."""
    params = inspect.signature(func).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return func(*args, **kwargs)


def _claim_problems(library: ClaimLibrary, preview: Preview, policy: Any, source: str, context: dict[str, Any]) -> None:
    """The claims rule on the rendered text: refused wording is a problem (nothing with it can be
    saved); a new medical sentence is listed for clinical review (`Preview.new_claims`)."""
    if not (preview.html or preview.text):
        return
    preview.claims = check_claims(preview.channel, library=library, terms=policy.medical_terms,
                                  absolutes=policy.absolutes, html=preview.html, text=preview.text,
                                  subject=preview.subject, variables=context)
    if any(p.rule == "absolute-claim" for p in preview.problems):
        return  # already reported with its line in the source
    for finding in preview.claims.refused:
        preview.problems.append(Problem(f"“{finding.sentence.text}”: {finding.message}",
                                        source_line(source, finding.sentence.text), "absolute-claim"))


def _guard_problems(rt: Runtime, preview: Preview, source: str, sources: dict[str, str],
                    context: dict[str, str], session: Session | None = None) -> None:
    try:
        from patient_drip.content import guard as content_guard
    except ImportError:
        preview.notes.append("Content rules were not checked (the content guard is not installed).")
        return
    language = language_of_template(preview.name)  # each language's rules, and its claims only
    try:
        policy = content_guard.load_policy(rt.settings.policy_dir, language)
    except Exception as exc:  # a broken policy file must not take the editor down
        preview.notes.append(f"Content rules were not checked: cannot read the content policy ({exc}).")
        return
    library = load_library(session, language) if session is not None else None
    if library is not None:  # the figures of the clinic's approved claims are approved numbers too
        policy = dataclasses.replace(policy, approved_numbers=policy.approved_numbers + numbers_of_claims(
            (c.text for c in library.claims), language=language))

    def add(issues: Any, where: str = "") -> None:
        for issue in issues or []:
            part = where
            file = str(getattr(issue, "file", ""))
            if not part and "(" in file and file.endswith(")"):
                part = file.rsplit("(", 1)[1].rstrip(")")
            line = getattr(issue, "line", None)
            preview.problems.append(Problem(str(getattr(issue, "message", issue)),
                                            line if not part else None, str(getattr(issue, "rule", "")), part))

    try:
        add(_call(content_guard.check_template_source, preview.name, source, channel=preview.channel, policy=policy,
                  is_layout=is_layout(preview.name), templates=sources, templates_dir=rt.settings.templates_dir))
        if preview.channel == "email" and preview.text:
            # For a layout this is the email rendered with it: a header that names the drug shows in
            # every email's plain-text opening.
            add(discretion.email_issues(preview.name, subject=None, preheader=preview.preheader, text=preview.text,
                                        policy=policy))
        if preview.rendered_as or is_layout(preview.name):
            if library is not None:  # a layout's own sentences are claims too
                _claim_problems(library, preview, policy, source, context)
            return  # its footer and links are checked through the emails that extend it
        if preview.channel == "email" and preview.html:
            if "subject" in inspect.signature(content_guard.check_rendered_email).parameters:
                add(_call(content_guard.check_rendered_email, preview.name, subject=preview.subject, html=preview.html,
                          text=preview.text, variables=context, policy=policy))
            else:  # the older signature: (path, rendered_email, *, policy)
                rendered = RenderedEmail(preview.subject, preview.html, preview.text, preview.preheader)
                add(_call(content_guard.check_rendered_email, preview.name, rendered, policy=policy, variables=context))

        elif preview.channel == "sms" and preview.text:
            add(_call(content_guard.check_rendered_sms, preview.name, preview.text, policy=policy, variables=context))
        if library is not None:
            _claim_problems(library, preview, policy, source, context)
    except Exception as exc:  # the guard is another team's module; never let it break editing
        log.exception("content guard failed on %s", preview.name)
        preview.notes.append(f"Content rules could not be checked: {type(exc).__name__}: {exc}")


def preview_template(rt: Runtime, session: Session, name: str, source: str, *,
                     first_name: str | None = None) -> Preview:
    """Render `source` as template `name` (other templates as published) for a sample contact."""
    preview = Preview(name=name, channel=template_channel(name))
    sources = {**all_sources(rt, session), name: source}
    target = _render_target(rt, name, sources)
    if target is None:
        preview.notes.append("No email uses this layout yet, so there is nothing to preview.")
        _guard_problems(rt, preview, source, sources, {})
        return preview
    if target != name:
        preview.rendered_as = target
    step_id, campaign_name, campaign = step_for(rt.campaigns, target)
    context = sample_context(rt.settings, step_id, preview.channel, campaign_name, campaign=campaign,
                             language=language_of_template(name))
    if first_name is not None:
        context["first_name"] = message_first_name(first_name, preview.channel)  # as a real send would show it
    renderer = Renderer(rt.settings.templates_dir, overrides=sources)
    try:
        if preview.channel == "email":
            email = renderer.render_email(target, context)
            preview.subject, preview.preheader, preview.html, preview.text = (
                email.subject, email.preheader, email.html, email.text)
        else:
            preview.text = renderer.render_sms(target, context)
    except RenderError as exc:
        in_this = exc.name == name
        message = exc.message if in_this else f"in {exc.name}: {exc.message}"
        preview.problems.append(Problem(message, exc.line if in_this else None, "render"))
    if preview.channel == "sms" and preview.text:
        info = sms_info(preview.text)
        preview.sms = info
        if info.encoding != "GSM-7":
            preview.problems.append(Problem(
                "uses characters outside GSM-7 (curly quotes, long dashes, emoji?): every text would cost double",
                None, "sms-encoding", "sms"))
        if info.segments > SMS_MAX_SEGMENTS:
            preview.problems.append(Problem(
                f"{info.units} characters = {info.segments} SMS segments with sample values; "
                f"at most {SMS_MAX_SEGMENTS} allowed", None, "sms-length", "sms"))
        for first_of in _first_sms_of(rt.campaigns, name):
            preview.problems += [Problem(problem, None, "sms-first", "sms")
                                 for problem in first_sms_problems(preview.text, first_of, str(context["clinic_sms_name"]),
                                                                   check_length=False,  # length: just above
                                                                   language=language_of_template(name))]
    _guard_problems(rt, preview, source, sources, context, session)
    return preview
