"""Discretion: what shows on a lock screen or in an inbox list names no diagnosis or drug.

SPEC "Content": SMS bodies, email subjects, preheaders, sender names and the opening of the
plain-text part are discreet, even when the clinic's own name contains a restricted term (texts
then use the clinic's discreet SMS name, `DRIP_CLINIC_SMS_NAME`).

One rule, three kinds of caller:
- `brand_problems` — the settings: the discreet brand and the email sender name. Called at
  start-up by every command that sends or renders (`runtime.require_ready_to_send`, `drip simulate`)
  and reported by `drip templates check`.
- `email_issues` / `sms_issues` — one rendered message. Called by the content guard's rendered
  checks (so `drip templates check` and the template editor), and by the dispatcher before a
  send (`content.send_rules.hold_reasons`): a message that fails is held, not sent.

Restricted terms come from `policy/restricted_terms.yaml` (`content.guard.load_policy`).
"""

from __future__ import annotations

import re

from patient_drip.content.guard import DISCREET_SMS, DISCREET_SUBJECT, ContentPolicy, GuardIssue
from patient_drip.content.rendering import strip_heading_marks
from patient_drip.settings import Settings

DISCREET_PREHEADER = "discreet-preheader"
DISCREET_OPENING = "discreet-opening"
DISCREET_SENDER = "discreet-sender"
DISCREET_BRAND = "discreet-brand"

# Mail apps show up to about this many characters of a message next to its subject (Gmail's
# list shows ~100-140, Apple Mail two lines, some Android clients more): all of it must be discreet.
OPENING_CHARS = 200

_LOCK_SCREEN = "it shows on lock screens and in notifications"
# Links are not read as words: a signed token is random text ("…/b/Mg.OCDx3…" is no diagnosis), and
# a message with one would be held by chance.
_LINK = re.compile(r"\b(?:https?://|mailto:|www\.)\S+", re.I)


def plain_text_opening(preheader: str, text: str, limit: int = OPENING_CHARS) -> str:
    """What a mail app previews of an email's plain-text part: the preheader first, then the body
    with markdown heading marks ("# ") removed, whitespace collapsed, cut at `limit` characters.

    The rendered text part already starts with the preheader (`rendering.html_to_text`); it is
    not counted twice."""
    body = " ".join(strip_heading_marks(text).split())
    head = " ".join(preheader.split())
    if head and body.startswith(head):
        body = body[len(head):].lstrip()
    return " ".join(part for part in (head, body) if part)[:limit]


def _issues(label: str, text: str, rule: str, where: str, policy: ContentPolicy) -> list[GuardIssue]:
    text = _LINK.sub(" ", text)
    return [
        GuardIssue(label, 1, rule, f"{word!r} ({term.category}) must not appear in {where}: {_LOCK_SCREEN}")
        for _offset, word, term in policy.restricted_in(text)
    ]


def email_issues(name: str, *, subject: str | None, preheader: str, text: str, policy: ContentPolicy,
                 sender_name: str | None = None) -> list[GuardIssue]:
    """Discretion of one rendered email: the subject (None: the caller runs the content guard's
    `check_rendered_email`, which checks it already), the preheader, the first `OPENING_CHARS` of
    the plain-text part (`plain_text_opening`) and, when given, the sender name. Issues are
    labelled "NAME (subject)", "NAME (preheader)", "NAME (text)", "NAME (sender)"; empty when
    discreet."""
    issues = [] if sender_name is None else _issues(f"{name} (sender)", sender_name, DISCREET_SENDER,
                                                    "the sender name", policy)
    if subject is not None:
        issues += _issues(f"{name} (subject)", subject, DISCREET_SUBJECT, "an email subject", policy)
    issues += _issues(f"{name} (preheader)", preheader, DISCREET_PREHEADER, "the preheader (inbox preview)",
                      policy)
    opening = plain_text_opening(preheader, text)
    # The preheader's own words are reported once, as the preheader's.
    body_opening = opening[len(" ".join(preheader.split())):] if preheader else opening
    issues += _issues(f"{name} (text)", body_opening, DISCREET_OPENING,
                      f"the first {OPENING_CHARS} characters of the plain-text part (previewed)", policy)
    return issues


def sms_issues(name: str, text: str, *, policy: ContentPolicy) -> list[GuardIssue]:
    """Discretion of one rendered text message (labelled "NAME (sms)"): the whole body shows on
    the lock screen."""
    return _issues(f"{name} (sms)", text, DISCREET_SMS, "a text message", policy)


def brand_problems(settings: Settings, policy: ContentPolicy) -> list[str]:
    """What is wrong with the names patients see before they open anything, each naming the
    variable: the SMS brand (`DRIP_CLINIC_SMS_NAME`, required when `DRIP_CLINIC_NAME` contains a
    restricted term, and refused if it contains one itself) and the email sender name (the name
    part of `DRIP_FROM_EMAIL`, which defaults to the SMS brand). Empty when all is discreet."""
    problems: list[str] = []

    def terms(text: str) -> str:
        return ", ".join(repr(word) for _offset, word, _term in policy.restricted_in(text))

    clinic_terms = terms(settings.clinic_name)
    if settings.clinic_sms_name:
        if found := terms(settings.clinic_sms_name):
            problems.append(f"DRIP_CLINIC_SMS_NAME: {settings.clinic_sms_name!r} names {found}; the discreet name "
                            f"is shown on lock screens, so it must name no diagnosis or drug")
    elif clinic_terms:
        problems.append(f"DRIP_CLINIC_SMS_NAME: required because DRIP_CLINIC_NAME {settings.clinic_name!r} names "
                        f"{clinic_terms}; set a discreet name for texts and the email sender, e.g. "
                        f"DRIP_CLINIC_SMS_NAME=\"Riverside Wellness\"")
    from_name = settings.sender_name if settings.sender_name != settings.sms_brand else ""
    if from_name and (found := terms(from_name)):
        problems.append(f"DRIP_FROM_EMAIL: the sender name {from_name!r} names {found}; inbox lists show it - "
                        f"use a discreet name, or give the address alone (the discreet SMS name is used)")
    return problems
