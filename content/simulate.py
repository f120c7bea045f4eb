"""`drip simulate`: what a sample contact would receive, in order, fully rendered — no database."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from patient_drip.content.campaign import Campaign
from patient_drip.content.context import message_context, render_sms_fitted
from patient_drip.content.first_sms import sms_frequency
from patient_drip.models import Channel
from patient_drip.content.rendering import Renderer, sms_info
from patient_drip.content.template_store import live_files
from patient_drip.settings import Settings
from patient_drip.content.tokens import LinkTokens

SAMPLE_FIRST_NAME = "Alex"
PREVIEW_KEY = "simulation-preview-key"  # preview links are not valid on the live service


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    step: str
    channel: str
    offset_seconds: int
    subject: str | None
    text: str
    html: str | None
    name_dropped: bool = False  # the SMS was too long with the name: sent nameless (not in the JSON)


def simulate_campaign(settings: Settings, campaign: Campaign, renderer: Renderer | None = None,
                      first_name: str = SAMPLE_FIRST_NAME) -> list[SimulatedMessage]:
    """Every message in send order, rendered for a sample contact named `first_name` (ids are
    illustrative). The name goes through the same rules as a real send: the one message context
    cleans it, and an SMS that would exceed two segments with it is rendered nameless."""
    # The files as they may go live: without a clinician-pending passage (see template_store.live_part).
    renderer = renderer or Renderer(settings.templates_dir, overrides=live_files(settings.templates_dir))
    tokens = LinkTokens(PREVIEW_KEY)
    result = []
    for index, step in enumerate(campaign.steps, start=1):
        if not step.enabled:
            continue  # off in this timing version: skipped, never sent
        context = message_context(settings, tokens, first_name=first_name, contact_id=1, message_id=index,
                                  campaign_name=campaign.name, step_id=step.id, channel=step.channel,
                                  sms_frequency=sms_frequency(campaign))
        if step.channel == Channel.EMAIL:
            email = renderer.render_email(step.template, context)
            result.append(SimulatedMessage(step.id, "email", int(step.delay.total_seconds()), email.subject,
                                           email.text, email.html))
        else:
            fitted = render_sms_fitted(renderer, step.template, context)
            result.append(SimulatedMessage(step.id, "sms", int(step.delay.total_seconds()), None, fitted.body, None,
                                           fitted.name_dropped))
    return result


def format_offset(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"day {days} +{hours:02d}:{rest // 60:02d}"


def as_json(messages: list[SimulatedMessage]) -> str:
    """The SPEC's JSON array: step, channel, offset_seconds, subject, text, html per message."""
    fields = ("step", "channel", "offset_seconds", "subject", "text", "html")
    return json.dumps([{key: asdict(message)[key] for key in fields} for message in messages], indent=2,
                      ensure_ascii=False)


def as_text(campaign: Campaign, messages: list[SimulatedMessage]) -> str:
    window = campaign.send_window
    lines = [
        f"Campaign {campaign.id}: {campaign.name}"
        f"{f' (timing version {campaign.version})' if campaign.version != 1 else ''}",
        f"{len(messages)} messages; send window {window.start:%H:%M}-{window.end:%H:%M} in the contact's time zone"
        f" (SMS always{', email too' if window.email else ''}); at most {campaign.frequency_cap_per_day} a day.",
        "",
    ]
    for number, message in enumerate(messages, start=1):
        header = f"[{number}] {format_offset(message.offset_seconds)}  {message.channel.upper()}  step {message.step}"
        lines.append(header)
        lines.append("-" * len(header))
        if message.channel == "email":
            lines.append(f"Subject: {message.subject}")
            lines.append("")
            lines.append(message.text.rstrip())
        else:
            info = sms_info(message.text)
            lines.append(message.text)
            lines.append(f"({info.characters} characters, {info.encoding}, {info.segments} segment"
                         f"{'s' if info.segments != 1 else ''}"
                         f"{'; sent without the name, which made it too long' if message.name_dropped else ''})")
        lines.append("")
    return "\n".join(lines)
