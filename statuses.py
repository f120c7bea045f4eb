"""The statuses and kinds the models store, as `StrEnum`s (stored and compared as their plain strings):
enrollment and message statuses with their order, consent actions and methods, every timeline event
kind, booking kinds, template and claim statuses. Imports nothing of ours; `models` re-exports them.
"""

from __future__ import annotations

from enum import StrEnum


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
    CRISIS = "crisis"  # a possible-crisis reply ended it (a campaign with `crisis` in exit_on; others pause)


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
    # the inbox's conversations (`contacts.conversations`, `dispatch.staff_reply`)
    STAFF_REPLY = "staff_reply"  # a member of staff texted the person from the inbox (the Message is linked)
    STAFF_NOTE = "staff_note"  # a note a member of staff kept on the thread ("called back, safe")
    CONVERSATION_STATE = "conversation_state"  # the thread became open / waiting on patient / done
    CONVERSATION_ASSIGNED = "conversation_assigned"  # the thread was given to (or taken from) a staff user
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
    JOURNEY_PATH = "journey_path"  # a branch chose a way, a wait ended, or the enrollment went into the holdout (why, in words)
    REPLY_PAUSED = "reply_paused"  # a question by text paused the journey (pause on reply): staff answer, then resume or end it
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


class BookingKind(StrEnum):
    """What a scheduling tool told us about a consultation."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"
    NO_SHOW = "no_show"


class TaskKind(StrEnum):
    """What the system asks the front desk to do (`contacts.tasks`)."""

    NEW_REQUEST = "new_request"  # a new person asked for a consultation: contact them
    PHONE_CALL = "phone_call"  # ... and asked to be called
    NO_SHOW = "no_show"  # the person missed the consultation: call them
    UNMATCHED_BOOKING = "unmatched_booking"  # a scheduler told us of someone we could not match: find them
    REVIEW = "review"  # a send nobody can tell the fate of (`dispatch.reconcile`): decide
    FAILED_SEND = "failed_send"  # a message failed for good (a bad number or address): check the contact
    REPLY_PAUSED = "reply_paused"  # a question by text paused the journey: answer, then resume or end it


class ConversationState(StrEnum):
    """Where a contact's text thread stands in the staff inbox."""

    OPEN = "open"  # someone at the clinic needs to act
    WAITING = "waiting"  # we answered; waiting on the patient
    DONE = "done"  # nothing left to do (a new text from the person reopens it)


class TemplateStatus(StrEnum):
    DRAFT = "draft"  # saved by marketing, not live
    PUBLISHED = "published"  # approved by a clinician: the version messages are rendered with
    SUPERSEDED = "superseded"  # was published, replaced by a newer one
    REJECTED = "rejected"


class ClaimStatus(StrEnum):
    APPROVED = "approved"  # messages may say it
    SUPERSEDED = "superseded"  # replaced by a newer wording of the same claim
    RETIRED = "retired"  # withdrawn by a clinician


class ClaimSource(StrEnum):
    CLINIC_PAGE = "clinic_page"  # the clinic's own education page
    CITATION = "citation"  # a reference the clinician entered
