"""Render one step for one contact, as it will be sent, and say whether it may be sent.

The dispatcher's one render call: the message context, the memo that renders each step once (`content.render_memo`),
the SMS fitted to two segments (`content.context.render_sms_fitted`: a name that makes a text too
long is left out) and the send-time content rules (`content.send_rules`: a message that fails one
is held, not sent). Pure of database work but `record_name_dropped`, which writes the timeline row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign, Step
from patient_drip.content.context import message_context, render_sms_fitted
from patient_drip.content.first_sms import sms_frequency
from patient_drip.content.guard import load_policy
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.content.render_memo import MemoRenderer
from patient_drip.content.rendering import ContextValue, RenderedEmail, Renderer
from patient_drip.content.send_rules import hold_reasons, reason_text
from patient_drip.models import Channel, Contact, Enrollment, EventKind, add_event
from patient_drip.runtime import Runtime


@dataclass(frozen=True, slots=True)
class RenderedStep:
    """A step as it would go out. `segments_with_name` is 0, or how many SMS segments the text
    needed with the name when it goes nameless; `hold_reason` says why it must not be sent, or None."""

    subject: str | None
    html: str | None
    text: str
    unsubscribe: str
    segments_with_name: int = 0
    hold_reason: str | None = None


class StepRenderer:
    """Renders steps for one dispatcher (it keeps the email memo between messages)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._memo = MemoRenderer()
        # Read once: `load_policy` resolves its folder on every call (a filesystem walk per message).
        self._policy = load_policy(rt.settings.policy_dir)

    @property
    def memo(self) -> MemoRenderer:
        """The memo in front of the renderer (its counters are read by the benchmark)."""
        return self._memo

    def render(self, message_id: int, contact: Contact, campaign: Campaign, step: Step,
               language: str = DEFAULT_LANGUAGE) -> RenderedStep:
        """This step (its template already the one of the enrollment's variant in `language`) for this
        contact, with the links of message `message_id`. Raises RenderError."""
        context = message_context(self.rt.settings, self.rt.tokens, first_name=contact.first_name,
                                  contact_id=contact.id, message_id=message_id, campaign_name=campaign.name,
                                  step_id=step.id, channel=step.channel,
                                  sms_frequency=sms_frequency(campaign, language), language=language)
        unsubscribe = str(context["unsubscribe_link"])
        if step.channel == Channel.EMAIL:
            email = self._memo.render_email(self.rt.renderer, step.template, context)
            return RenderedStep(email.subject, email.html, email.text, unsubscribe,
                                hold_reason=self._check(email, campaign, step, context, language))
        fitted = render_sms_fitted(_MemoSms(self._memo, self.rt.renderer), step.template, context)
        return RenderedStep(None, None, fitted.body, unsubscribe, fitted.segments_with_name,
                            self._check(fitted.body, campaign, step, context, language))

    def _check(self, rendered: RenderedEmail | str, campaign: Campaign, step: Step,
               context: dict[str, ContextValue], language: str) -> str | None:
        reasons = hold_reasons(rendered, campaign=campaign, step=step, values=context, settings=self.rt.settings,
                               policy=self._policy, language=language)
        return reason_text(reasons) if reasons else None


class _MemoSms:
    """A text rendered through the memo (`render_sms_fitted` renders once, or twice without the name)."""

    def __init__(self, memo: MemoRenderer, renderer: Renderer) -> None:
        self._memo, self._renderer = memo, renderer

    def render_sms(self, name: str, context: Mapping[str, ContextValue]) -> str:
        return self._memo.render_sms(self._renderer, name, context)


def record_name_dropped(session: Session | None, message_id: int, enrollment: Enrollment, step: Step,
                        segments: int, now: datetime) -> None:
    """On the contact's timeline: this text went out without the name, which made it too long."""
    if session is None:  # not reached: the message was loaded through the pass's session
        return
    add_event(session, EventKind.SMS_NAME_DROPPED, now, contact_id=enrollment.contact_id,
              enrollment_id=enrollment.id, message_id=message_id, step=step.id, segments_with_name=segments)
