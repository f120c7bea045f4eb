"""Contact changes: parse what a form, the CLI, the API or a CSV row gave; find a contact; create
or update one (matched by email, then phone), blocking any channel whose address is suppressed.

The merge rules (`merge_contact_input`, `apply_suppressions`, `created_rows`) are shared with the
bulk importer, which applies them to its in-memory copies. May import `models`, `content.languages`, `contacts.fields`,
`contacts.records`, `contacts.blocks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.blocks import BlockReason, Blockable, block_rows, set_block, suppression_reason
from patient_drip.contacts.fields import (
    FieldError,
    ZoneSource,
    check_interest,
    check_language,
    normalize_email,
    normalize_name,
    normalize_phone,
    parse_phone,
    resolve_timezone,
)
from patient_drip.contacts.records import Row, add_rows, event_row
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.models import Channel, Contact, EventKind


class ContactNotFound(Exception):
    """No contact has the email or phone given; the message says which."""


@dataclass(frozen=True, slots=True)
class ContactInput:
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    timezone: str
    source: str = ""
    preferred_channel: str = ""
    language: str = ""  # "" = not given: a new contact gets DEFAULT_LANGUAGE, a known one keeps theirs
    interest: str = ""  # "" = not given


class ContactFields(Blockable, Protocol):
    """What the merge rules read and write: a `Contact`, or the importer's copy of one."""

    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    timezone: str
    preferred_channel: str
    language: str
    interest: str


def parse_contact_input(
    raw: Mapping[str, str | None], clinic_timezone: str, *, zone_source: ZoneSource, source: str = ""
) -> ContactInput:
    """Validate what a form, the CLI or a CSV row gave; `zone_source` says who gave `raw["timezone"]`
    (see `resolve_timezone`). Raises `FieldError` naming the field."""
    email_raw = (raw.get("email") or "").strip()
    phone_raw = (raw.get("phone") or "").strip()
    if not email_raw and not phone_raw:
        raise FieldError("email", "an email address or a phone number is required")
    email = normalize_email(email_raw) if email_raw else None
    phone = parse_phone(phone_raw) if phone_raw else None
    preferred = (raw.get("preferred_channel") or "").strip().lower()
    if preferred and preferred not in ("email", "sms", "phone"):
        raise FieldError("preferred_channel", "must be email, sms or phone")
    return ContactInput(
        email=email,
        phone=phone.e164 if phone else None,
        first_name=normalize_name(raw.get("first_name"), "first_name"),
        last_name=normalize_name(raw.get("last_name"), "last_name"),
        timezone=resolve_timezone(raw.get("timezone"), zone_source, phone, clinic_timezone),
        source=normalize_name(raw.get("source") or source, "source")[:64],
        preferred_channel=preferred,
        language=check_language(raw.get("language")),
        interest=check_interest(raw.get("interest")),
    )


def find_contact(session: Session, *, email: str | None = None, phone: str | None = None) -> Contact | None:
    """The contact with this (already normalised) email or phone."""
    if email:
        found = session.scalar(select(Contact).where(Contact.email == email))
        if found is not None:
            return found
    if phone:
        return session.scalar(select(Contact).where(Contact.phone == phone))
    return None


def lookup_contact(session: Session, *, email: str | None = None, phone: str | None = None) -> Contact:
    """Normalise what a person typed and find the contact. Raises `FieldError` (nothing given, or
    not an address) or `ContactNotFound`."""
    if not email and not phone:
        raise FieldError("email", "give --email or --phone")
    norm_email = normalize_email(email) if email else None
    norm_phone = normalize_phone(phone) if phone else None
    contact = find_contact(session, email=norm_email, phone=norm_phone)
    if contact is None:
        raise ContactNotFound(f"no contact with {'email ' + norm_email if norm_email else 'phone ' + str(norm_phone)}")
    return contact


def merge_contact_input(contact: ContactFields, data: ContactInput) -> None:
    """Update an existing contact from new input: an address is only added, never replaced (a
    different phone for a contact that has one is kept out); names, zone and preference follow the
    input where it gives them."""
    if data.email and not contact.email:
        contact.email = data.email
    if data.phone and contact.phone is None:
        contact.phone = data.phone
    contact.first_name = data.first_name or contact.first_name
    contact.last_name = data.last_name or contact.last_name
    contact.timezone = data.timezone or contact.timezone
    contact.preferred_channel = data.preferred_channel or contact.preferred_channel
    contact.language = data.language or contact.language
    contact.interest = data.interest or contact.interest


def apply_suppressions(contact: ContactFields, reasons: Mapping[Channel, str | None]) -> list[tuple[Channel, str]]:
    """Block each channel whose address is suppressed (`reasons`: the suppression reason per channel,
    None when not suppressed). Returns the (channel, reason) blocks that changed."""
    applied = []
    for channel in (Channel.EMAIL, Channel.SMS):
        reason = reasons.get(channel)
        if reason and set_block(contact, channel, BlockReason.SUPPRESSED, reason):
            applied.append((channel, reason))
    return applied


def created_rows(contact_id: int | None, source: str, now: datetime, actor: str) -> list[Row]:
    """The timeline row of a new contact."""
    return [event_row(EventKind.CONTACT_CREATED, now, contact_id, source=source, actor=actor)]


def upsert_contact(session: Session, suppression_key: str, data: ContactInput, now: datetime,
                   actor: str) -> tuple[Contact, bool]:
    """Create the contact, or update the one with the same email (else phone); block channels whose
    address is suppressed. Returns (contact, created). Raises `FieldError` when the phone belongs to
    another contact."""
    contact = find_contact(session, email=data.email, phone=data.phone)
    created = contact is None
    if contact is not None and data.phone and contact.phone != data.phone:
        holder = session.scalar(select(Contact.id).where(Contact.phone == data.phone))
        if holder is not None:
            raise FieldError("phone", "this phone number belongs to another contact")
    if contact is None:
        return create_contact(session, suppression_key, data, now, actor), True
    merge_contact_input(contact, data)
    contact.updated_at = now
    _block_suppressed(session, suppression_key, contact, now, actor)
    return contact, created


def create_contact(session: Session, suppression_key: str, data: ContactInput, now: datetime,
                   actor: str) -> Contact:
    """A new contact from `data`, never an existing one: if another transaction created the same
    address meanwhile, the insert fails (`IntegrityError` on the unique email or phone) rather than
    change that contact. Blocks channels whose address is suppressed."""
    contact = Contact(
        email=data.email, phone=data.phone, first_name=data.first_name, last_name=data.last_name,
        timezone=data.timezone, source=data.source, preferred_channel=data.preferred_channel,
        language=data.language or DEFAULT_LANGUAGE, interest=data.interest, created_at=now, updated_at=now,
    )
    session.add(contact)
    session.flush()
    add_rows(session, created_rows(contact.id, data.source, now, actor))
    _block_suppressed(session, suppression_key, contact, now, actor)
    return contact


def update_contact(session: Session, suppression_key: str, contact: Contact, data: ContactInput, now: datetime,
                   actor: str) -> list[str]:
    """Apply `data` to this known contact by the merge rules (`merge_contact_input`: an address is
    only added, never replaced; one that belongs to another contact is left out), blocking channels
    whose address is suppressed. Returns the names of the fields that changed."""
    taken = {field for field, column in (("email", Contact.email), ("phone", Contact.phone))
             if getattr(data, field) and getattr(contact, field) != getattr(data, field)
             and session.scalar(select(Contact.id).where(column == getattr(data, field)).limit(1)) is not None}
    fields = ("email", "phone", "first_name", "last_name", "timezone", "preferred_channel", "language", "interest")
    before = {field: getattr(contact, field) for field in fields}
    merge_contact_input(contact, replace(data, email=None if "email" in taken else data.email,
                                         phone=None if "phone" in taken else data.phone))
    changed = [field for field in fields if getattr(contact, field) != before[field]]
    if changed:
        contact.updated_at = now
    _block_suppressed(session, suppression_key, contact, now, actor)
    return changed


def _block_suppressed(session: Session, suppression_key: str, contact: Contact, now: datetime, actor: str) -> None:
    reasons = {channel: suppression_reason(session, suppression_key, channel, value) if value else None
               for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone))}
    for channel, reason in apply_suppressions(contact, reasons):
        add_rows(session, block_rows(contact.id, channel, BlockReason.SUPPRESSED, reason, now, actor))
    session.flush()
