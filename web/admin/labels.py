"""Every stored code as staff read it, in one place: message and enrollment statuses, consent
methods, contact sources, channel blocks, channels, timeline event kinds, booking attribution rules;
and phone numbers in the patient's own national format.

Templates call the `label(kind, code)` global and the `phone` filter (registered by `admin.common`);
Python code that builds text for a page calls the same functions. An unknown code is shown
humanised ("some_code" → "Some code"), never raw with underscores. Imports only `statuses`,
`contacts.blocks` (the block kinds) and `phonenumbers`.
"""

from __future__ import annotations

from collections.abc import Mapping

import phonenumbers
from markupsafe import Markup, escape

from patient_drip.contacts.blocks import BlockReason
from patient_drip.statuses import ConsentMethod, EnrollmentStatus, ExitReason, MessageStatus

CHANNELS = {"email": "Email", "sms": "Text message"}

MESSAGE_STATUSES = {
    MessageStatus.SENDING: "Sending",
    MessageStatus.RETRYING: "Will retry",
    MessageStatus.UNKNOWN: "Outcome unknown",
    MessageStatus.SENT: "Sent",
    MessageStatus.DELIVERED: "Delivered",
    MessageStatus.FAILED: "Failed",
    MessageStatus.BOUNCED: "Bounced",
    MessageStatus.SKIPPED: "Skipped (not sent)",
    MessageStatus.HELD: "Held (content rule)",
    MessageStatus.NEEDS_REVIEW: "Needs review",
}
# In outbox mode nothing leaves the machine: "sent" means "recorded in the outbox".
OUTBOX_STATUSES = {**MESSAGE_STATUSES, MessageStatus.SENT: "In the outbox"}

ENROLLMENT_STATUSES = {
    EnrollmentStatus.ACTIVE: "In sequence",
    EnrollmentStatus.PAUSED: "Paused",
    EnrollmentStatus.COMPLETED: "Finished",
    EnrollmentStatus.EXITED: "Stopped",
}
EXIT_REASONS = {
    ExitReason.BOOKED: "Booked",
    ExitReason.UNSUBSCRIBED: "Unsubscribed",
    ExitReason.STAFF: "Stopped by staff",
    ExitReason.UNREACHABLE: "Unreachable",
    ExitReason.ERASED: "Erased",
}

CONSENT_METHODS = {
    ConsentMethod.WEB_FORM: "website form",
    ConsentMethod.STAFF: "staff",
    ConsentMethod.IMPORT: "CSV import",
    ConsentMethod.SMS_KEYWORD: "text keyword (STOP/START)",
    ConsentMethod.SMS_TEXT: "text reply",
    ConsentMethod.UNSUBSCRIBE_PAGE: "preference page",
    ConsentMethod.ONE_CLICK: "one-click unsubscribe",
    ConsentMethod.PROVIDER: "provider report",
    ConsentMethod.API: "API",
    ConsentMethod.CLI: "command line",
    ConsentMethod.SMS_CONFIRMATION: "replied YES to the confirmation text",
    ConsentMethod.EMAIL_CONFIRMATION: "confirmed by emailed link",
}

SOURCES = {
    "web_form": "Website form", "staff": "Staff", "import": "CSV import", "api": "API",
    "cli": "Command line", "sms_confirmation": "Text confirmation", "": "—",
    # where a booking came from (a booking event's source)
    "calendly": "Calendly", "calcom": "Cal.com", "generic": "Booking webhook",
}

BLOCK_REASONS = {
    BlockReason.OPTED_OUT: "Opted out",
    BlockReason.SUPPRESSED: "On the do-not-contact list",
    BlockReason.FAILED: "Refused by the provider",
    BlockReason.BOUNCED: "Bounced",
    BlockReason.COMPLAINED: "Marked as spam",
    BlockReason.DROPPED: "Dropped by the email provider",
    BlockReason.ERASED: "Erased",
}

ATTRIBUTION = {
    "tracking": "used this message's booking link",
    "last_click": "last message clicked before booking",
    "last_delivered": "last message delivered before booking",
    "last_message": "last message sent before booking",
    "none": "no message sent yet",
    "": "",
}

EVENT_KINDS = {
    "contact_created": "Contact created",
    "contact_edited": "Contact details edited",
    "consultation_requested": "Asked for a consultation (web form)",
    "enrolled": "Enrolled",
    "enrollment_ended": "Sequence stopped",
    "enrollment_completed": "Sequence finished",
    "booked": "Booked a consultation",
    "booking_cancelled": "Consultation cancelled",
    "booking_rescheduled": "Consultation rescheduled",
    "no_show": "Missed the consultation",
    "paused": "Paused",
    "resumed": "Resumed",
    "clicked": "Clicked the booking link",
    "message_failed": "Message failed",
    "message_retry": "Message will be retried",
    "message_unknown": "Message outcome unknown (being reconciled)",
    "message_skipped": "Message skipped",
    "message_deferred": "Message waits (quiet hours or texting law)",
    "sms_name_dropped": "Text sent without the first name (too long with it)",
    "message_held": "Message held, not sent (content rule)",
    "message_reconciled": "Message outcome reconciled",
    "message_needs_review": "Message needs review",
    "message_requeued": "Message sent again (its worker stopped before handing it to the provider)",
    "message_settled": "Message settled by staff",
    "channel_blocked": "Channel blocked",
    "channel_unblocked": "Channel unblocked",
    "crisis_flagged": "Reply flagged as possible crisis",
    "crisis_resolved": "Crisis reply resolved",
    "sms_reply": "Text reply classified",
    "change_requested": "A web-form request named this contact (held until confirmed from the address on file)",
    "change_confirmed": "Web-form request confirmed by the emailed link",
    "sms_confirmation_sent": "Asked the number to confirm texts (Reply YES)",
    "sms_confirmed": "Number confirmed texts (replied YES)",
    "question_acknowledged": "Question acknowledged automatically",
    "sms_delivered": "Text delivered (carrier receipt)",
    "sms_undelivered": "Text not delivered (carrier receipt)",
    "sms_failed": "Text failed (carrier receipt)",
    "email_delivered": "Email delivered",
    "email_open": "Email opened",
    "email_click": "Email link clicked",
    "email_bounce": "Email bounced",
    "email_dropped": "Email dropped by the provider",
    "email_spamreport": "Email marked as spam",
    "email_unsubscribe": "Unsubscribed from the email",
}

# What an inbound text was read as (`contacts.replies.ReplyKind`).
REPLY_KINDS = {"opt_out": "Stop keyword", "opt_out_text": "Asked to stop", "opt_in": "Start keyword",
               "help": "Help keyword", "crisis": "Possible crisis", "other": "Message"}

_KINDS: dict[str, Mapping[str, str]] = {
    "reply": REPLY_KINDS, "channel": CHANNELS, "message_status": MESSAGE_STATUSES, "outbox_status": OUTBOX_STATUSES,
    "enrollment_status": ENROLLMENT_STATUSES, "exit_reason": EXIT_REASONS, "method": CONSENT_METHODS,
    "source": SOURCES, "block": BLOCK_REASONS, "attribution": ATTRIBUTION, "event": EVENT_KINDS,
}


def humanise(code: str) -> str:
    """A code nobody labelled yet, readable: "some_code-name" → "Some code name"."""
    text = code.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:]


def label(kind: str, code: object) -> str:
    """The staff-facing words for `code` of `kind` (one of the maps above; KeyError for an unknown kind)."""
    value = "" if code is None else str(code)
    known = _KINDS[kind]
    return known[value] if value in known else humanise(value)


def codes(kind: str) -> frozenset[str]:
    """Every code `kind` has words for."""
    return frozenset(str(code) for code in _KINDS[kind])


def message_status(status: str, delivery: str) -> str:
    """A message status, where "sent" in outbox mode reads "In the outbox"."""
    return label("outbox_status" if delivery == "outbox" else "message_status", status)


def enrollment_label(status: str, exit_reason: str | None) -> str:
    """One enrollment's state: its exit reason when it stopped ("Booked"), else its status."""
    if status == EnrollmentStatus.EXITED and exit_reason:
        return label("exit_reason", exit_reason)
    return label("enrollment_status", status)


def block_label(reason: str | None, text: str | None) -> str:
    """Why a channel is blocked, in words: "Opted out (staff)", "Bounced: mailbox full". The stored
    text is "<kind>: <detail>", where the detail of an opt-out is the consent method."""
    if not reason and not text:
        return ""
    detail = (text or "").partition(": ")[2].strip()
    words = label("block", reason) if reason else humanise((text or "").partition(":")[0])
    if not detail:
        return words
    if reason == BlockReason.OPTED_OUT:
        return f"{words} ({label('method', detail)})"
    return f"{words}: {detail}"


def national_phone(e164: str | None) -> str:
    """`e164` in the national format of its own country ("(312) 555-0142" for +1, "020 7946 0018"
    for +44); the E.164 text itself when phonenumbers cannot parse it."""
    if not e164:
        return ""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    if not phonenumbers.is_possible_number(number):
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def phone_region(e164: str | None) -> str:
    """The number's country as an ISO code ("US", "GB"), or "" when unknown."""
    if not e164:
        return ""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""
    except phonenumbers.NumberParseException:
        return ""


def phone_link(e164: str | None) -> Markup:
    """A tap-to-call link: the national format shown, the E.164 number in `tel:` and the title."""
    if not e164:
        return Markup("")
    return Markup('<a class="phone" href="tel:{0}" title="{0}">{1}</a>').format(escape(e164),
                                                                               escape(national_phone(e164)))
