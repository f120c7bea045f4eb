"""Staff correct a contact: name, email, mobile number, time zone, language and interest.

`edit_contact` is the one rule every entry point calls. It validates every field first and raises
`ContactEditErrors` with each field's problem at once; nothing is stored unless all are valid. Then:

- an address that belongs to another contact is refused (for that field);
- a new mobile number does not carry the old number's text consent: SMS consent is cleared (a
  ledger row says why) and must be given again for the new number; an opt-out stays;
- a block that belonged to the old address (bounce, complaint, dropped, provider failure, a
  suppressed address) is lifted with the address — an opt-out or an erasure is the person's and
  stays — and the new address's own suppression is applied;
- a new time zone moves the waiting sequences' next message into the new local send window;
- language and interest (`contacts.fields.check_language` / `check_interest`) are only changed when
  the form sends them: the language picks the messages' and automatic replies' language from the next
  message on, the interest the condition email's variant;
- one audit row and one timeline event list the fields changed (the zone's old and new value; no
  other personal values, so erasure has nothing to chase in them).

May import `models`, `contacts.fields`, `contacts.blocks`, `contacts.records`, `content`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.blocks import (
    BlockReason,
    block_rows,
    blocked_reason,
    clear_block,
    set_block,
    suppression_reason,
    unblock_rows,
)
from patient_drip.contacts.fields import (FieldError, check_interest, check_language, check_timezone, normalize_email,
                                         normalize_name, normalize_phone)
from patient_drip.contacts.records import ConsentRow, Row, add_rows, audit_row, event_row
from patient_drip.content.campaign import Campaign
from patient_drip.content.campaign_versions import campaign_for
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.content.windows import step_due_at
from patient_drip.models import (
    Channel,
    ConsentAction,
    ConsentMethod,
    Contact,
    Enrollment,
    EnrollmentStatus,
    EventKind,
)

EDITABLE = ("first_name", "last_name", "email", "phone", "timezone", "language", "interest")
# Only changed when given: a form or API call that does not send them leaves them as they are.
OPTIONAL = ("language", "interest")
# Blocks that belong to an address, not to the person: a corrected address starts clean.
ADDRESS_BLOCKS = frozenset({BlockReason.SUPPRESSED, BlockReason.FAILED, BlockReason.BOUNCED,
                            BlockReason.COMPLAINED, BlockReason.DROPPED})
NUMBER_CHANGED_NOTE = "mobile number changed by staff: consent given for the previous number does not carry over"


class ContactEditErrors(ValueError):
    """Every field's problem at once: `errors` maps a field name to a sentence."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.errors.items()))


@dataclass(frozen=True, slots=True)
class ContactEdit:
    """What changed (field names in form order) and what staff should know about it."""

    changed: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def parse_edit(raw: Mapping[str, str | None], *, zone_required: bool = True) -> dict[str, str | None]:
    """Validate the submitted fields; raises `ContactEditErrors` with every field's problem. Staff's
    enroll form checks with it too (`zone_required=False`: a new contact's zone may come from their
    number or the clinic's)."""
    errors: dict[str, str] = {}
    values: dict[str, str | None] = {}
    checks = {
        "first_name": lambda text: normalize_name(text, "first_name"),
        "last_name": lambda text: normalize_name(text, "last_name"),
        "email": lambda text: normalize_email(text) if text.strip() else None,
        "phone": lambda text: normalize_phone(text) if text.strip() else None,
        "timezone": lambda text: check_timezone(text) if text.strip() else "",
        "language": lambda text: check_language(text) or DEFAULT_LANGUAGE,
        "interest": check_interest,
    }
    for name, check in checks.items():
        if name in OPTIONAL and raw.get(name) is None:
            continue
        try:
            values[name] = check(raw.get(name) or "")
        except FieldError as exc:
            errors[name] = _sentence(exc.message)
    if "email" not in errors and "phone" not in errors and not values["email"] and not values["phone"]:
        errors["email"] = "Give an email address or a mobile number (or both)."
    if "timezone" not in errors and not values["timezone"] and zone_required:
        errors["timezone"] = "Choose the person's time zone (an IANA name such as America/Chicago)."
    if errors:
        raise ContactEditErrors(errors)
    return values


def edit_contact(session: Session, contact: Contact, raw: Mapping[str, str | None], *,
                 campaigns: Mapping[str, Campaign], suppression_key: str, now: datetime, actor: str) -> ContactEdit:
    """Apply staff's corrections to `contact` (the module docstring lists the rules). Raises
    `ContactEditErrors` (nothing changed) when any field is invalid or an address is taken."""
    values = parse_edit(raw)
    taken: dict[str, str] = {}
    for name, column in (("email", Contact.email), ("phone", Contact.phone)):
        value = values[name]
        if value and value != getattr(contact, name):
            holder = session.scalar(select(Contact.id).where(column == value, Contact.id != contact.id))
            if holder is not None:
                taken[name] = f"This {'email address' if name == 'email' else 'number'} belongs to another contact (#{holder})."
    if taken:
        raise ContactEditErrors(taken)
    changed = tuple(name for name in EDITABLE if name in values and values[name] != getattr(contact, name))
    if not changed:
        return ContactEdit(())
    rows: list[Row] = []
    notes: list[str] = []
    old_zone = contact.timezone
    for name in ("first_name", "last_name", "timezone", "language", "interest"):
        if name in values:
            setattr(contact, name, values[name])
    for channel, name in ((Channel.EMAIL, "email"), (Channel.SMS, "phone")):
        if name in changed:
            rows += _new_address(session, contact, channel, values[name], suppression_key, now, actor, notes)
    contact.updated_at = now
    if "timezone" in changed:
        _reschedule(session, contact, campaigns)
    detail: dict[str, object] = {"fields": list(changed)}
    if "timezone" in changed:
        detail |= {"timezone_from": old_zone, "timezone_to": contact.timezone}
    if "language" in changed:
        detail |= {"language": contact.language}
    rows += [event_row(EventKind.CONTACT_EDITED, now, contact.id, actor=actor, **detail),
             audit_row(actor, "contact_edited", now, contact.id, **detail)]
    add_rows(session, rows)
    session.flush()
    return ContactEdit(changed, tuple(notes))


def _new_address(session: Session, contact: Contact, channel: Channel, value: str | None, suppression_key: str,
                 now: datetime, actor: str, notes: list[str]) -> list[Row]:
    """Replace one address: lift the old address's own blocks, apply the new one's suppression, and
    for a new number clear text consent (it was given for the old one)."""
    rows: list[Row] = []
    if channel == Channel.EMAIL:
        contact.email = value
    else:
        had_consent = contact.sms_consent
        contact.phone = value
        if had_consent:
            contact.sms_consent = False
            rows.append(ConsentRow(contact.id, str(Channel.SMS), str(ConsentAction.WITHDRAWN), str(ConsentMethod.STAFF),
                                   None, None, None, None, actor, NUMBER_CHANGED_NOTE, now))
            rows.append(event_row(EventKind.CONSENT_WITHDRAWN, now, contact.id, channel=str(Channel.SMS),
                                  method=str(ConsentMethod.STAFF), note=NUMBER_CHANGED_NOTE))
            notes.append("Texts stop until the person agrees to texts on the new number.")
    previous = blocked_reason(contact, channel)
    if previous in ADDRESS_BLOCKS:
        clear_block(contact, channel)
        rows += unblock_rows(contact.id, channel, previous, now, actor)
    reason = suppression_reason(session, suppression_key, channel, value) if value else None
    if reason and set_block(contact, channel, BlockReason.SUPPRESSED, reason):
        rows += block_rows(contact.id, channel, BlockReason.SUPPRESSED, reason, now, actor)
        notes.append(f"The new {'address' if channel == Channel.EMAIL else 'number'} is on the do-not-contact list: "
                     f"{reason}.")
    return rows


def _reschedule(session: Session, contact: Contact, campaigns: Mapping[str, Campaign]) -> None:
    """Waiting sequences' next message into the send window of the contact's new zone (never earlier
    than planned). A sequence a worker holds right now is left to it: the dispatcher checks the
    window again, in the new zone, before sending."""
    for enrollment in session.scalars(select(Enrollment).where(
            Enrollment.contact_id == contact.id, Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.claimed_by.is_(None), Enrollment.next_due_at.is_not(None))):
        campaign = campaign_for(campaigns, enrollment.campaign_id, enrollment.campaign_version, session)
        if campaign is None:
            continue
        due = step_due_at(campaign, enrollment.step_index, enrollment.enrolled_at, contact.timezone, enrollment.id,
                          phone=contact.phone)
        if due is not None and enrollment.next_due_at is not None:
            # Never earlier than already planned: a retry's backoff or a cap's hold still stands.
            enrollment.next_due_at = max(due, enrollment.next_due_at)
