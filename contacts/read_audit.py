"""The audit of reads: every time someone reads or exports patient data, one audit row says who,
what (the kind, and the contact or the query), when and how many rows.

One rule, `audit_read`, that every entry point calls: the staff pages (a contact, a message, the
replies inbox, the contacts list and its CSV export), the JSON API's reads, and `drip consent export`.
A list read writes one row with its count, never one row per contact shown, so a page of 50
contacts costs one insert. The row goes to the same `audit_log` as the changes (`models.audit`),
so the audit page shows reads and changes together and filters them by kind.

May import `models` only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from patient_drip.models import audit

MAX_WHAT = 200  # a search query is kept, cut to this length (the audit row is not a copy of the data)


class ReadKind(StrEnum):
    """What was read; the value is the audit row's `action`."""

    CONTACT_VIEWED = "contact_viewed"  # one contact's page or API record (timeline, consent, enrollments)
    CONTACTS_LISTED = "contacts_listed"  # a search/list of contacts (staff page or API)
    CONTACTS_EXPORTED = "contacts_exported"  # the contacts CSV export
    MESSAGE_VIEWED = "message_viewed"  # one sent message with its body (page or its HTML)
    MESSAGES_LISTED = "messages_listed"  # a list of messages: a contact's with their bodies (API), or the staff list
    REPLIES_VIEWED = "replies_viewed"  # the replies inbox (patients' texts)
    CONVERSATION_VIEWED = "conversation_viewed"  # one contact's text thread in the inbox
    CONSENT_EXPORTED = "consent_exported"  # a contact's consent history (`drip consent export`)


READ_KINDS = tuple(kind.value for kind in ReadKind)


def audit_read(session: Session, actor: str, kind: ReadKind, now: datetime, *, count: int,
               contact_id: int | None = None, what: str = "") -> None:
    """Record that `actor` read `count` rows of patient data of `kind` at `now`: one contact's
    (`contact_id`) or those a query selected (`what`, e.g. `q=smith status=active`, kept to
    `MAX_WHAT` characters). Adds the row to `session`; the caller commits, before the data is shown
    (a read whose audit row could not be written is not served)."""
    detail: dict[str, object] = {"rows": max(0, int(count))}
    if what:
        detail["what"] = what[:MAX_WHAT]
    audit(session, actor, str(kind), now, contact_id=contact_id, **detail)
