"""SQLAlchemy 2.x models: contacts, consent ledger, enrollments, messages, events, replies, audit.

All times are naive-free UTC (`DateTime(timezone=True)`); the send record (`Message`) is unique on
(enrollment, entry, step, channel), which is what makes a second send of the same step in the same
time through the journey impossible.
"""

from __future__ import annotations

from datetime import datetime, timezone
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

# Re-exported so callers keep importing them from here: the one `Channel` (providers never import
# models), and the statuses and kinds (their own module).
from patient_drip.providers.types import Channel  # noqa: F401
from patient_drip.statuses import (  # noqa: F401
    MESSAGE_STATUS_RANK, SENT_LIKE, BookingKind, ClaimSource, ClaimStatus, ConsentAction, ConsentMethod,
    ConversationState, EnrollmentStatus, EventKind, ExitReason, MessageStatus, TaskKind, TemplateStatus,
)

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
    language: Mapped[str] = mapped_column(String(5), default="en", server_default="en")  # `content.languages`
    # What the form said they want to learn about (depression, bipolar, unsure, ""): journeys branch on it.
    interest: Mapped[str] = mapped_column(String(20), default="", server_default="")
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
    # The timing version it follows to the end (`content.campaign_versions`); NULL: 1, the file.
    campaign_version: Mapped[int | None] = mapped_column(Integer)
    # Which time through the journey (re-entry: + 1); a message is unique per entry and step.
    entry: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # When it reached its current step (a wait counts from here); NULL: not walked yet.
    step_entered_at: Mapped[datetime | None]
    holdout: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # only the holdout steps

    contact: Mapped[Contact] = relationship(back_populates="enrollments")

    __table_args__ = (
        UniqueConstraint("contact_id", "campaign_id", name="uq_enrollment_contact_campaign"),
        # Also answers the campaign page's journey counts alone (`dispatch.journey_counts`).
        Index("ix_enrollment_campaign_status_step", "campaign_id", "status", "step_index", "exit_reason"),
    )


class Message(Base):
    """The send record. Written (status `sending`) and committed before any provider call.

    A text a member of staff wrote in the inbox (`dispatch.staff_reply`) belongs to no enrollment:
    `enrollment_id` is NULL, `campaign_id` empty, `step_id` "staff-reply" (its `StaffReply` row holds
    the form's idempotency key)."""

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment.id", ondelete="CASCADE"))
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
    entry: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # `Enrollment.entry`
    # The A/B variant (`content.journey.assign_variant`; NULL without one) and the language it is in.
    variant: Mapped[str | None] = mapped_column(String(40))
    language: Mapped[str | None] = mapped_column(String(5))

    __table_args__ = (
        UniqueConstraint("enrollment_id", "entry", "step_id", "channel", name="uq_message_enrollment_entry_step_channel"),
        Index("ix_message_status_attempted", "status", "attempted_at"),
        # With the status, the journey's sends per step are counted from the index alone.
        Index("ix_message_campaign_step_status", "campaign_id", "step_id", "status"),
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


class Conversation(Base):
    """One contact's text thread in the staff inbox (`contacts.conversations`): its state and who
    has it. What was said is not copied here: the thread is read from the contact's own rows (their
    texts, our texts, notes as timeline events), so erasing the contact erases the thread."""

    __tablename__ = "conversation"
    # The waiting / done tabs list a state newest first: this index serves them without a sort.
    __table_args__ = (Index("ix_conversation_state_updated", "state", "updated_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), unique=True)
    state: Mapped[str] = mapped_column(String(20), default=ConversationState.OPEN)
    state_at: Mapped[datetime]
    state_by: Mapped[str] = mapped_column(String(120), default="")
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"), index=True)
    last_inbound_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StaffReply(Base):
    """A text a member of staff sent from the inbox: its send record, who wrote it, and the form's
    idempotency key, unique, so a double click or a resubmitted form sends once."""

    __tablename__ = "staff_reply"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), unique=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    sent_by: Mapped[str] = mapped_column(String(120))
    # Within the conversational window of the person's own text (may go outside quiet hours).
    conversational: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


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
    attribution: Mapped[str] = mapped_column(String(20), default="")  # tracking, last_click, last_delivered, last_message, none
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    step_id: Mapped[str | None] = mapped_column(String(100))
    # What the scheduler gave, for staff to match an unknown person by hand (erased with the contact).
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="")
    starts_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("provider", "external_id", "kind", name="uq_booking_event"),)


class StaffTask(Base):
    """Work the system hands to the front desk (`contacts.tasks`): a new request to contact, a no-show
    to call, a booking to match, a send to review or that failed. Kept when done, with who finished it
    and when. One task per booking event at most (`uq_staff_task_booking`), so a scheduler's retry
    cannot add a second."""

    __tablename__ = "staff_task"
    __table_args__ = (UniqueConstraint("kind", "booking_id", name="uq_staff_task_booking"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id", ondelete="SET NULL"), index=True)
    booking_id: Mapped[int | None] = mapped_column(ForeignKey("booking.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime]
    # who took it on (a staff user), and who finished it: the actor string, kept if the user goes
    assigned_to: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id", ondelete="SET NULL"))
    done_at: Mapped[datetime | None] = mapped_column(index=True)
    done_by: Mapped[str | None] = mapped_column(String(120))


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


class CampaignVersion(Base):
    """A campaign's timing as saved (`content.campaign_versions`), numbered from 2 (1 is the file)."""

    __tablename__ = "campaign_version"
    __table_args__ = (UniqueConstraint("campaign_id", "number", name="uq_campaign_version_number"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(100))
    number: Mapped[int] = mapped_column(Integer)
    timing: Mapped[dict[str, Any]] = mapped_column(JSON)  # step id → {"delay_seconds", "enabled"}
    changes: Mapped[list[str]] = mapped_column(JSON)  # what differs from the version before, in words
    note: Mapped[str] = mapped_column(String(500))
    author: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime]


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
    # A Spanish message is checked against Spanish claims only (each a clinician-approved translation).
    language: Mapped[str] = mapped_column(String(5), default="en", server_default="en")

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
    session.add(Event(kind=kind, contact_id=contact_id, enrollment_id=enrollment_id, message_id=message_id,
                      detail=detail, occurred_at=now))


def audit(session: Session, actor: str, action: str, now: datetime, *, contact_id: int | None = None, **detail: Any) -> None:
    """Record an action that changes what a contact receives: who, what, when."""
    session.add(AuditEntry(actor=actor, action=action, contact_id=contact_id, detail=detail, created_at=now))
