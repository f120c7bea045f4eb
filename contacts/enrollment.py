"""Contacts, consent, enrollment, unsubscribe and booking: what staff, forms and imports do.

Every function takes the session and `now`; the caller owns the transaction. Each change that
alters what a contact receives is written to the audit log with its actor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import yaml
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from patient_drip.content.campaign import Campaign
from patient_drip.contacts.fields import (
    FieldError,
    address_hash,
    normalize_email,
    normalize_name,
    normalize_phone,
    resolve_timezone,
)
from patient_drip.models import add_event, audit
from patient_drip.models import (
    Channel,
    ConsentAction,
    ConsentMethod,
    ConsentRecord,
    Contact,
    Enrollment,
    EnrollmentStatus,
    ExitReason,
    Suppression,
)
from patient_drip.runtime import Runtime
from patient_drip.content.windows import step_due_at

OPTED_OUT = "opted_out"  # prefix of a *_blocked reason that fresh, explicit consent can lift


class EnrollmentError(Exception):
    """Something a user asked for that cannot be done; the message says why."""


class AlreadyEnrolled(EnrollmentError):
    pass


class ContactNotFound(EnrollmentError):
    pass


@dataclass(frozen=True, slots=True)
class ContactInput:
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    timezone: str
    source: str = ""
    preferred_channel: str = ""


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    channel: Channel
    method: ConsentMethod
    wording_version: str | None = None
    wording_text: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None


@lru_cache(maxsize=4)
def consent_wording(policy_dir: Path) -> dict[str, tuple[str, str]]:
    """Current (version, text) of the consent wording per channel."""
    data = yaml.safe_load((policy_dir / "consent_wording.yaml").read_text(encoding="utf-8"))
    result = {}
    for channel in (Channel.EMAIL, Channel.SMS):
        version = data[channel]["current"]
        result[channel.value] = (version, " ".join(str(data[channel]["versions"][version]).split()))
    return result


def wording_text(policy_dir: Path, version: str) -> str | None:
    data = yaml.safe_load((policy_dir / "consent_wording.yaml").read_text(encoding="utf-8"))
    for channel in (Channel.EMAIL, Channel.SMS):
        text = data[channel]["versions"].get(version)
        if text:
            return " ".join(str(text).split())
    return None


def parse_contact_input(
    raw: Mapping[str, str | None], clinic_timezone: str, *, source: str = ""
) -> ContactInput:
    """Validate what a form, the CLI or a CSV row gave. Raises `FieldError` naming the field."""
    email_raw = (raw.get("email") or "").strip()
    phone_raw = (raw.get("phone") or "").strip()
    if not email_raw and not phone_raw:
        raise FieldError("email", "an email address or a phone number is required")
    email = normalize_email(email_raw) if email_raw else None
    phone = normalize_phone(phone_raw) if phone_raw else None
    preferred = (raw.get("preferred_channel") or "").strip().lower()
    if preferred and preferred not in ("email", "sms", "phone"):
        raise FieldError("preferred_channel", "must be email, sms or phone")
    return ContactInput(
        email=email,
        phone=phone,
        first_name=normalize_name(raw.get("first_name"), "first_name"),
        last_name=normalize_name(raw.get("last_name"), "last_name"),
        timezone=resolve_timezone(raw.get("timezone"), phone, clinic_timezone),
        source=normalize_name(raw.get("source") or source, "source")[:64],
        preferred_channel=preferred,
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
    """Normalise what a person typed and find the contact, or raise with a clear message."""
    if not email and not phone:
        raise FieldError("email", "give --email or --phone")
    norm_email = normalize_email(email) if email else None
    norm_phone = normalize_phone(phone) if phone else None
    contact = find_contact(session, email=norm_email, phone=norm_phone)
    if contact is None:
        raise ContactNotFound(f"no contact with {'email ' + norm_email if norm_email else 'phone ' + str(norm_phone)}")
    return contact


def is_suppressed(session: Session, rt: Runtime, channel: Channel, value: str) -> str | None:
    digest = address_hash(rt.suppression_key, channel, value)
    return session.scalar(
        select(Suppression.reason).where(Suppression.channel == channel, Suppression.value_hash == digest)
    )


def suppress(session: Session, rt: Runtime, channel: Channel, value: str, reason: str, now: datetime) -> None:
    """Never contact this address on this channel again (kept as a keyed hash)."""
    if is_suppressed(session, rt, channel, value):
        return
    session.add(Suppression(channel=channel, value_hash=address_hash(rt.suppression_key, channel, value),
                            reason=reason[:200], created_at=now))


def upsert_contact(session: Session, rt: Runtime, data: ContactInput, now: datetime, actor: str) -> tuple[Contact, bool]:
    """Create the contact, or update the one with the same email (else phone). Returns (contact, created)."""
    contact = find_contact(session, email=data.email, phone=data.phone)
    created = contact is None
    if contact is not None and data.phone and contact.phone != data.phone:
        holder = session.scalar(select(Contact.id).where(Contact.phone == data.phone))
        if holder is not None:
            raise FieldError("phone", "this phone number belongs to another contact")
    if contact is None:
        contact = Contact(
            email=data.email,
            phone=data.phone,
            first_name=data.first_name,
            last_name=data.last_name,
            timezone=data.timezone,
            source=data.source,
            preferred_channel=data.preferred_channel,
            created_at=now,
            updated_at=now,
        )
        session.add(contact)
        session.flush()
        add_event(session, "contact_created", now, contact_id=contact.id, source=data.source, actor=actor)
    else:
        if data.email and not contact.email:
            contact.email = data.email
        if data.phone and contact.phone != data.phone:
            if contact.phone is None:
                contact.phone = data.phone
        contact.first_name = data.first_name or contact.first_name
        contact.last_name = data.last_name or contact.last_name
        contact.timezone = data.timezone or contact.timezone
        contact.preferred_channel = data.preferred_channel or contact.preferred_channel
        contact.updated_at = now
    for channel, value in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone)):
        if value:
            reason = is_suppressed(session, rt, channel, value)
            if reason:
                _block(contact, channel, f"suppressed: {reason}")
    session.flush()
    return contact, created


def _block(contact: Contact, channel: Channel, reason: str) -> None:
    if channel == Channel.EMAIL:
        contact.email_blocked = reason[:200]
    else:
        contact.sms_blocked = reason[:200]


def blocked_reason(contact: Contact, channel: Channel) -> str | None:
    return contact.email_blocked if channel == Channel.EMAIL else contact.sms_blocked


def grant_consent(session: Session, contact: Contact, grant: ConsentGrant, now: datetime, actor: str) -> None:
    """Record consent with its proof; fresh explicit consent lifts an earlier opt-out."""
    session.add(
        ConsentRecord(
            contact_id=contact.id,
            channel=grant.channel,
            action=ConsentAction.GRANTED,
            method=grant.method,
            wording_version=grant.wording_version,
            wording_text=grant.wording_text,
            ip_address=grant.ip_address,
            user_agent=(grant.user_agent or "")[:400] or None,
            actor=actor,
            occurred_at=now,
        )
    )
    if grant.channel == Channel.EMAIL:
        contact.email_consent = True
        if contact.email_blocked and contact.email_blocked.startswith(OPTED_OUT):
            contact.email_blocked = None
    else:
        contact.sms_consent = True
        if contact.sms_blocked and contact.sms_blocked.startswith(OPTED_OUT):
            contact.sms_blocked = None
    contact.updated_at = now
    add_event(session, "consent_granted", now, contact_id=contact.id, channel=grant.channel,
              method=grant.method, wording_version=grant.wording_version)
    audit(session, actor, "consent_granted", now, contact_id=contact.id, channel=grant.channel, method=grant.method)


def withdraw_consent(
    session: Session, contact: Contact, channel: Channel, method: ConsentMethod, now: datetime, actor: str, note: str = ""
) -> bool:
    """Record withdrawal and stop the channel. Returns False if it was already withdrawn."""
    already = (not contact.email_consent and bool(contact.email_blocked)) if channel == Channel.EMAIL else (
        not contact.sms_consent and bool(contact.sms_blocked))
    session.add(
        ConsentRecord(contact_id=contact.id, channel=channel, action=ConsentAction.WITHDRAWN, method=method,
                      actor=actor, note=note[:400], occurred_at=now)
    )
    if channel == Channel.EMAIL:
        contact.email_consent = False
    else:
        contact.sms_consent = False
    if not blocked_reason(contact, channel):
        _block(contact, channel, f"{OPTED_OUT} ({method})")
    contact.updated_at = now
    add_event(session, "consent_withdrawn", now, contact_id=contact.id, channel=channel, method=method)
    audit(session, actor, "consent_withdrawn", now, contact_id=contact.id, channel=channel, method=method, note=note)
    return not already


def enroll(
    session: Session, rt: Runtime, contact: Contact, campaign: Campaign, now: datetime, actor: str, source: str = ""
) -> Enrollment:
    """Start `campaign` for `contact`; the first step is due at once (inside the send window)."""
    existing = session.scalar(
        select(Enrollment).where(Enrollment.contact_id == contact.id, Enrollment.campaign_id == campaign.id)
    )
    if existing is not None:
        raise AlreadyEnrolled(
            f"{contact.display_name} is already enrolled in {campaign.id} (status {existing.status}"
            + (f", {existing.exit_reason}" if existing.exit_reason else "") + ")"
        )
    if not usable_channels(contact, campaign):
        raise EnrollmentError(
            f"{contact.display_name} cannot receive {campaign.id}: no email or SMS the contact agreed to "
            "and has not opted out of (record consent first)"
        )
    enrollment = Enrollment(
        contact_id=contact.id, campaign_id=campaign.id, status=EnrollmentStatus.ACTIVE, step_index=0,
        enrolled_at=now, source=source[:64],
    )
    session.add(enrollment)
    session.flush()
    enrollment.next_due_at = step_due_at(campaign, 0, now, contact.timezone, enrollment.id)
    add_event(session, "enrolled", now, contact_id=contact.id, enrollment_id=enrollment.id, campaign=campaign.id)
    audit(session, actor, "enrolled", now, contact_id=contact.id, campaign=campaign.id)
    return enrollment


def usable_channels(contact: Contact, campaign: Campaign) -> set[Channel]:
    """Channels the campaign may use for this contact right now (consent, address, not blocked)."""
    usable: set[Channel] = set()
    if contact.email and not contact.email_blocked and (contact.email_consent or not campaign.email_requires_consent):
        usable.add(Channel.EMAIL)
    if contact.phone and not contact.sms_blocked and contact.sms_consent:
        usable.add(Channel.SMS)
    return usable & {step.channel for step in campaign.steps}


def end_enrollments(
    session: Session, contact_id: int, reason: ExitReason, now: datetime, actor: str,
    campaign_ids: Iterable[str] | None = None,
) -> int:
    """Stop every active or paused enrollment of the contact; nothing more is sent. Returns how many."""
    query = select(Enrollment).where(
        Enrollment.contact_id == contact_id,
        Enrollment.status.in_([EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED]),
    )
    if campaign_ids is not None:
        query = query.where(Enrollment.campaign_id.in_(list(campaign_ids)))
    count = 0
    for enrollment in session.scalars(query):
        enrollment.status = EnrollmentStatus.EXITED
        enrollment.exit_reason = reason
        enrollment.next_due_at = None
        enrollment.claimed_by = None
        enrollment.ended_at = now
        add_event(session, "enrollment_ended", now, contact_id=contact_id, enrollment_id=enrollment.id,
                  reason=reason, campaign=enrollment.campaign_id)
        audit(session, actor, "enrollment_ended", now, contact_id=contact_id, campaign=enrollment.campaign_id,
              reason=reason)
        count += 1
    return count


def unsubscribe(
    session: Session, rt: Runtime, contact: Contact, channels: Iterable[Channel], method: ConsentMethod,
    now: datetime, actor: str,
) -> list[Channel]:
    """Withdraw consent on `channels`; end enrollments that can no longer reach the contact.
    Returns the channels that changed."""
    changed = [channel for channel in channels if withdraw_consent(session, contact, channel, method, now, actor)]
    for enrollment in list(session.scalars(select(Enrollment).where(
        Enrollment.contact_id == contact.id,
        Enrollment.status.in_([EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED]),
    ))):
        campaign = rt.campaigns.get(enrollment.campaign_id)
        if campaign is None or not usable_channels(contact, campaign):
            end_enrollments(session, contact.id, ExitReason.UNSUBSCRIBED, now, actor, [enrollment.campaign_id])
    return changed


def mark_booked(session: Session, contact: Contact, now: datetime, actor: str, source: str) -> int:
    """The contact booked a consultation: end every sequence with reason `booked`."""
    add_event(session, "booked", now, contact_id=contact.id, source=source)
    audit(session, actor, "booked", now, contact_id=contact.id, source=source)
    return end_enrollments(session, contact.id, ExitReason.BOOKED, now, actor)


def set_paused(session: Session, rt: Runtime, enrollment: Enrollment, paused: bool, now: datetime, actor: str) -> None:
    """Pause keeps the place in the sequence; resume continues from the next unsent step."""
    if paused and enrollment.status == EnrollmentStatus.ACTIVE:
        enrollment.status = EnrollmentStatus.PAUSED
        enrollment.next_due_at = None
        enrollment.claimed_by = None
    elif not paused and enrollment.status == EnrollmentStatus.PAUSED:
        enrollment.status = EnrollmentStatus.ACTIVE
        campaign = rt.campaign(enrollment.campaign_id)
        due = step_due_at(campaign, enrollment.step_index, enrollment.enrolled_at, enrollment.contact.timezone,
                          enrollment.id)
        enrollment.next_due_at = max(due, now) if due else now
    else:
        return
    add_event(session, "paused" if paused else "resumed", now, contact_id=enrollment.contact_id,
              enrollment_id=enrollment.id)
    audit(session, actor, "paused" if paused else "resumed", now, contact_id=enrollment.contact_id,
          campaign=enrollment.campaign_id)


def release_claims(session: Session, worker_id: str) -> int:
    """Give back enrollments a stopping worker still holds (they become due at once)."""
    result = session.execute(
        update(Enrollment).where(Enrollment.claimed_by == worker_id).values(claimed_by=None)
    )
    return int(result.rowcount or 0)


def search_contacts(session: Session, text: str, limit: int = 50) -> list[Contact]:
    like = f"%{text.strip().lower()}%"
    return list(session.scalars(select(Contact).where(or_(
        Contact.email.like(like), Contact.phone.like(like), Contact.last_name.ilike(like), Contact.first_name.ilike(like),
    )).limit(limit)))
