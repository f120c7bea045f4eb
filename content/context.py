"""The one message context: the variables every template gets (`rendering.TEMPLATE_VARIABLES`).

Dispatch renders real messages with it; `simulate`, the campaign preview and `templates check`
render samples with it, so a template that passes the check and the preview sees exactly the
variables a real send gives it.
"""

from __future__ import annotations

from patient_drip.content.rendering import ContextValue
from patient_drip.content.tokens import LinkTokens
from patient_drip.settings import Settings


def unsubscribe_url(settings: Settings, tokens: LinkTokens, contact_id: int, message_id: int) -> str:
    """The signed one-click unsubscribe link of one message to one contact."""
    return f"{settings.public_url}/u/{tokens.unsubscribe(contact_id, message_id)}"


def consultation_phrase(settings: Settings) -> str:
    """The offer as a noun phrase for running text: "a 15-minute consultation", or "a free 15-minute
    consultation" only when the clinic says so (`DRIP_CONSULTATION_FREE`)."""
    free = "free " if settings.consultation_free else ""
    return f"a {free}{settings.consultation_minutes}-minute consultation"


def message_context(settings: Settings, tokens: LinkTokens, *, first_name: str, contact_id: int, message_id: int,
                    campaign_name: str, step_id: str, channel: str, sms_frequency: str) -> dict[str, ContextValue]:
    """Every template variable for message `message_id` of step `step_id` to contact `contact_id`;
    the links are signed with `tokens` (a preview key gives links the live service refuses).
    `sms_frequency` is the campaign's `content.first_sms.sms_frequency`."""
    return {
        "first_name": first_name,
        "clinic_name": settings.clinic_name,
        "clinic_sms_name": settings.sms_brand,  # the discreet brand: texts, the email header
        "sms_frequency": sms_frequency,
        "clinic_phone": settings.clinic_phone,
        "clinic_address": settings.clinic_address,
        "consultation_free": settings.consultation_free,
        "consultation_minutes": settings.consultation_minutes,
        "consultation": consultation_phrase(settings),
        "booking_phrase": settings.booking_phrase,
        "booking_link": f"{settings.public_url}/b/{tokens.booking(message_id)}",
        "unsubscribe_link": unsubscribe_url(settings, tokens, contact_id, message_id),
        "campaign_name": campaign_name,
        "step_id": step_id,
        "channel": str(channel),
    }
