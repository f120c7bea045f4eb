"""SQLAlchemy 2.x models: contacts, consent ledger, enrollments, messages, events, replies, audit.

All times are naive-free UTC (`DateTime(timezone=True)`); the send record (`Message`) is unique on
(enrollment, step, channel), which is what makes a second send of the same step impossible.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# The one `Channel` (providers never import models); re-exported for the code that imports it from here.
from patient_drip.providers.types import Channel  # noqa: F401

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere for a million-contact table.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC datetimes on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; all stored times must be aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    EXITED = "exited"


class ExitReason(StrEnum):
    BOOKED = "booked"
    UNSUBSCRIBED = "unsubscribed"
    STAFF = "staff"
    UNREACHABLE = "unreachable"
    ERASED = "erased"


class MessageStatus(StrEnum):
    """Lifecycle of one send record. Ranks let provider callbacks only move it forward."""

    SENDING = "sending"  # committed before the provider call
    RETRYING = "retrying"  # transient failure; the enrollment is due again at the backoff time
    UNKNOWN = "unknown"  # request may have reached the provider: reconcile, never resend blindly
    SENT = "sent"  # accepted by the provider (or recorded in the outbox)
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent error, or retries exhausted
    BOUNCED = "bounced"
    SKIPPED = "skipped"  # not sent by decision: no consent, suppressed, no address
    HELD = "held"  # rendered but broke a content rule at send time (content.send_rules): never sent
    NEEDS_REVIEW = "needs_review"  # ambiguous and not reconcilable automatically: staff decide


MESSAGE_STATUS_RANK: dict[MessageStatus, int] = {
    MessageStatus.SENDING: 0,
    MessageStatus.RETRYING: 0,
    MessageStatus.UNKNOWN: 1,
    MessageStatus.NEEDS_REVIEW: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.FAILED: 4,
    MessageStatus.BOUNCED: 4,
    MessageStatus.SKIPPED: 4,
    MessageStatus.HELD: 4,
}

# Statuses that count as "the patient was (or may have been) sent this".
SENT_LIKE = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNKNOWN, MessageStatus.NEEDS_REVIEW)


class ConsentAction(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


class ConsentMethod(StrEnum):
    WEB_FORM = "web_form"
    STAFF = "staff"
    IMPORT = "import"
    SMS_KEYWORD = "sms_keyword"
    SMS_TEXT = "sms_text"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"
    ONE_CLICK = "one_click"
    PROVIDER = "provider"  # bounce, complaint, carrier opt-out
    API = "api"
    CLI = "cli"
    # Double opt-in: the person replied YES to the one confirmation text sent to their number.
    SMS_CONFIRMATION = "sms_confirmation"
    # A public request for a known contact, confirmed through the signed link emailed to the address on file.
    EMAIL_CONFIRMATION = "email_confirmation"


class EventKind(StrEnum):
    """Every `Event.kind` written anywhere (the contact timeline). A StrEnum, so stored and compared
    as its plain string; `add_event` also takes a plain string (webhooks build `sms_*`/`email_*`
    from the provider's status names, which are listed here as far as we know them)."""

    # contacts
    CONTACT_CREATED = "contact_created"
    CONTACT_EDITED = "contact_edited"  # staff corrected name, address, number or zone (field names only)
    CONSULTATION_REQUESTED = "consultation_requested"
    CONSENT_GRANTED = "consent_granted"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    ENROLLED = "enrolled"
    PAUSED = "paused"  # one enrollment, by staff or because of a possible crisis reply
    RESUMED = "resumed"
    BOOKED = "booked"
    BOOKING_CANCELLED = "booking_cancelled"  # the scheduler says the consultation was cancelled
    BOOKING_RESCHEDULED = "booking_rescheduled"
    NO_SHOW = "no_show"  # the person did not come: staff follow up
    CLICKED = "clicked"
    CHANNEL_BLOCKED = "channel_blocked"  # one contact's channel
    CHANNEL_UNBLOCKED = "channel_unblocked"
    SMS_REPLY = "sms_reply"
    CRISIS_FLAGGED = "crisis_flagged"
    CRISIS_RESOLVED = "crisis_resolved"  # staff handled a crisis reply (sequences resumed or kept paused)
    INTAKE_LIMIT_TRIPPED = "intake_limit_tripped"  # system-wide: the public form's global text limit was reached
    CHANGE_REQUESTED = "change_requested"  # a public request for a known contact, held until confirmed
    CHANGE_CONFIRMED = "change_confirmed"  # ... confirmed from the address on file, and applied
    SMS_CONFIRMATION_SENT = "sms_confirmation_sent"  # the one "Reply YES" text to an unconfirmed number
    SMS_CONFIRMED = "sms_confirmed"  # the number replied YES: texts may start
    QUESTION_ACKNOWLEDGED = "question_acknowledged"  # a patient's question got the automatic answer
    # dispatch
    MESSAGE_SENT = "message_sent"
    MESSAGE_SKIPPED = "message_skipped"
    MESSAGE_DEFERRED = "message_deferred"  # a step waits: quiet hours or the texting law for the number (why, until when)
    SMS_NAME_DROPPED = "sms_name_dropped"  # the text was too long with the name: sent nameless
    MESSAGE_HELD = "message_held"  # a content rule failed at send time; the reason is in the detail
    MESSAGE_RETRY = "message_retry"
    MESSAGE_FAILED = "message_failed"
    MESSAGE_UNKNOWN = "message_unknown"
    MESSAGE_RECONCILED = "message_reconciled"
    MESSAGE_NEEDS_REVIEW = "message_needs_review"
    MESSAGE_REQUEUED = "message_requeued"  # its worker stopped before handing it over: sent again
    MESSAGE_SETTLED = "message_settled"  # staff settled a send in review: marked sent, or sent again
    ENROLLMENT_COMPLETED = "enrollment_completed"
    ENROLLMENT_ENDED = "enrollment_ended"
    CHANNEL_PAUSED = "channel_paused"  # for everyone
    CHANNEL_RESUMED = "channel_resumed"
    # provider receipts: Twilio status callbacks (`sms_<MessageStatus>`)
    SMS_ACCEPTED = "sms_accepted"
    SMS_QUEUED = "sms_queued"
    SMS_SENDING = "sms_sending"
    SMS_SENT = "sms_sent"
    SMS_DELIVERED = "sms_delivered"
    SMS_READ = "sms_read"
    SMS_UNDELIVERED = "sms_undelivered"
    SMS_FAILED = "sms_failed"
    # provider receipts: SendGrid event webhook (`email_<event>`)
    EMAIL_PROCESSED = "email_processed"
    EMAIL_DELIVERED = "email_delivered"
    EMAIL_DEFERRED = "email_deferred"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    EMAIL_BOUNCE = "email_bounce"
    EMAIL_DROPPED = "email_dropped"
    EMAIL_SPAMREPORT = "email_spamreport"
    EMAIL_UNSUBSCRIBE = "email_unsubscribe"
    EMAIL_GROUP_UNSUBSCRIBE = "email_group_unsubscribe"
    EMAIL_GROUP_RESUBSCRIBE = "email_group_resubscribe"


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)  # E.164
    timezone: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64), default="")
    # Current consent, cached from the ledger for the dispatcher's hot path.
    email_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why a channel must not be used any more: the kind (`contacts.blocks.BlockReason`, which code
    # reads) and the readable text with its detail (which staff and the API see). Both or neither.
    email_block_reason: Mapped[str | None] = mapped_column(String(20))
    email_blocked: Mapped[str | None] = mapped_column(String(200))
    sms_block_reason: Mapped[str | None] = mapped_column(String(20))
    sms_blocked: Mapped[str | None] = mapped_column(String(200))
    preferred_channel: Mapped[str] = mapped_column(String(10), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    erased_at: Mapped[datetime | None]

    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="contact")

    __table_args__ = (
        Index("ix_contact_last_first", "last_name", "first_name"),
        Index("ix_contact_created", "created_at"),
    )

    @property
    def display_name(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or self.phone or f"contact #{self.id}"


class ConsentRecord(Base):
    """Append-only consent ledger: one row per grant or withdrawal, with its proof."""

    __tablename__ = "consent_record"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(10))
    method: Mapped[str] = mapped_column(String(30))
    wording_version: Mapped[str | None] = mapped_column(String(40))
    wording_text: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    actor: Mapped[str] = mapped_column(String(120), default="")
    note: Mapped[str] = mapped_column(String(400), default="")
    occurred_at: Mapped[datetime]


class Suppression(Base):
    """Addresses that must never be contacted again, kept as keyed hashes (survives erasure)."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))
    value_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("channel", "value_hash", name="uq_suppression_channel_hash"),)


class Enrollment(Base):
    """One contact in one campaign. `next_due_at` is set only while there is something to do."""

    __tablename__ = "enrollment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    campaign_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=EnrollmentStatus.ACTIVE)
    exit_reason: Mapped[str | None] = mapped_column(String(30))
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    enrolled_at: Mapped[datetime]
    # NULL unless active with a step to send; the claim query needs only this index.
    next_due_at: Mapped[datetime | None] = mapped_column(index=True)
    # Set by a claim: who holds it and until when (the claim moves next_due_at to the lease end,
    # so a crashed worker's enrollments become due again by themselves).
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    ended_at: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(64), default="")

    contact: Mapped[Contact] = relationship(back_populates="enrollments")

    __table_args__ = (
        UniqueConstraint("contact_id", "campaign_id", name="uq_enrollment_contact_campaign"),
        Index("ix_enrollment_campaign_status", "campaign_id", "status"),
    )


class Message(Base):
    """The send record. Written (status `sending`) and committed before any provider call."""

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollment.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[str] = mapped_column(String(100))
    step_id: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), default=MessageStatus.SENDING)
    to_address: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(300))
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    template_name: Mapped[str] = mapped_column(String(200), default="")
    template_version: Mapped[str] = mapped_column(String(64), default="")
    provider: Mapped[str] = mapped_column(String(20), default="")
    provider_message_id: Mapped[str | None] = mapped_column(String(100), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    attempted_at: Mapped[datetime | None]
    # Committed just before this attempt's provider call: NULL on a `sending` row means the request
    # never left (after a crash it is simply sent again); set means it may have (in doubt).
    handed_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(100))  # the worker that made the current attempt
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    delivered_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", "channel", name="uq_message_enrollment_step_channel"),
        Index("ix_message_status_attempted", "status", "attempted_at"),
        Index("ix_message_campaign_step", "campaign_id", "step_id"),
    )


class Event(Base):
    """Anything that happened to a contact: the timeline."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime]

    __table_args__ = (Index("ix_event_kind_time", "kind", "occurred_at"),)


class InboundMessage(Base):
    """An SMS a patient sent us."""

    __tablename__ = "inbound_message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    from_number: Mapped[str | None] = mapped_column(String(20))
    body: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    classification: Mapped[str] = mapped_column(String(20))
    crisis: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]
    handled_by: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (Index("ix_inbound_open", "handled_at", "crisis", "received_at"),)


class BookingKind(StrEnum):
    """What a scheduling tool told us about a consultation."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"
    NO_SHOW = "no_show"


class Booking(Base):
    """One word from a scheduling tool (Calendly, Cal.com, the generic webhook) or from staff, kept
    whether or not it matched a contact: unknown people are shown to staff, never dropped.

    `message_id` is the one message the booking is attributed to (`attribution` says by which
    rule); the funnel counts each booking under that message's step only. A scheduler's replay of
    the same event finds its row by (provider, external_id, kind) and changes nothing."""

    __tablename__ = "booking"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"), index=True)
    provider: Mapped[str] = mapped_column(String(20))  # calendly, calcom, generic, staff
    kind: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str | None] = mapped_column(String(300))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"), index=True)
    attribution: Mapped[str] = mapped_column(String(20), default="")  # tracking, last_click, last_message, none
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    step_id: Mapped[str | None] = mapped_column(String(100))
    # What the scheduler gave, for staff to match an unknown person by hand (erased with the contact).
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="")
    starts_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("provider", "external_id", "kind", name="uq_booking_event"),)
class PendingChange(Base):
    """A public request as received (the same row whoever it names), processed after the answer
    went out (`processed_at`). For a contact that already existed it is then the change held until
    the person confirms it from the address on file: applied once, never after `expires_at`."""

    __tablename__ = "pending_change"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The contact it named (a known one: held for confirmation) or created; NULL until processed.
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the parsed request, field by field
    # "" until processed; "new" (a new contact), "email" (link sent to the address on file), "staff" (none on file)
    confirm_by: Mapped[str] = mapped_column(String(10), default="")
    processed_at: Mapped[datetime | None] = mapped_column(index=True)
    ip_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(400))  # what the confirmation applied


class SmsConfirmation(Base):
    """The one double opt-in text a number may ever get, unique per number (a keyed hash, like the
    suppression list, so it outlives erasure): what it said, when it went, and the YES that answered it."""

    __tablename__ = "sms_confirmation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"), index=True)
    campaign_id: Mapped[str] = mapped_column(String(100), default="")  # started on YES if not yet running
    form_wording_version: Mapped[str | None] = mapped_column(String(40))  # the SMS consent box ticked on the form
    wording_version: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)  # exactly what was (or would have been) sent
    requested_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    send_error: Mapped[str | None] = mapped_column(String(200))
    confirmed_at: Mapped[datetime | None]
    confirmed_inbound_id: Mapped[int | None] = mapped_column(BigId)


class AuditEntry(Base):
    """Append-only record of every action that changes what a contact receives, and of every read
    of patient data (`contacts.read_audit`). The audit page filters by actor, action and date and
    pages by id: the two composite indexes serve the first two, `created_at`'s the third."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_id", "actor", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(60))
    contact_id: Mapped[int | None] = mapped_column(BigId, index=True)  # no FK: outlives erasure
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class User(Base):
    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    # Holds the clinician's duties besides the role (an admin who is also the clinic's clinician);
    # a user with the role "clinician" is one anyway. See `accounts.users.is_clinician`.
    clinician: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    # TOTP second factor (`accounts.mfa`): the base32 secret once enrolment is confirmed, and the last
    # 30-second step a code was accepted for, so that one code cannot be used twice.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    mfa_enabled_at: Mapped[datetime | None]


class RecoveryCode(Base):
    """A one-time recovery code for a user's second factor; only its argon2 hash is stored."""

    __tablename__ = "recovery_code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class StaffSession(Base):
    """One signed-in browser session, so that idle timeout and absolute lifetime are decided on the
    server (`accounts.sessions`): the cookie carries only this row's random id."""

    __tablename__ = "staff_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class AuthThrottle(Base):
    """Sign-in attempts per key (`account:<email>`, `net:<ip prefix>`, `reset:…`) in a fixed window.

    Counted with one INSERT … ON CONFLICT DO UPDATE … RETURNING (`accounts.throttle`), so parallel
    requests each get their own count. Times are epoch seconds: the window arithmetic happens in SQL."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)


class KeyValue(Base):
    """Small installation-wide state: the generated secret key, channel pauses."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class TemplateStatus(StrEnum):
    DRAFT = "draft"  # saved by marketing, not live
    PUBLISHED = "published"  # approved by a clinician: the version messages are rendered with
    SUPERSEDED = "superseded"  # was published, replaced by a newer one
    REJECTED = "rejected"


class TemplateVersion(Base):
    """Every version of a message template; the published one is used at send time.

    The files in `templates/` are the initial versions (`drip templates sync` imports changes)."""

    __tablename__ = "template_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))  # path under templates/, e.g. email/01-welcome.html
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=TemplateStatus.DRAFT)
    author: Mapped[str] = mapped_column(String(320))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(320))  # or who rejected it
    approved_at: Mapped[datetime | None]
    # The version the editor started from (None: the file or unknown); a draft built on a rejected
    # version says so on its review page.
    based_on: Mapped[int | None] = mapped_column(Integer)
    review_note: Mapped[str] = mapped_column(String(500), default="", server_default="")  # why it was rejected

    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_template_version_name_version"),
        Index("ix_template_version_name_status", "name", "status"),
    )


class ClaimStatus(StrEnum):
    APPROVED = "approved"  # messages may say it
    SUPERSEDED = "superseded"  # replaced by a newer wording of the same claim
    RETIRED = "retired"  # withdrawn by a clinician


class ClaimSource(StrEnum):
    CLINIC_PAGE = "clinic_page"  # the clinic's own education page
    CITATION = "citation"  # a reference the clinician entered


class ClaimRecord(Base):
    """One wording of a medical claim in the clinic's claims library (`content.claim_library`).

    Editing a claim's wording adds a version with the same `claim_key`; the old one is superseded.
    Every medical sentence a message says must match an approved version."""

    __tablename__ = "claim"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim_key: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer, default=1)
    text: Mapped[str] = mapped_column(Text)
    source_kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default=ClaimStatus.APPROVED)
    note: Mapped[str] = mapped_column(String(500), default="")
    approved_by: Mapped[str] = mapped_column(String(320))
    approved_at: Mapped[datetime]
    retired_by: Mapped[str | None] = mapped_column(String(320))
    retired_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("claim_key", "version", name="uq_claim_key_version"),
        Index("ix_claim_status", "status"),
    )


class ApiToken(Base):
    """Per-user token for the JSON API; only its SHA-256 is stored. It opens the routes of its
    `scopes` (space-separated, see `accounts.scopes`) that its user's role allows, until `expires_at`
    or `revoked_at`."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(60))


class RateBucket(Base):
    """A limit shared by every process: per-channel send pacing (`dispatch.ratelimit`, key "sms" or
    "email") and the public intake's limits (`contacts.intake_limits`, keys "intake:…"). One row
    per key: the next free slot (for the intake, the theoretical arrival time of GCRA)."""

    __tablename__ = "rate_bucket"

    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_slot_at: Mapped[datetime]


# --- the two append-only records: the contact timeline (`Event`) and the audit log (`AuditEntry`)


def add_event(
    session: Session,
    kind: str,
    now: datetime,
    *,
    contact_id: int | None,
    enrollment_id: int | None = None,
    message_id: int | None = None,
    **detail: Any,
) -> None:
    """Append one entry to the contact timeline (`contact_id` None: a system-wide event)."""
    session.add(
        Event(
            kind=kind,
            contact_id=contact_id,
            enrollment_id=enrollment_id,
            message_id=message_id,
            detail=detail,
            occurred_at=now,
        )
    )


def audit(session: Session, actor: str, action: str, now: datetime, *, contact_id: int | None = None, **detail: Any) -> None:
    """Record an action that changes what a contact receives: who, what, when."""
    session.add(AuditEntry(actor=actor, action=action, contact_id=contact_id, detail=detail, created_at=now))
