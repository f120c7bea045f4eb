"""What staff do to a contact, shared by the web pages and the JSON API: thin over the `contacts`
services, which hold the rules.

Each function takes the session and `now`, records consent with its method (STAFF from the UI,
API from the JSON API) and the clinic's current consent wording (version and exact text), and
leaves the commit to the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.edit import NUMBER_CHANGED_NOTE
from patient_drip.contacts.changes import parse_contact_input, upsert_contact
from patient_drip.contacts.consent import ConsentGrant, grant_consent, load_wording
from patient_drip.contacts.bookings import mark_booked
from patient_drip.contacts.enrollment import enroll, unsubscribe
from patient_drip.contacts.fields import FieldError, ZoneSource
from patient_drip.models import Channel, ConsentMethod, MessageStatus, ConsentRecord, Contact, Enrollment, Event, InboundMessage, Message
from patient_drip.runtime import Runtime
import patient_drip.web.admin.labels as labels

UNSUBSCRIBE_CHOICES = {"email": [Channel.EMAIL], "sms": [Channel.SMS], "all": [Channel.EMAIL, Channel.SMS]}


class ActionError(Exception):
    """A request that cannot be done; `field` names the input at fault ("" for the whole request)."""

    def __init__(self, message: str, field: str = "") -> None:
        self.message, self.field = message, field
        super().__init__(message)


def record_consent(session: Session, rt: Runtime, contact: Contact, channels: Iterable[str], method: ConsentMethod,
                   now: datetime, actor: str, *, ip: str | None = None, user_agent: str | None = None) -> list[str]:
    """Grant consent on `channels` with the current wording in the contact's language as proof (what
    staff screens show for them); returns the channels granted. Raises `ActionError` naming the missing address."""
    wording = load_wording(rt.settings.policy_dir)
    granted = []
    for name in channels:
        grant = ConsentGrant(Channel(name), method, ip_address=ip, user_agent=user_agent,
                             wording_version=wording.current_version(Channel(name), contact.language))
        try:
            grant_consent(session, wording, contact, grant, now, actor)
        except FieldError as exc:
            raise ActionError(exc.message, exc.field) from None
        granted.append(name)
    return granted


def enroll_contact(session: Session, rt: Runtime, contact: Contact, campaign_id: str, consent: Iterable[str],
                   method: ConsentMethod, now: datetime, actor: str, *, source: str, ip: str | None = None,
                   user_agent: str | None = None) -> Enrollment:
    """Record any newly given consent, then enroll. Raises ActionError / EnrollmentError."""
    if campaign_id not in rt.campaigns:
        raise ActionError(f"there is no campaign {campaign_id!r}", "campaign")
    record_consent(session, rt, contact, consent, method, now, actor, ip=ip, user_agent=user_agent)
    return enroll(session, contact, rt.campaign(campaign_id), now, actor, source=source)


@dataclass(frozen=True, slots=True)
class Created:
    contact: Contact
    created: bool
    enrollment: Enrollment | None


def create_contact(session: Session, rt: Runtime, raw: Mapping[str, Any], consent: Iterable[str],
                   campaign_id: str | None, method: ConsentMethod, now: datetime, actor: str, *, source: str,
                   ip: str | None = None, user_agent: str | None = None) -> Created:
    """Create (or update, matched by email then phone) a contact, record consent, optionally enroll.

    Raises FieldError (naming the field), ActionError or EnrollmentError; the caller rolls back."""
    values = {key: (str(raw.get(key)) if raw.get(key) is not None else "") for key in
              ("first_name", "last_name", "email", "phone", "timezone", "preferred_channel", "source", "language",
               "interest")}
    data = parse_contact_input(values, rt.settings.clinic_timezone, zone_source=ZoneSource.STAFF,
                               source=values["source"] or source)
    consent = list(dict.fromkeys(consent))
    if "sms" in consent and not data.phone:
        raise FieldError("phone", "add a mobile number to record consent to text messages")
    if "email" in consent and not data.email:
        raise FieldError("email", "add an email address to record consent to emails")
    if campaign_id is not None and campaign_id not in rt.campaigns:
        raise ActionError(f"there is no campaign {campaign_id!r}", "campaign")
    contact, created = upsert_contact(session, rt.suppression_key, data, now, actor)
    record_consent(session, rt, contact, consent, method, now, actor, ip=ip, user_agent=user_agent)
    enrollment = None
    if campaign_id is not None:
        enrollment = enroll(session, contact, rt.campaign(campaign_id), now, actor, source=source)
    return Created(contact, created, enrollment)


def unsubscribe_contact(session: Session, rt: Runtime, contact: Contact, choice: str, method: ConsentMethod,
                        now: datetime, actor: str) -> list[str]:
    """Stop `choice` (email, sms or all). Returns the channels that changed."""
    if choice not in UNSUBSCRIBE_CHOICES:
        raise ActionError("channel must be email, sms or all", "channel")
    return [str(c) for c in unsubscribe(session, rt.campaigns, contact, UNSUBSCRIBE_CHOICES[choice], method, now,
                                        actor)]


def booked(session: Session, rt: Runtime, contact: Contact, now: datetime, actor: str, source: str) -> int:
    return mark_booked(session, rt.tokens, rt.campaigns, contact, now, actor, source)


# -- the timeline -------------------------------------------------------------------------------

EVENT_TITLES = labels.EVENT_KINDS
# Shown through their own rows (Message, ConsentRecord) instead: a skipped step is its message row,
# which carries why it was skipped, so its event would show the same thing twice.
_DUPLICATE_EVENTS = {"consent_granted", "consent_withdrawn", "message_sent", "message_skipped"}
# Detail values that are stored codes, shown in words.
_CODED_DETAIL = {"method": "method", "source": "source", "channel": "channel", "attributed_by": "attribution"}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    kind: str  # "event", "message", "reply", "consent"
    title: str
    detail: str
    message_id: int | None = None
    status: str = ""
    crisis: bool = False
    channel: str = ""
    order: int = 0


def _detail_value(key: str, value: Any, names: Mapping[str, str]) -> str:
    if isinstance(value, list):
        return ", ".join(_detail_value(key, item, names) for item in value)
    if key == "campaign":
        return names.get(str(value), str(value))
    if key in _CODED_DETAIL:
        return labels.label(_CODED_DETAIL[key], value)
    if key == "step":
        return labels.humanise(str(value))
    if key in ("reason", "detail"):  # a block's kind and its detail are codes; other reasons are sentences
        text = str(value)
        for kind in ("block", "exit_reason", "method"):
            if text in labels.codes(kind):
                return labels.label(kind, text)
    return str(value)


def _detail_text(detail: dict[str, Any], names: Mapping[str, str]) -> str:
    hidden = {"ip", "inbound_id"}
    return ", ".join(f"{key.replace('_', ' ')}: {_detail_value(key, value, names)}"
                     for key, value in detail.items() if key not in hidden and value not in (None, "", [], {}))


def timeline(session: Session, contact_id: int, limit: int = 500,
             campaign_names: Mapping[str, str] | None = None) -> list[TimelineEntry]:
    """Events, messages, replies and consent changes of one contact, newest first; campaigns are
    named by `campaign_names` (id → name) where given."""
    names = campaign_names or {}
    entries: list[TimelineEntry] = []
    for event in session.scalars(select(Event).where(Event.contact_id == contact_id)
                                 .order_by(Event.id.desc()).limit(limit)):
        if event.kind in _DUPLICATE_EVENTS:
            continue
        title = EVENT_TITLES.get(event.kind) or event.kind.replace("_", " ").capitalize()
        entries.append(TimelineEntry(event.occurred_at, "event", title, _detail_text(dict(event.detail or {}), names),
                                     message_id=event.message_id, order=event.id))
    for message in session.scalars(select(Message).where(Message.contact_id == contact_id)
                                   .order_by(Message.id.desc()).limit(limit)):
        what = labels.label("channel", message.channel)
        step = labels.humanise(message.step_id)
        title = f"{what}: {message.subject}" if message.subject else f"{what}: {step}"
        detail = f"step “{step}”"
        if message.enrollment_id is None:  # written by staff in the text inbox, not a sequence step
            title, detail = f"{what} from staff (text inbox)", message.body_text or ""
        if message.last_error:
            detail += f"; {'why: ' if message.status == MessageStatus.SKIPPED else ''}{message.last_error}"
        entries.append(TimelineEntry(message.sent_at or message.attempted_at or message.created_at, "message", title,
                                     detail, message_id=message.id, status=message.status, channel=message.channel,
                                     order=message.id))
    for reply in session.scalars(select(InboundMessage).where(InboundMessage.contact_id == contact_id)
                                 .order_by(InboundMessage.id.desc()).limit(limit)):
        handled = f"handled by {reply.handled_by}" if reply.handled_at else "waiting for staff"
        entries.append(TimelineEntry(reply.received_at, "reply", f"Text reply: {reply.body or ''}",
                                     f"{reply.classification}; {handled}", crisis=reply.crisis, order=reply.id))
    for record in session.scalars(select(ConsentRecord).where(ConsentRecord.contact_id == contact_id)
                                  .order_by(ConsentRecord.id.desc()).limit(limit)):
        what = labels.label("channel", record.channel)
        verb = ("consent given" if record.action == "granted" else
                "consent ended (new number)" if record.note == NUMBER_CHANGED_NOTE else "consent withdrawn (opted out)")
        detail = f"how: {labels.label('method', record.method)}"
        if record.actor:
            detail += f"; by {record.actor}"
        if record.wording_version:
            detail += f"; wording {record.wording_version}"
        if record.note:
            detail += f"; {record.note}"
        entries.append(TimelineEntry(record.occurred_at, "consent", f"{what} {verb}", detail,
                                     channel=record.channel, order=record.id))
    entries.sort(key=lambda entry: (entry.at, _rank(entry), entry.order), reverse=True)
    return entries


_FIRST_EVENTS = {"contact_created", "consultation_requested"}
_LAST_EVENTS = {"enrollment_ended", "enrollment_completed", "booked"}


def _rank(entry: TimelineEntry) -> int:
    """Order of entries recorded at the same instant: created, consent, enrolled, sent, what followed."""
    if entry.kind == "consent":
        return 1
    if entry.kind == "message":
        return 3
    if entry.kind == "reply":
        return 4
    if entry.title in (EVENT_TITLES[k] for k in _FIRST_EVENTS):
        return 0
    if entry.title in (EVENT_TITLES[k] for k in _LAST_EVENTS):
        return 5
    return 4 if entry.message_id else 2
