"""May a member of staff text this person now, and is the text fit to send? The one rule every way of
sending a staff reply calls (`dispatch.staff_reply`), and what the inbox shows before anyone types.

Who: only a number that receives our texts (`consent.receives`): never after an opt-out (STOP), never
a blocked or suppressed number, never a number that never agreed to texts; each refusal says which.

When: a reply within `window` (default 24 hours, `DRIP_CONVERSATION_HOURS`) of the person's own last
text is *conversational* — they are waiting for an answer — and may go at any hour. Any other text
follows the law's quiet hours for the number (`content.texting_rules`: 08:00–21:00 local, 20:00 in
some states) and its rolling 24-hour count where a state has one; outside them it is refused and
the page says when it could go. Nothing is queued for later: staff decide again then.

What: not empty, at most `MAX_SEGMENTS` SMS segments, and discreet — a text shows on the lock
screen, so no diagnosis or drug may be named (`content.discretion`).

May import `models`, `content`, `contacts.consent`, `contacts.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.content.campaign import SendWindow
from patient_drip.content.discretion import sms_issues
from patient_drip.content.guard import load_policy
from patient_drip.content.rendering import sms_info
from patient_drip.content.texting_rules import texting_rules
from patient_drip.content.windows import in_window, local_label, next_opening
from patient_drip.contacts.blocks import BlockReason, blocked_reason, blocked_text, suppression_reason
from patient_drip.contacts.consent import ever_granted, receives
from patient_drip.models import Channel, Contact, InboundMessage, Message, MessageStatus

MAX_SEGMENTS = 4  # about 600 plain characters; a longer answer is a phone call
DEFAULT_WINDOW = timedelta(hours=24)
_SENT = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNKNOWN,
         MessageStatus.NEEDS_REVIEW)


@dataclass(frozen=True, slots=True)
class ReplyCheck:
    """Whether a text may go to the person now, and why (words for the page)."""

    allowed: bool
    reason: str  # why not; or, when allowed, which rule lets it go now
    conversational: bool = False
    last_inbound_at: datetime | None = None
    window_ends: datetime | None = None  # when the conversational window closes
    opens_at: datetime | None = None  # refused for the hour: when a text could go


def last_inbound(session: Session, contact_id: int) -> datetime | None:
    """When the person last texted us (any text, keywords too), or None."""
    return session.scalar(select(func.max(InboundMessage.received_at)).where(InboundMessage.contact_id == contact_id))


def _who(session: Session, contact: Contact, suppression_key: str) -> str | None:
    """Why the person may not be texted at all, or None."""
    if not contact.phone:
        return "There is no mobile number on file for this person."
    reason = blocked_reason(contact, Channel.SMS)
    if reason == BlockReason.OPTED_OUT:
        return ("They opted out of texts (STOP). No text may be sent until they text START; call them "
                "instead.")
    if reason is not None:
        return f"Their number is blocked ({blocked_text(contact, Channel.SMS)}); no text can be sent. Call them instead."
    if suppression_reason(session, suppression_key, Channel.SMS, contact.phone):
        return "Their number is on the do-not-contact list; no text can be sent. Call them instead."
    if not ever_granted(session, contact, Channel.SMS):
        return "They never agreed to texts from the clinic, so no text can be sent. Call or email them instead."
    if not receives(contact, Channel.SMS):
        return ("They agreed to texts before, but texts are off now (a new number, or waiting for their "
                "YES). No text can be sent.")
    return None


def _count_24h(session: Session, contact_id: int, now: datetime) -> list[datetime]:
    """When our texts to the person went in the last 24 hours, oldest first."""
    return list(session.scalars(select(func.coalesce(Message.sent_at, Message.created_at)).where(
        Message.contact_id == contact_id, Message.channel == Channel.SMS, Message.status.in_([str(s) for s in _SENT]),
        func.coalesce(Message.sent_at, Message.created_at) > now - timedelta(hours=24)).order_by(
        func.coalesce(Message.sent_at, Message.created_at))))


def check_reply(session: Session, contact: Contact, suppression_key: str, now: datetime, *,
                window: timedelta = DEFAULT_WINDOW) -> ReplyCheck:
    """May a staff text go to `contact` at `now`? See the module docstring for the rules, in order."""
    refused = _who(session, contact, suppression_key)
    if refused is not None:
        return ReplyCheck(False, refused)
    last = last_inbound(session, contact.id)
    if last is not None and now - last < window:
        ends = last + window
        return ReplyCheck(True, f"Conversational reply: they texted {local_label(last, contact.timezone)}, so "
                                f"you may answer at any hour until {local_label(ends, contact.timezone)}.",
                          conversational=True, last_inbound_at=last, window_ends=ends)
    rule = texting_rules().for_number(contact.phone)
    hours = SendWindow(start=rule.start, end=rule.end, spread_minutes=0)
    if not in_window(now, contact.timezone, hours):
        opens = next_opening(now, contact.timezone, hours)
        return ReplyCheck(False, f"It is {local_label(now, contact.timezone)} for them, outside the hours texts may "
                                 f"go ({rule.describe()}); they have not texted in the last "
                                 f"{int(window.total_seconds() // 3600)} hours. You can send from "
                                 f"{local_label(opens, contact.timezone)}, or call them.",
                          last_inbound_at=last, opens_at=opens)
    if rule.max_per_24h is not None:
        sent = _count_24h(session, contact.id, now)
        if len(sent) >= rule.max_per_24h:
            opens = sent[-rule.max_per_24h] + timedelta(hours=24, seconds=1)
            return ReplyCheck(False, f"{len(sent)} texts went to them in the last 24 hours, the most {rule.describe()} "
                                     f"allows. You can send from {local_label(opens, contact.timezone)}, or call them.",
                              last_inbound_at=last, opens_at=opens)
    return ReplyCheck(True, f"Within the hours texts may go ({rule.describe()}).", last_inbound_at=last)


def text_problems(body: str, policy_dir: Path) -> list[str]:
    """What is wrong with a staff text as written (empty: fit to send)."""
    text = body.strip()
    if not text:
        return ["Write the text first."]
    problems = []
    info = sms_info(text)
    if info.segments > MAX_SEGMENTS:
        problems.append(f"The text is {info.segments} segments long ({info.characters} characters, {info.encoding}); "
                        f"at most {MAX_SEGMENTS} may be sent. Shorten it, or call them.")
    for issue in sms_issues("reply", text, policy=load_policy(policy_dir)):
        problems.append("Texts show on lock screens: " + issue.message.split(" must not appear")[0] +
                        " must not be named in a text. Say it on the phone, or link to the clinic's page.")
    return problems
