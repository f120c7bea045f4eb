"""`drip templates check`: every campaign and template, validated the way sending would use them.

Problems are `file:line: message` strings. Checks: campaign files parse; every template compiles
and renders with the sample variables (strict: an unknown variable is an error); emails have a
subject; each SMS fits in two segments even with long sample values and uses GSM-7; the first SMS
of each campaign says what carriers expect (`content.first_sms`); the discreet names in the
settings, preheaders and plain-text openings (`content.discretion`); and the content guard's rules
(`content.guard`).

Every template is checked in its own language (`content.languages`): a template under
``templates/es/`` with the Spanish rules, claims library and sample values, the Spanish first text
of a campaign with the Spanish first-text rule; a template under ``templates/es/`` whose English
original does not exist is an error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patient_drip.content.campaign import Campaign, CampaignError, load_campaigns
from patient_drip.content.context import ContextValue, message_context
from patient_drip.content.journey import templates_of
from patient_drip.content.languages import template_in_language
from patient_drip.content.first_sms import first_sms_problems, first_sms_step, sms_frequency
from patient_drip.content.languages import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    english_template,
    language_of_template,
    orphan_translations,
    template_in_language,
)
from patient_drip.content.rendering import SMS_MAX_SEGMENTS, RenderedEmail, RenderError, Renderer, sms_info
from patient_drip.content.texting_rules import rules_without_overlap
from patient_drip.settings import Settings
from patient_drip.content.tokens import LinkTokens
from patient_drip.content.claim_library import library_from_file
from patient_drip.content.claims import check_claims, source_line
from patient_drip.content.template_store import live_part, live_files

# Long-but-plausible values: a template that fits with these fits for real contacts.
SAMPLE_LONG_FIRST_NAME = "Christopher"
# For a template no campaign sends yet: a two-digit count fits every real campaign's phrase.
SAMPLE_SMS_FREQUENCY = "Up to 10 msgs over 10 weeks"
SAMPLE_SMS_FREQUENCIES = {"es": "Hasta 10 mensajes en 10 semanas"}
# The longest discreet SMS name the settings allow (SMS_NAME_MAX_CHARS): a text that fits with it
# still fits after the clinic changes its name.
SAMPLE_LONG_SMS_NAME = "Riverside Wellness Center West"


def sample_context(settings: Settings, step_id: str, channel: str, campaign_name: str, *,
                   longest_offer: bool = False, campaign: Campaign | None = None,
                   language: str = DEFAULT_LANGUAGE) -> dict[str, ContextValue]:
    """The message context for checking a template: a long name and large ids (long links). With
    `longest_offer`, the longest offer the settings allow (free, 3-digit minutes) instead of the
    clinic's own, so a text that fits now still fits after the clinic changes its offer, and the
    longest discreet SMS name. The message frequency is `campaign`'s (a sample one without it).
    `language`: the template's (`languages.language_of_template`); the offer, the booking button
    and the frequency are worded in it."""
    if longest_offer:
        settings = settings.model_copy(update={"consultation_free": True, "consultation_minutes": 120,
                                               "clinic_sms_name": max(settings.sms_brand, SAMPLE_LONG_SMS_NAME,
                                                                      key=len)})
    frequency = (sms_frequency(campaign, language) if campaign is not None
                 else SAMPLE_SMS_FREQUENCIES.get(language, SAMPLE_SMS_FREQUENCY))
    return message_context(settings, LinkTokens("template-check"), first_name=SAMPLE_LONG_FIRST_NAME,
                           contact_id=9_999_999, message_id=99_999_999, campaign_name=campaign_name,
                           step_id=step_id, channel=channel, sms_frequency=frequency, language=language)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def check_all(settings: Settings) -> tuple[list[str], str]:
    """All problems found, and a one-line summary of what was checked."""
    problems: list[str] = []
    templates_dir = settings.templates_dir
    try:
        campaigns = load_campaigns(settings.campaigns_dir, templates_dir)
    except CampaignError as exc:
        return [str(exc)], ""
    # What may go live: a clinician-pending passage (the safety paragraph) waits for clinical review
    # in the staff UI, so the files are checked without it (as `drip init` publishes them).
    renderer = Renderer(templates_dir, overrides=live_files(templates_dir))
    guard = _load_guard(settings, problems)
    checked = 0
    used: dict[str, tuple[str, str, Campaign | None]] = {}
    for campaign in campaigns.values():
        first_sms = first_sms_step(campaign)
        if first_sms is not None:
            for rule in rules_without_overlap(campaign.send_window):
                problems.append(f"{campaign.source_file or campaign.id}:1: send_window "
                                f"{campaign.send_window.start:%H:%M}-{campaign.send_window.end:%H:%M} leaves no time "
                                f"for texts under {rule.describe()}")
        for step in campaign.message_steps:
            for template in templates_of(step):  # its own and its A/B variants', in every language
                for language in campaign.languages:
                    used.setdefault(template_in_language(template, language), (step.id, str(step.channel), campaign))
            if first_sms is not None and step is first_sms:
                for language in LANGUAGES:  # the first text in each language it is written in
                    name = template_in_language(step.template, language)
                    if language != DEFAULT_LANGUAGE and not (templates_dir / name).is_file():
                        continue
                    body = _render_sms(renderer, settings, name, step.id, campaign, templates_dir, problems)
                    if body is not None:
                        brand = str(sample_context(settings, step.id, "sms", campaign.name, longest_offer=True,
                                                   campaign=campaign)["clinic_sms_name"])
                        problems += [f"{_relative(templates_dir / name, templates_dir)}:1: [first-sms] {p}"
                                     for p in first_sms_problems(body, campaign, brand, language=language)]
    for name in orphan_translations(templates_dir):
        problems.append(f"{_relative(templates_dir / name, templates_dir)}:1: [translation] a translation of "
                        f"{english_template(name)}, which does not exist: rename it after its English original or "
                        f"remove it")
    for path in sorted(templates_dir.rglob("*")):
        if not path.is_file() or path.name.startswith((".", "_")):
            continue
        name = str(path.relative_to(templates_dir))
        # A translation is checked as the step that sends its English original (es/sms/… as sms/…).
        base, language = english_template(name), language_of_template(name)
        step_id, channel, campaign = used.get(base, ("sample-step", "email" if base.startswith("email/") else "sms",
                                                     None))
        campaign_name = campaign.name if campaign is not None else "Sample"
        checked += 1
        display = _relative(path, templates_dir)
        if base.startswith("email/"):
            try:
                email = renderer.render_email(name, sample_context(settings, step_id, "email", campaign_name,
                                                                   campaign=campaign, language=language))
            except RenderError as exc:
                problems.append(_located(display, exc))
                continue
            if guard is not None:
                problems.extend(guard(path, name, "email", email, campaign))
        elif base.startswith("sms/"):
            body = _render_sms(renderer, settings, name, step_id, campaign, templates_dir, problems)
            if body is None:
                continue
            info = sms_info(body)
            if info.encoding != "GSM-7":
                problems.append(f"{display}:1: uses characters outside GSM-7 (curly quotes, long dashes, emoji?): "
                                f"every SMS would cost double")
            if info.segments > SMS_MAX_SEGMENTS:
                problems.append(f"{display}:1: {info.units} characters = {info.segments} SMS segments with sample "
                                f"values; at most {SMS_MAX_SEGMENTS} allowed")
            if guard is not None:
                problems.extend(guard(path, name, "sms", body, campaign))
    unused = sorted(set(used) - {str(p.relative_to(templates_dir)) for p in templates_dir.rglob("*") if p.is_file()})
    for name in unused:
        problems.append(f"{name}: referenced by a campaign but missing")
    return list(dict.fromkeys(problems)), f"{len(campaigns)} campaign(s), {checked} template(s)"


def _located(display: str, exc: RenderError) -> str:
    """`file:line: message`; an error inside an extended layout is reported there, via the child."""
    if display.endswith(exc.name):
        return f"{display}:{exc.line or 1}: {exc.message}"
    return f"{display}:1: in {exc.name}:{exc.line or 1}: {exc.message}"


def _render_sms(renderer: Renderer, settings: Settings, name: str, step_id: str, campaign: Campaign | None,
                templates_dir: Path, problems: list[str]) -> str | None:
    try:
        return renderer.render_sms(name, sample_context(settings, step_id, "sms", campaign.name if campaign else "Sample",
                                                        longest_offer=True, campaign=campaign,
                                                        language=language_of_template(name)))
    except RenderError as exc:
        problems.append(_located(_relative(templates_dir / name, templates_dir), exc))
        return None


def _load_guard(settings: Settings, problems: list[str]):  # type: ignore[no-untyped-def]
    """The content guard's rendered-output checks bound to the policy; source checks (layouts
    included) are run here once for the whole folder. None if the policy cannot be read."""
    from patient_drip.content import discretion
    from patient_drip.content import guard as content_guard

    try:
        policy = content_guard.load_policy(settings.policy_dir)
    except Exception as exc:  # a broken policy file is itself a problem to report
        problems.append(f"{settings.policy_dir}: cannot read the content policy: {exc}")
        return None
    problems += [f"settings: {problem}" for problem in discretion.brand_problems(settings, policy)]
    for issue in content_guard.check_templates_dir(settings.templates_dir, policy):
        problems.append(str(issue).replace(str(settings.templates_dir.parent) + "/", ""))

    libraries = {language: library_from_file(settings.policy_dir, language) for language in LANGUAGES}
    english_policy = policy

    def run(path: Path, name: str, channel: str, rendered: object, campaign: Campaign | None) -> list[str]:
        display = _relative(path, settings.templates_dir)
        language = language_of_template(name)
        # Each language's rules, and its claims only: a Spanish sentence matches a Spanish claim.
        policy, library = english_policy.in_language(language), libraries[language]
        # The values the output was rendered with (texts: the longest offer, see _render_sms).
        variables = sample_context(settings, "sample-step", channel, "Sample", longest_offer=channel == "sms",
                                   campaign=campaign, language=language)
        if channel == "email":
            issues = content_guard.check_rendered_email(display, rendered, variables=variables, policy=policy)
            email: RenderedEmail = rendered  # type: ignore[assignment]
            issues += discretion.email_issues(display, subject=None, preheader=email.preheader, text=email.text,
                                              policy=policy)
        else:
            issues = content_guard.check_rendered_sms(display, str(rendered), variables=variables, policy=policy)
        return [str(issue) for issue in issues] + _claim_lines(path, display, channel, rendered, variables, policy,
                                                               library)

    def _claim_lines(path: Path, display: str, channel: str, rendered: Any, variables: dict[str, Any],
                     policy: Any, library: Any) -> list[str]:
        """New claims (against the shipped library) and refused wording, at the line of the file
        where the sentence starts (absolute wording in the file itself is reported by the guard)."""
        if channel == "email":
            report = check_claims("email", library=library, terms=policy.medical_terms, absolutes=policy.absolutes,
                                  html=rendered.html, subject=rendered.subject, variables=variables)
        else:
            report = check_claims("sms", library=library, terms=policy.medical_terms, absolutes=policy.absolutes,
                                  text=str(rendered), variables=variables)
        source = live_part(path.read_text(encoding="utf-8"))
        return [f"{display}:{source_line(source, f.sentence.text)}: [{'new-claim' if f.status == 'new' else 'absolute-claim'}] "
                f"“{f.sentence.text}”: {f.message}" for f in (*report.new, *report.refused)]

    return run
