"""The one message context: the variables every template gets (`rendering.TEMPLATE_VARIABLES`).

Dispatch renders real messages with it; `simulate`, the campaign preview and `templates check`
render samples with it, so a template that passes the check and the preview sees exactly the
variables a real send gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.content.names import message_first_name
from patient_drip.content.rendering import SMS_MAX_SEGMENTS, ContextValue, Renderer, sms_info
from patient_drip.content.tokens import LinkTokens
from patient_drip.settings import Settings


def unsubscribe_url(settings: Settings, tokens: LinkTokens, contact_id: int, message_id: int) -> str:
    """The signed one-click unsubscribe link of one message to one contact."""
    return f"{settings.public_url}/u/{tokens.unsubscribe(contact_id, message_id)}"


def consultation_phrase(settings: Settings, language: str = DEFAULT_LANGUAGE) -> str:
    """The offer as a noun phrase for running text: "a 15-minute consultation", or "a free 15-minute
    consultation" only when the clinic says so (`DRIP_CONSULTATION_FREE`). In Spanish ("es"):
    "una consulta de 15 minutos", "una consulta gratuita de 15 minutos" (plain letters: it goes
    into texts, which must stay GSM-7)."""
    if language == "es":
        free = "gratuita " if settings.consultation_free else ""
        return f"una consulta {free}de {settings.consultation_minutes} minutos"
    free = "free " if settings.consultation_free else ""
    return f"a {free}{settings.consultation_minutes}-minute consultation"


# The booking button in another language. The clinic's own phrase (`DRIP_BOOKING_PHRASE`) is
# English; until there is a setting per language, the Spanish button says this.
BOOKING_PHRASES = {"es": "Reserve una consulta"}


def booking_phrase(settings: Settings, language: str = DEFAULT_LANGUAGE) -> str:
    """The words of the booking button in `language`."""
    return BOOKING_PHRASES.get(language, settings.booking_phrase)


def message_context(settings: Settings, tokens: LinkTokens, *, first_name: str, contact_id: int, message_id: int,
                    campaign_name: str, step_id: str, channel: str, sms_frequency: str,
                 language: str = DEFAULT_LANGUAGE) -> dict[str, ContextValue]:
    """Every template variable for message `message_id` of step `step_id` to contact `contact_id`;
    the links are signed with `tokens` (a preview key gives links the live service refuses).

    `first_name` is the stored name; what the template gets is `names.message_first_name` of it
    (a name that is not a name becomes "", non-GSM letters in an SMS are transliterated), so no
    caller can put a raw name into a message. `sms_frequency` is the campaign's
    `content.first_sms.sms_frequency` (in `language`). `language` is the message's ("es": the
    Spanish template of the step): the offer and the booking button are worded in it."""
    return {
        "first_name": message_first_name(first_name, channel),
        "clinic_name": settings.clinic_name,
        "clinic_sms_name": settings.sms_brand,  # the discreet brand: texts, the email header
        "sms_frequency": sms_frequency,
        "clinic_phone": settings.clinic_phone,
        "clinic_address": settings.clinic_address,
        "consultation_free": settings.consultation_free,
        "consultation_minutes": settings.consultation_minutes,
        "consultation": consultation_phrase(settings, language),
        "booking_phrase": booking_phrase(settings, language),
        "booking_link": f"{settings.public_url}/b/{tokens.booking(message_id)}",
        "unsubscribe_link": unsubscribe_url(settings, tokens, contact_id, message_id),
        "campaign_name": campaign_name,
        "step_id": step_id,
        "channel": str(channel),
    }


@dataclass(frozen=True, slots=True)
class FittedSms:
    """An SMS body as it will be sent, and whether the name had to be left out to fit."""

    body: str
    name_dropped: bool = False
    segments_with_name: int = 0  # when dropped: how many segments the named rendering needed


class SmsRenderer(Protocol):
    """What renders a text: a `Renderer`, or the dispatcher's memo in front of one."""

    def render_sms(self, name: str, context: Mapping[str, ContextValue]) -> str: ...


def render_sms_fitted(renderer: SmsRenderer | Renderer, template: str, context: Mapping[str, ContextValue]) -> FittedSms:
    """Render an SMS; when it would exceed `SMS_MAX_SEGMENTS` with the contact's name, render it
    again nameless (`first_name` ""), which is what `templates check` proved fits. The dispatcher
    records a dropped name on the contact's timeline; `drip simulate` applies the same rule.
    A nameless rendering that still does not fit is returned as it is (the template is at fault,
    and `templates check` reports it). Raises `RenderError` like `Renderer.render_sms`."""
    body = renderer.render_sms(template, context)
    segments = sms_info(body).segments
    if segments <= SMS_MAX_SEGMENTS or not context.get("first_name"):
        return FittedSms(body)
    nameless = renderer.render_sms(template, {**context, "first_name": ""})
    return FittedSms(nameless, name_dropped=True, segments_with_name=segments)
