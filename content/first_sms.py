"""The first text message of a sequence: what carriers expect it to say.

CTIA's Messaging Principles and Best Practices and Twilio's A2P 10DLC guidance expect the first
message of a recurring programme to name the brand, say how often messages come, say "Msg & data
rates may apply", and tell how to get help (HELP) and opt out (STOP); SPEC "Content" requires the
same, within 2 segments.

The frequency is computed from the campaign (`sms_frequency`), never written by hand, so it
stays true when a step is added; templates print it as `{{ sms_frequency }}`.

`first_sms_problems` is the one rule. `drip templates check` (`content.checks`), the template
editor (`web.admin.template_checks`) and the dispatcher (`content.send_rules.hold_reasons`) call it.
"""

from __future__ import annotations

import math
from datetime import timedelta

from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.journey import text_plan
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.content.rendering import SMS_MAX_SEGMENTS, sms_info
from patient_drip.providers.types import Channel

RATES_NOTICE = "Msg & data rates may apply"
# What the first text says in another language: the rates notice, and the keywords for help and for
# opting out, any one of each (a Spanish text may say AYUDA or HELP, ALTO or STOP; carriers and
# `contacts.replies` honour both). Plain letters only: the text must stay GSM-7.
RATES_NOTICES = {"en": RATES_NOTICE, "es": "Pueden aplicarse tarifas de mensajes y datos"}
HELP_KEYWORDS = {"en": ("HELP",), "es": ("AYUDA", "HELP")}
STOP_KEYWORDS = {"en": ("STOP",), "es": ("ALTO", "STOP")}


def first_sms_step(campaign: Campaign) -> Step | None:
    """The campaign's first SMS step (the first text a patient gets from this sequence), if any."""
    return next((step for step in campaign.message_steps if step.channel == Channel.SMS), None)


def sms_frequency(campaign: Campaign, language: str = DEFAULT_LANGUAGE) -> str:
    """"Up to N msgs over W weeks": N is the most texts one person can get (for a journey, on any one
    path through it plus the rebook path: `content.journey.text_plan`); W covers the time from the
    first of them to one day after the last, rounded up to whole weeks (send windows and the daily
    cap only ever move a text later, never add one). "" for a campaign without texts.
    In Spanish ("es"): "Hasta N mensajes en W semanas"."""
    plan = text_plan(campaign)
    if not plan.most:
        return ""
    days = (plan.last_at - plan.first_at + timedelta(days=1)) / timedelta(days=1)
    weeks = max(1, math.ceil(days / 7))
    count = plan.most
    if language == "es":
        return f"Hasta {count} mensaje{'s' if count != 1 else ''} en {weeks} semana{'s' if weeks != 1 else ''}"
    return f"Up to {count} msg{'s' if count != 1 else ''} over {weeks} week{'s' if weeks != 1 else ''}"


def first_sms_problems(text: str, campaign: Campaign, brand: str, *, check_length: bool = True,
                       language: str = DEFAULT_LANGUAGE) -> list[str]:
    """What the rendered first text `text` of `campaign` lacks: the `brand` (the discreet SMS
    name), the campaign's frequency (`sms_frequency`), `RATES_NOTICE`, HELP and STOP (words in
    capitals, as carriers' keyword lists read them), and - with `check_length` - fitting in
    `SMS_MAX_SEGMENTS` segments. Each problem is one sentence; empty when all is there.

    `language` is the text's: a Spanish one says the frequency, the rates notice and the
    keywords in Spanish (`RATES_NOTICES`, `HELP_KEYWORDS`, `STOP_KEYWORDS`)."""
    problems = []
    folded = text.casefold()
    if brand and brand.casefold() not in folded:
        problems.append(f"does not name the clinic ({brand!r}, DRIP_CLINIC_SMS_NAME)")
    frequency = sms_frequency(campaign, language)
    if frequency and frequency.casefold() not in folded:
        problems.append(f"does not say how often texts come ({frequency!r}: write {{{{ sms_frequency }}}})")
    notice = RATES_NOTICES.get(language, RATES_NOTICE)
    if notice.casefold() not in folded:
        problems.append(f"does not say {notice!r}")
    for keywords, why in ((HELP_KEYWORDS.get(language, ("HELP",)), "how to get help"),
                          (STOP_KEYWORDS.get(language, ("STOP",)), "how to opt out")):
        if not any(keyword in text for keyword in keywords):
            problems.append(f"does not say {why} ({' or '.join(keywords)})")
    if check_length:
        info = sms_info(text)
        if info.segments > SMS_MAX_SEGMENTS:
            problems.append(f"is {info.segments} segments ({info.units} characters); at most {SMS_MAX_SEGMENTS}")
    return [f"the first text message of {campaign.id} {problem}" for problem in problems]
