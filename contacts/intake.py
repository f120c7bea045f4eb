"""Public intake: a consultation request from anyone, which proves control before it changes anything.

`POST /api/consultations` validates, then `record_request` stores the request as received (one
`pending_change` row: the parsed request, the consent wording shown, when, from which IP and user
agent) and the route answers 202 `received` — the same answer, after the same work, whoever the
request names. After the answer, `process_received` acts on it (`process_request`). A request either

- names nobody we know (neither its email nor its phone is a contact's): the contact is created,
  email consent recorded with the form's wording, texts asked for through the double opt-in
  (`contacts.double_opt_in`: one "Reply YES" text, and no other text until YES), and the campaign
  started on the channels usable now (an SMS-only request starts on YES);
- or names a contact we know: nothing of theirs changes. The row is kept as the pending change and
  a signed link (valid `DRIP_CONFIRMATION_HOURS`) goes to the email address on file;
  `confirm_change` applies it through the same rule functions (`update_contact`, `grant_consent`,
  `request_sms_confirmation`, `enroll`) and records the confirmation as proof. A known contact with
  no email on file who gets our texts is asked by text instead (`confirm_by` "text": "Reply YES to
  confirm", at most one such text per contact a day; the YES goes through `confirm_change_by_text`).
  One who gets neither emails nor texts from us gets nothing automatically (`confirm_by` "staff"):
  the request waits for staff.

A request whose process stopped between the answer and the work is picked up by
`process_leftovers` (the scheduler's housekeeping).

May import `models`, `content`, `providers.types`, `runtime`, and the other `contacts` rule modules.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from patient_drip.contacts.changes import ContactInput, create_contact, find_contact, update_contact
from patient_drip.contacts.consent import ConsentGrant, UnknownWording, grant_consent, load_wording, receives
from patient_drip.contacts.double_opt_in import (Notice, confirmation_text, record_confirmation_send,
                                                 request_sms_confirmation)
from patient_drip.contacts.enrollment import EnrollmentError, enroll, usable_channels
from patient_drip.contacts.records import add_rows, audit_row, event_row
from patient_drip.contacts.tasks import open_task
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.content.tokens import BadToken, LinkTokens
from patient_drip.models import Channel, ConsentMethod, Contact, EventKind, PendingChange, TaskKind
from patient_drip.providers.types import OutgoingMessage, SendError
from patient_drip.runtime import Runtime

log = logging.getLogger("drip.intake")

# The one answer to every accepted request, whoever it names.
RECEIVED = "received"
ACTOR = "patient:web_form"


@dataclass(frozen=True, slots=True)
class IntakeRequest:
    """A parsed, valid public request: who, which channels they ticked, and where it came from."""

    contact: ContactInput
    consent_email: bool
    consent_sms: bool
    campaign_id: str
    ip_address: str | None = None
    user_agent: str | None = None
    # The language the form was shown in: its consent wording is the one recorded, and a new
    # person who chose no language gets this one.
    wording_language: str = DEFAULT_LANGUAGE


def record_request(session: Session, policy_dir: Path, hours: int, request: IntakeRequest,
                   now: datetime) -> PendingChange:
    """Store the request as received, with the consent wording the form showed: one row, the same
    whoever it names (so the answer costs the same). `process_request` acts on it after the answer."""
    wording = load_wording(policy_dir)
    shown = request.wording_language
    asked = {**asdict(request.contact), "consent_email": request.consent_email, "consent_sms": request.consent_sms,
             "email_wording": wording.current_version(Channel.EMAIL, shown),
             "sms_wording": wording.current_version(Channel.SMS, shown), "wording_language": shown,
             "campaign": request.campaign_id}
    pending = PendingChange(request=asked, ip_address=request.ip_address,
                            user_agent=(request.user_agent or "")[:400] or None, created_at=now,
                            expires_at=now + timedelta(hours=hours))
    session.add(pending)
    session.flush()
    return pending


def _asked_input(asked: dict[str, Any]) -> ContactInput:
    return ContactInput(**{name: asked.get(name) or (None if name in ("email", "phone") else "")
                           for name in ContactInput.__dataclass_fields__})


def process_request(session: Session, rt: Runtime, pending: PendingChange, now: datetime) -> list[Notice]:
    """Act on a recorded request (see the module docstring), once: a row already processed (by
    another process) gives []. Returns the confirmations to hand to the provider after the commit."""
    claimed = session.execute(update(PendingChange).where(PendingChange.id == pending.id,
                                                          PendingChange.processed_at.is_(None))
                              .values(processed_at=now).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return []
    asked = dict(pending.request)
    data = _asked_input(asked)
    known = find_contact(session, email=data.email, phone=data.phone)  # by email, else by phone
    if known is not None:
        return _hold_for_confirmation(session, rt, known, pending, now)
    # Create, never update: a request that raced another one naming the same person fails here
    # (IntegrityError) and is processed again, when it finds that person known (`process_received`).
    # No language chosen: the one the form was shown in.
    data = replace(data, language=data.language or str(asked.get("wording_language") or DEFAULT_LANGUAGE))
    contact = create_contact(session, rt.suppression_key, data, now, ACTOR)
    pending.contact_id, pending.confirm_by = contact.id, "new"
    add_rows(session, [event_row(EventKind.CONSULTATION_REQUESTED, now, contact.id, ip=pending.ip_address)])
    # The thank-you page promises that someone from the clinic will be in touch: a task says so.
    open_task(session, TaskKind.PHONE_CALL if data.preferred_channel == "phone" else TaskKind.NEW_REQUEST, now,
              contact_id=contact.id)
    wording = load_wording(rt.settings.policy_dir)
    if asked.get("consent_email"):
        grant_consent(session, wording, contact, ConsentGrant(
            Channel.EMAIL, ConsentMethod.WEB_FORM, wording_version=asked.get("email_wording"),
            ip_address=pending.ip_address, user_agent=pending.user_agent), now, ACTOR)
    notices = []
    if asked.get("consent_sms"):
        notice = request_sms_confirmation(session, rt.suppression_key,
                                          confirmation_text(rt.settings.policy_dir, rt.settings.sms_brand,
                                                            contact.language), contact,
                                          str(asked.get("campaign") or ""), asked.get("sms_wording"), now)
        notices += [notice] if notice else []
    campaign = rt.campaigns.get(str(asked.get("campaign") or ""))
    if campaign is not None and usable_channels(contact, campaign):
        try:
            enroll(session, contact, campaign, now, ACTOR, source="web_form")
        except EnrollmentError:
            pass
    return notices


def process_received(rt: Runtime, pending_id: int, now: datetime) -> None:
    """Process recorded request `pending_id` in its own transaction, then send its confirmations:
    what the form route runs after its answer went out. Two requests naming the same new address
    at once: the one that loses the race to create the contact is asked again, and then finds it.
    Never raises: a request it could not process stays unprocessed for `process_leftovers`."""
    for attempt in (1, 2):
        try:
            with rt.sessions() as session, session.begin():
                pending = session.get(PendingChange, pending_id)
                notices = process_request(session, rt, pending, now) if pending is not None else []
            deliver_notices(rt, notices, now)
            return
        except IntegrityError:
            if attempt == 2:
                log.error("request %s could not be processed: a conflicting request won twice", pending_id)
        except (SQLAlchemyError, UnknownWording) as exc:
            # UnknownWording: the form's consent wording was withdrawn meanwhile; never record another.
            log.error("request %s could not be processed now (%s); left for the next sweep", pending_id,
                      type(exc).__name__)
            return


def process_leftovers(rt: Runtime, now: datetime, *, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Process requests recorded more than `older_than` ago and still unprocessed (their process
    stopped between the answer and the work): the scheduler's housekeeping calls this. Returns how many."""
    with rt.sessions() as session:
        waiting = list(session.scalars(select(PendingChange.id).where(
            PendingChange.processed_at.is_(None), PendingChange.created_at < now - older_than).limit(500)))
    for pending_id in waiting:
        process_received(rt, pending_id, now)
    return len(waiting)


def _hold_for_confirmation(session: Session, rt: Runtime, contact: Contact, pending: PendingChange,
                           now: datetime) -> list[Notice]:
    """A request naming a known contact: change nothing, keep what it asked, ask the address on file
    (the email; else the number, when it gets our texts and was not asked in the last day)."""
    by_text = not contact.email and contact.phone and receives(contact, Channel.SMS)
    if by_text and _asked_by_text_since(session, contact.id, now - TEXT_CONFIRMATION_GAP):
        by_text = False  # one "Reply YES to confirm" a day: requests must not become a way to text a patient
    pending.contact_id = contact.id
    pending.confirm_by = "email" if contact.email else ("text" if by_text else "staff")
    add_rows(session, [event_row(EventKind.CHANGE_REQUESTED, now, contact.id, pending_change=pending.id,
                                 ip=pending.ip_address, confirm_by=pending.confirm_by)])
    if pending.confirm_by == "text":
        return [Notice("change_confirmation_text", pending.id, Channel.SMS, contact.phone or "",
                       change_confirmation_text(rt.settings.sms_brand, rt.settings.confirmation_hours,
                                                contact.language))]
    if not contact.email:
        return []
    link = f"{rt.settings.public_url}/confirm/{rt.tokens.confirmation(pending.id)}"
    return [Notice("change_confirmation", pending.id, Channel.EMAIL, contact.email,
                   confirmation_email(rt.settings.clinic_name, rt.settings.clinic_phone, link,
                                      rt.settings.confirmation_hours),
                   subject=f"Please confirm your request to {rt.settings.clinic_name}")]


TEXT_CONFIRMATION_GAP = timedelta(hours=24)


def change_confirmation_text(brand: str, hours: int, language: str = DEFAULT_LANGUAGE) -> str:
    """The text that asks a known number to confirm a request: what a YES may change (field names
    only: nothing typed into the form is repeated to the number), discreet, names no treatment; in
    the language on file (Spanish: plain GSM-7, no á í ó ú)."""
    if language == "es":
        return (f"{brand}: recibimos una solicitud para cambiar su nombre, zona horaria o idioma, o para "
                f"reanudar nuestros mensajes. Responda SI en {hours} horas para confirmar. Si no fue usted, "
                f"ignore esto. ALTO para cancelar.")
    return (f"{brand}: we got a request to update the name or time zone we have for you, or to restart "
            f"our messages. Reply YES within {hours} hours to confirm. Not you? Ignore this. STOP to opt out.")


def _asked_by_text_since(session: Session, contact_id: int, since: datetime) -> bool:
    return session.scalar(select(PendingChange.id).where(
        PendingChange.contact_id == contact_id, PendingChange.confirm_by == "text",
        PendingChange.processed_at >= since).limit(1)) is not None


def open_text_change(session: Session, contact: Contact, now: datetime) -> PendingChange | None:
    """The newest request for this contact that waits for a YES from its number, if any."""
    return session.scalar(select(PendingChange).where(
        PendingChange.contact_id == contact.id, PendingChange.confirm_by == "text",
        PendingChange.confirmed_at.is_(None), PendingChange.expires_at > now)
        .order_by(PendingChange.id.desc()).limit(1))


def confirmation_email(clinic_name: str, clinic_phone: str, link: str, hours: int) -> str:
    """The plain-text email that asks the address on file to confirm a request. It repeats none of
    what was typed into the form (anyone can type anything there) and names no treatment."""
    return (f"Hello,\n\nWe received a request on the {clinic_name} website that uses your email address or "
            f"phone number: to update your details or the messages you get from us.\n\n"
            f"If it was you, confirm it here within {hours} hours:\n{link}\n\n"
            f"If it was not you, ignore this email: nothing changes unless you confirm.\n\n"
            f"Questions? Call us at {clinic_phone}.\n\n{clinic_name}\n")


class ChangeStatus(StrEnum):
    APPLIED = "applied"
    EXPIRED = "expired"
    USED = "used"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class ChangeResult:
    """What `confirm_change` did: its status, what changed in words, and the texts to send."""

    status: ChangeStatus
    applied: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def pending_change(session: Session, tokens: LinkTokens, token: str) -> PendingChange | None:
    """The pending change a confirmation token names, or None (bad token, or no such row). Raises nothing."""
    try:
        return session.get(PendingChange, tokens.read_confirmation(token))
    except BadToken:
        return None


def change_status(pending: PendingChange | None, contact: Contact | None, now: datetime, *,
                  via: str = "email") -> ChangeStatus | None:
    """Why this change can no longer be confirmed `via` the emailed link or a text (None: it can)."""
    if pending is None or contact is None or contact.erased_at is not None or pending.confirm_by != via:
        return ChangeStatus.NOT_FOUND
    if pending.confirmed_at is not None:
        return ChangeStatus.USED
    if now >= pending.expires_at:
        return ChangeStatus.EXPIRED
    return None


# What `describe_request` says, per language: the confirming person reads it in the language of the
# form they sent (else the one on file).
_ASKED_LINES: dict[str, dict[str, str]] = {
    "en": {"name": "use the name {name}", "phone": "use the mobile number ending in {digits}",
           "timezone": "use the time zone {zone}", "language": "write to you in {language}",
           "interest": "send you information about {interest}",
           "consent_email": "send you emails about your consultation request",
           "consent_sms": "send you text messages (your phone confirms them by replying YES)",
           "nothing": "send you information about a consultation"},
    "es": {"name": "usar el nombre {name}", "phone": "usar el número de celular que termina en {digits}",
           "timezone": "usar la zona horaria {zone}", "language": "escribirle en {language}",
           "interest": "enviarle información sobre {interest}",
           "consent_email": "enviarle correos electrónicos sobre su solicitud de consulta",
           "consent_sms": "enviarle mensajes de texto (su teléfono los confirma respondiendo SI)",
           "nothing": "enviarle información sobre una consulta"},
}
_LANGUAGE_IN = {"en": {"en": "English", "es": "Spanish"}, "es": {"en": "inglés", "es": "español"}}
_INTEREST_IN = {"en": {"depression": "depression", "bipolar": "bipolar disorder", "unsure": "treatment options"},
                "es": {"depression": "la depresión", "bipolar": "el trastorno bipolar",
                       "unsure": "las opciones de tratamiento"}}


def describe_request(pending: PendingChange, language: str = DEFAULT_LANGUAGE) -> list[str]:
    """What a pending request asks, in words for the person confirming it, in `language` (a phone
    number shown by its last digits only: whoever holds the link sees no more of a number than they need)."""
    asked = pending.request
    words = _ASKED_LINES.get(language, _ASKED_LINES[DEFAULT_LANGUAGE])
    names = _LANGUAGE_IN.get(language, _LANGUAGE_IN[DEFAULT_LANGUAGE])
    topics = _INTEREST_IN.get(language, _INTEREST_IN[DEFAULT_LANGUAGE])
    name = " ".join(part for part in (asked.get("first_name"), asked.get("last_name")) if part)
    lines = [words["name"].format(name=name)] if name else []
    if asked.get("phone"):
        lines.append(words["phone"].format(digits=str(asked["phone"])[-4:]))
    if asked.get("timezone"):
        lines.append(words["timezone"].format(zone=asked["timezone"]))
    if asked.get("language") in names:
        lines.append(words["language"].format(language=names[asked["language"]]))
    if asked.get("interest") in topics:
        lines.append(words["interest"].format(interest=topics[asked["interest"]]))
    if asked.get("consent_email"):
        lines.append(words["consent_email"])
    if asked.get("consent_sms"):
        lines.append(words["consent_sms"])
    return lines or [words["nothing"]]


def request_language(pending: PendingChange, contact: Contact | None) -> str:
    """The language to speak about a request in: the form's (what the person read), else theirs on file."""
    asked = pending.request
    return str(asked.get("wording_language") or asked.get("language") or (contact.language if contact else "")
               or DEFAULT_LANGUAGE)


def confirm_change(session: Session, rt: Runtime, pending: PendingChange | None, now: datetime, *,
                   ip_address: str | None, user_agent: str | None, via: str = "email",
                   proof: str = "confirmed by the emailed link") -> ChangeResult:
    """The person opened the signed link from the address on file and confirmed: apply what the
    request asked, once, before `expires_at`. Details through `update_contact` (an address is only
    added, never replaced); email consent through `grant_consent` (method `email_confirmation`,
    the wording the form showed, the confirming IP, and a note naming the form's time and IP);
    texts never from an email link: the number gets its double opt-in text if it never had one
    (a number that opted out texts START itself); the campaign through `enroll`."""
    contact = session.get(Contact, pending.contact_id) if pending is not None and pending.contact_id else None
    refused = change_status(pending, contact, now, via=via)
    if refused is not None or pending is None or contact is None:
        return ChangeResult(refused or ChangeStatus.NOT_FOUND)
    asked = dict(pending.request)
    data = _asked_input(asked)
    if via == "text":
        # A YES proves the number, not an email address: no address is added and no email consent
        # is recorded from it (the confirmation text says so: name, time zone, messages).
        data = replace(data, email=None, phone=None)
        asked = {**asked, "consent_email": False}
    changed = update_contact(session, rt.suppression_key, contact, data, now, "patient:confirmed")
    applied = [f"{name.replace('_', ' ')} updated" for name in changed]
    if data.phone and contact.phone != data.phone:  # an address is added, never replaced
        applied.append("mobile number not changed: we keep the one we have (call us to change it)")
    notices: list[Notice] = []
    wording = load_wording(rt.settings.policy_dir)
    note = f"asked on the web form at {pending.created_at:%Y-%m-%d %H:%M} UTC from {pending.ip_address or 'unknown'}"
    if asked.get("consent_email") and contact.email and not receives(contact, Channel.EMAIL):
        try:
            grant_consent(session, wording, contact, ConsentGrant(
                Channel.EMAIL, ConsentMethod.EMAIL_CONFIRMATION, wording_version=asked.get("email_wording"),
                ip_address=ip_address, user_agent=user_agent, note=f"{note}; {proof}"),
                now, "patient:confirmed")
            applied.append("emails on")
        except UnknownWording:  # the form's wording was withdrawn meanwhile: never record another text
            applied.append("emails not started: the wording changed, please ask again")
    if asked.get("consent_sms") and contact.phone and not contact.sms_consent:
        notice = request_sms_confirmation(session, rt.suppression_key,
                                          confirmation_text(rt.settings.policy_dir, rt.settings.sms_brand,
                                                            contact.language), contact,
                                          str(asked.get("campaign") or ""), asked.get("sms_wording"), now)
        notices += [notice] if notice else []
        applied.append("texts: we sent a text to your number; reply YES to it" if notice else
                       "texts: reply YES to the text we sent your number before (or text START if you had "
                       "stopped our texts)")
    campaign = rt.campaigns.get(str(asked.get("campaign") or ""))
    if campaign is not None and usable_channels(contact, campaign):
        try:
            enroll(session, contact, campaign, now, "patient:confirmed", source="web_form")
            applied.append("messages started")
        except EnrollmentError:
            pass
    pending.confirmed_at, pending.outcome = now, ("; ".join(applied) or "nothing to change")[:400]
    add_rows(session, [event_row(EventKind.CHANGE_CONFIRMED, now, contact.id, pending_change=pending.id,
                                 ip=ip_address, outcome=pending.outcome),
                       audit_row("patient:confirmed", "change_confirmed", now, contact.id, pending_change=pending.id,
                                 requested_ip=pending.ip_address, confirmed_ip=ip_address, outcome=pending.outcome)])
    return ChangeResult(ChangeStatus.APPLIED, applied, notices)


def confirm_change_by_text(session: Session, rt: Runtime, contact: Contact, inbound_id: int,
                           now: datetime) -> ChangeResult | None:
    """A YES from the number of a contact whose request waits for one (`open_text_change`): apply
    it as `confirm_change` does, the inbound message as proof. None when nothing waits."""
    pending = open_text_change(session, contact, now)
    if pending is None:
        return None
    return confirm_change(session, rt, pending, now, ip_address=None, user_agent=None, via="text",
                          proof=f"confirmed by a text reply (inbound #{inbound_id})")


def deliver_notices(rt: Runtime, notices: list[Notice], now: datetime) -> None:
    """Hand each confirmation to its channel's sender, after the request committed, and record the
    answer (the double opt-in text's row gets its provider id or error). Never raises: a failed
    confirmation is logged and kept; the one text a number may get is never retried blindly."""
    for notice in notices:
        sender = rt.senders.get(notice.channel)
        provider_id: str | None = None
        error: str | None = None
        if sender is None:
            error = f"no {notice.channel} sender"
        else:
            try:
                provider_id = sender.send(OutgoingMessage(message_id=0, channel=notice.channel, to=notice.to,
                                                          text=notice.text, subject=notice.subject,
                                                          categories=(notice.kind,)))
            except (SendError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        if error:
            log.error("could not send the %s (row %s): %s", notice.kind, notice.ref_id, error)
        else:
            log.info("%s sent (row %s)", notice.kind, notice.ref_id)
        if notice.kind == "sms_confirmation":
            with rt.sessions() as session, session.begin():
                record_confirmation_send(session, notice.ref_id, provider_id, error, now)


__all__ = ["RECEIVED", "ChangeResult", "ChangeStatus", "IntakeRequest", "change_status", "confirm_change",
           "confirm_change_by_text", "open_text_change",
           "deliver_notices", "describe_request", "request_language", "pending_change", "process_leftovers", "process_received",
           "process_request", "record_request"]
