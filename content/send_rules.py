"""The content rules a rendered message must pass before it is sent.

The linter (`drip templates check`) and the editor see templates with sample values; only the
send sees the real ones (the clinic name from the settings, a published layout, the contact's
name). So the dispatcher asks `hold_reasons` about each new message after rendering it, and a
message with any reason is *held*: stored with status `held` and the reason, shown on the
contact's timeline, never handed to a provider and never retried (the same content would fail
again; staff fix the template or the settings, and the next messages use the fix). The sequence
goes on: the next step is due at its own time, like a skipped step. A held message is not
"skipped" because nothing about the contact stopped it: the content did.

The rules (each is one function, shared with the linter and the editor):
- discretion of the subject, preheader, sender name, plain-text opening and SMS body
  (`content.discretion`);
- the parts every email carries: unsubscribe link, postal address, 988, booking link; and the
  booking link in a text (`content.required_parts`);
- what the first text of a sequence says (`content.first_sms`; its length is left to the
  renderer and the name fallback: a long name must not hold the welcome text).

Claims are not re-checked here: they are a template's wording, approved in the editor.
"""

from __future__ import annotations

from collections.abc import Mapping

from patient_drip.content import discretion
from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.first_sms import first_sms_step, first_sms_problems
from patient_drip.content.guard import ContentPolicy
from patient_drip.content.languages import DEFAULT_LANGUAGE, template_in_language
from patient_drip.content.rendering import RenderedEmail
from patient_drip.content.required_parts import missing_parts
from patient_drip.providers.types import Channel
from patient_drip.settings import Settings

REASON_MAX_CHARS = 500  # Message.last_error


def hold_reasons(rendered: RenderedEmail | str, *, campaign: Campaign, step: Step, values: Mapping[str, object],
                 settings: Settings, policy: ContentPolicy, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """Why this rendered message must not be sent (empty: send it).

    `rendered` is the step's email, or its text message body; `values` the context it was
    rendered with (`content.context.message_context`). Each reason is "[rule] what is wrong".
    `language` is the message's (the step's template in it, `languages.template_in_language`,
    was rendered): its rules apply (`policy.in_language`), and the first text's in it."""
    name = template_in_language(step.template, language)
    policy = policy.in_language(language)
    reasons: list[str] = []
    if isinstance(rendered, RenderedEmail):
        issues = discretion.email_issues(name, subject=rendered.subject, preheader=rendered.preheader,
                                         text=rendered.text, sender_name=settings.sender_name, policy=policy)
        reasons += [f"[{i.rule}] {i.file}: {i.message}" for i in issues]
        for part, output in (("the HTML part", rendered.html), ("the plain-text part", rendered.text)):
            # The plain-text part is html2text of the HTML: what a reader sees of both.
            reasons += [f"[{rule}] {part} {message}"
                        for rule, message in missing_parts("email", output, rendered.text, values)]
        return reasons
    reasons += [f"[{i.rule}] {i.file}: {i.message}" for i in discretion.sms_issues(name, rendered, policy=policy)]
    reasons += [f"[{rule}] the text message {message}" for rule, message in missing_parts("sms", rendered, rendered,
                                                                                            values)]
    if step.channel == Channel.SMS and first_sms_step(campaign) == step:
        reasons += [f"[first-sms] {problem}"
                    for problem in first_sms_problems(rendered, campaign, settings.sms_brand, check_length=False,
                                                      language=language)]
    return reasons


def reason_text(reasons: list[str]) -> str:
    """The reasons as one line for the send record (cut to `REASON_MAX_CHARS`)."""
    text = "held: " + "; ".join(reasons)
    return text if len(text) <= REASON_MAX_CHARS else text[:REASON_MAX_CHARS - 1] + "…"
