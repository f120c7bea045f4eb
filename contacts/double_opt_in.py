"""SMS double opt-in: texts to a number start only after the number itself has said YES.

- `request_sms_confirmation`: the first and only text an unconfirmed number gets is the
  confirmation text (`policy/consent_wording.yaml`, `sms_confirmation`: "<brand>: Reply YES to get
  texts from <brand> ... HELP ... STOP"), at most once per number, ever. `sms_confirmation` is
  unique on a keyed hash of the number (so the rule outlives erasure, like the suppression list),
  and the row is written in the request's transaction, before anything is handed to the provider:
  neither a second form nor two forms at once can send a second one.
- `confirm_by_text`: a YES (or START) from the number, through the signed Twilio webhook, grants
  SMS consent with the exact text the person answered as the wording and the inbound message as
  proof, and starts the campaign the form asked for if it is not running yet.
- `remember_stranger_stop`: a STOP from a number that is no contact goes on the suppression list,
  so that when that number signs up later it gets no text at all, not even the confirmation text,
  until the number itself texts START or YES.

May import `models`, `content`, and the other `contacts` rule modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import yaml
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.contacts.blocks import (BlockReason, blocked_text, consent_can_lift, suppress, suppression_reason,
                                          unblock_channel)
from patient_drip.contacts.consent import (WORDING_FILE, ConsentGrant, ConsentWording, Wording, ever_granted,
                                           grant_consent)
from patient_drip.contacts.enrollment import EnrollmentError, enroll
from patient_drip.contacts.fields import address_hash
from patient_drip.contacts.records import add_rows, audit_row, event_row
from patient_drip.models import Channel, ConsentMethod, Contact, EventKind, SmsConfirmation, Suppression

# The suppression reason of a STOP from a number that was no contact: the one suppression the
# number's own START/YES may lift (a carrier block, a bounce or an erasure never is).
STRANGER_STOP = "texted STOP before signing up"


@dataclass(frozen=True, slots=True)
class Notice:
    """A message to one person outside any sequence (a confirmation request), handed to the
    provider after the request's transaction committed. `ref_id` is the row it belongs to."""

    kind: str  # "sms_confirmation" or "change_confirmation"
    ref_id: int
    channel: Channel
    to: str
    text: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationWording:
    """The published double opt-in texts: the current version's template and the answer to YES."""

    version: str
    template: str
    confirmed: str


@lru_cache(maxsize=8)
def _confirmation_wording(policy_dir: Path, language: str = DEFAULT_LANGUAGE) -> ConfirmationWording:
    """The double opt-in texts in `language` (`current_in` / `confirmed_in`; English where the
    language has none)."""
    data = yaml.safe_load((policy_dir / WORDING_FILE).read_text(encoding="utf-8"))["sms_confirmation"]
    version = str((data.get("current_in") or {}).get(language) or data["current"])
    confirmed = (data.get("confirmed_in") or {}).get(language) or data["confirmed"]
    fold = " ".join
    return ConfirmationWording(version, fold(str(data["versions"][version]).split()), fold(str(confirmed).split()))


def confirmation_text(policy_dir: Path, brand: str, language: str = DEFAULT_LANGUAGE) -> Wording:
    """The double opt-in text as the number would get it now in the contact's `language`: version
    and exact text, naming `brand`."""
    wording = _confirmation_wording(policy_dir, language)
    return Wording(wording.version, wording.template.replace("{brand}", brand))


def confirmed_reply(policy_dir: Path, brand: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The answer to a YES that confirmed the number (frequency, rates, HELP, STOP), in `language`."""
    return _confirmation_wording(policy_dir, language).confirmed.replace("{brand}", brand)


def _row_for(session: Session, suppression_key: str, phone: str) -> SmsConfirmation | None:
    digest = address_hash(suppression_key, Channel.SMS, phone)
    return session.scalar(select(SmsConfirmation).where(SmsConfirmation.phone_hash == digest))


def request_sms_confirmation(session: Session, suppression_key: str, shown: Wording, contact: Contact,
                             campaign_id: str, form_wording_version: str | None, now: datetime) -> Notice | None:
    """Ask the contact's number to confirm texts by replying YES. Returns the one text to send, or
    None: the number had its confirmation request before (answered or not: never a second text),
    or texts to it are blocked by more than an opt-out (a STOP before signing up, a carrier block,
    an invalid number): then the request is recorded but not sent, and only the number's own
    START/YES can confirm it. `shown` is `confirmation_text(...)`."""
    if not contact.phone or _row_for(session, suppression_key, contact.phone) is not None:
        return None
    held = None if consent_can_lift(contact, Channel.SMS) else f"not sent: {blocked_text(contact, Channel.SMS)}"
    row = SmsConfirmation(phone_hash=address_hash(suppression_key, Channel.SMS, contact.phone), contact_id=contact.id,
                          campaign_id=campaign_id, form_wording_version=form_wording_version,
                          wording_version=shown.version, text=shown.text, requested_at=now, send_error=held)
    try:
        with session.begin_nested():  # another request for the same number may have won meanwhile
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    if held:
        return None
    add_rows(session, [event_row(EventKind.SMS_CONFIRMATION_SENT, now, contact.id, wording_version=shown.version)])
    return Notice("sms_confirmation", row.id, Channel.SMS, contact.phone, shown.text)


def record_confirmation_send(session: Session, confirmation_id: int, provider_id: str | None, error: str | None,
                             now: datetime) -> None:
    """What the provider answered for the confirmation text (`provider_id`, or `error`)."""
    row = session.get(SmsConfirmation, confirmation_id)
    if row is None:
        return
    if error:
        row.send_error = error[:200]
    else:
        row.sent_at, row.provider_message_id = now, (provider_id or "")[:100] or None


class TextConfirmation(StrEnum):
    """What a YES/START from a contact's number did."""

    CONFIRMED = "confirmed"  # the number's double opt-in: texts start now
    RESTARTED = "restarted"  # texting consent given before, re-affirmed
    NOTHING = "nothing"  # never asked for, or blocked by more than an opt-out: no consent created


def confirm_by_text(session: Session, campaigns: dict[str, Campaign], wording: ConsentWording, suppression_key: str,
                    contact: Contact, keyword: str, inbound_id: int, now: datetime) -> TextConfirmation:
    """A YES or START (`keyword`) from the contact's own number (inbound message `inbound_id`).

    - The number's confirmation request is open: SMS consent is granted with the exact text the
      person answered as its wording (or, when that text was held because the number had texted
      STOP before signing up, with the form's wording they ticked: their own START/YES is the
      new confirmation, and it lifts that suppression), the inbound message as proof; the
      campaign the form asked for starts if it is not running. CONFIRMED.
    - Else, a person who consented to texts before re-affirms it with the current SMS wording
      (which names STOP and START), as carriers expect of START. RESTARTED.
    - Else nothing is created (consent is recorded only as given): NOTHING. A block other than an
      opt-out (an invalid number, a carrier block, erasure) is never lifted by a keyword."""
    phone = contact.phone or ""
    row = _row_for(session, suppression_key, phone) if phone else None
    note = f"replied {keyword!r} (inbound #{inbound_id})"
    if row is not None and row.confirmed_at is None:
        if suppression_reason(session, suppression_key, Channel.SMS, phone) == STRANGER_STOP:
            _lift_stranger_stop(session, suppression_key, contact, phone, now)
        if not consent_can_lift(contact, Channel.SMS):
            return TextConfirmation.NOTHING
        shown = (Wording(row.wording_version, row.text) if row.send_error is None
                 else wording.wording(Channel.SMS, row.form_wording_version))
        grant_consent(session, wording, contact, ConsentGrant(Channel.SMS, ConsentMethod.SMS_CONFIRMATION,
                                                              note=f"double opt-in: {note}"),
                      now, "patient:sms", shown=shown)
        row.confirmed_at, row.confirmed_inbound_id, row.contact_id = now, inbound_id, contact.id
        add_rows(session, [event_row(EventKind.SMS_CONFIRMED, now, contact.id, inbound_id=inbound_id,
                                     wording_version=shown.version),
                           audit_row("patient:sms", "sms_confirmed", now, contact.id, inbound_id=inbound_id)])
        campaign = campaigns.get(row.campaign_id)
        if campaign is not None:
            try:
                enroll(session, contact, campaign, now, "patient:sms", source="sms_confirmation")
            except EnrollmentError:  # already running (its texts go on from here) or ended: left as it is
                pass
        return TextConfirmation.CONFIRMED
    if not consent_can_lift(contact, Channel.SMS):
        return TextConfirmation.NOTHING
    if ever_granted(session, contact, Channel.SMS):
        grant_consent(session, wording, contact, ConsentGrant(Channel.SMS, ConsentMethod.SMS_KEYWORD, note=note),
                      now, "patient:sms")
        return TextConfirmation.RESTARTED
    return TextConfirmation.NOTHING


def _lift_stranger_stop(session: Session, suppression_key: str, contact: Contact, phone: str, now: datetime) -> None:
    """The number that texted STOP before signing up now texts START/YES itself: that STOP is over."""
    session.execute(delete(Suppression).where(
        Suppression.channel == Channel.SMS, Suppression.reason == STRANGER_STOP,
        Suppression.value_hash == address_hash(suppression_key, Channel.SMS, phone)))
    unblock_channel(session, contact, Channel.SMS, now, "patient:sms", only=BlockReason.SUPPRESSED)


def remember_stranger_stop(session: Session, suppression_key: str, phone: str, now: datetime) -> None:
    """A STOP from `phone`, which is no contact: suppress the number, so that if it signs up later
    not even the confirmation text goes to it until it texts START or YES itself."""
    suppress(session, suppression_key, Channel.SMS, phone, STRANGER_STOP, now)
