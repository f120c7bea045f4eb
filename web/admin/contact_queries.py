"""Contact search and keyset pagination that stay fast at a million contacts.

Every search term becomes a *range* on an indexed column (`col >= 'smi' AND col < 'smj'`), never a
leading-wildcard LIKE:

- contains `@`  → email prefix (emails are stored lower-case; unique index on `contact.email`);
- mostly digits → phone prefix on the E.164 form (`+1312…`; unique index on `contact.phone`),
  with the clinic's +1 country code tried for national numbers;
- otherwise     → last-name prefix (index `ix_contact_last_first`), optionally with a first-name
  prefix ("Alex Smith" or "Smith, Alex"), plus an email prefix for single words ("dana").

Ranges, unlike LIKE, use a plain B-tree index on SQLite (whose LIKE is case-insensitive and so
cannot) and on PostgreSQL under any collation whose order is code-point order (C, C.UTF-8).
Names are matched case-insensitively by trying the usual capitalisations of the prefix (as typed,
lower, Capitalised, UPPER); an irregular one such as "McDonald" needs the capitals typed.

Pages are ordered by id, newest first, and continue from the last id seen (`before`) or go back
from the first (`after`) — never OFFSET, which reads and discards every earlier row.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from patient_drip.models import Contact, Enrollment, EnrollmentStatus, ExitReason

PAGE_SIZE = 50
MAX_QUERY = 200

# Filters on the contact's enrollments (any campaign).
STATUS_FILTERS: dict[str, str] = {
    "active": "In a sequence",
    "paused": "Paused",
    "completed": "Sequence finished",
    "booked": "Booked",
    "unsubscribed": "Unsubscribed",
    "not_enrolled": "Not enrolled",
}

_PHONEISH = re.compile(r"^\+?[\d\s().-]+$")


def _comparable(text: str) -> str:
    """`text` as the database can compare it: no NUL (PostgreSQL refuses it in text) and no lone
    surrogates (not encodable as UTF-8), each replaced rather than failing the page."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _next_string(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`, or None when there is
    none (a prefix of only U+10FFFF: `chr` has nothing after it)."""
    carried = prefix.rstrip(chr(sys.maxunicode))
    if not carried:
        return None
    code = ord(carried[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000  # after U+D7FF come the surrogates, which no stored text can contain
    return carried[:-1] + chr(code)


def prefix_range(column: InstrumentedAttribute[str | None] | InstrumentedAttribute[str], prefix: str) -> ColumnElement[bool]:
    """Rows whose `column` starts with `prefix`, as an index range (code-point order)."""
    upper = _next_string(prefix)
    return column >= prefix if upper is None else and_(column >= prefix, column < upper)


def _case_variants(text: str) -> list[str]:
    return list(dict.fromkeys([text, text.lower(), text[:1].upper() + text[1:].lower(), text.title(), text.upper()]))


def _any_prefix(column: InstrumentedAttribute[str], text: str) -> ColumnElement[bool]:
    return or_(*(prefix_range(column, variant) for variant in _case_variants(text)))


def search_condition(query: str) -> ColumnElement[bool] | None:
    """The WHERE clause for what a person typed in the search box (None: no search)."""
    text = " ".join(_comparable(query).split())[:MAX_QUERY]
    if not text:
        return None
    if "@" in text:
        return prefix_range(Contact.email, text.lower().replace(" ", ""))
    digits = re.sub(r"\D", "", text)
    if _PHONEISH.match(text) and len(digits) >= 3:
        prefixes = ["+" + digits]
        if not text.startswith("+") and not digits.startswith("1"):
            prefixes.append("+1" + digits)  # a national (NANP) number typed without the country code
        return or_(*(prefix_range(Contact.phone, prefix) for prefix in prefixes))
    if "," in text:
        last, _, first = (part.strip() for part in text.partition(","))
    elif " " in text:
        first, _, last = text.rpartition(" ")
    else:
        first, last = "", text
    if not last:
        last, first = first, ""
    if not last:
        return false()
    condition = _any_prefix(Contact.last_name, last)
    if first:
        return and_(condition, _any_prefix(Contact.first_name, first))
    return or_(condition, prefix_range(Contact.email, last.lower()))


def _status_match(status: str) -> ColumnElement[bool]:
    if status in ("booked", "unsubscribed"):
        reason = ExitReason.BOOKED if status == "booked" else ExitReason.UNSUBSCRIBED
        return and_(Enrollment.status == EnrollmentStatus.EXITED, Enrollment.exit_reason == reason)
    return Enrollment.status == status


def enrollment_condition(*, status: str = "", campaign: str = "", step_index: int | None = None
                         ) -> ColumnElement[bool] | None:
    """Contacts with one enrollment that matches all of: the state `status`, the campaign, and
    `step_index`: now at that step of the journey. "not_enrolled"
    means no enrollment (in `campaign`, when given). One EXISTS on the (contact_id, campaign_id)
    unique index; None when nothing is asked."""
    status = status if status in STATUS_FILTERS else ""
    if not status and not campaign:
        return None
    matches: list[ColumnElement[bool]] = [Enrollment.contact_id == Contact.id]
    if campaign:
        matches.append(Enrollment.campaign_id == campaign)
    if status == "not_enrolled":
        return ~exists().where(*matches)
    if status:
        matches.append(_status_match(status))
    if campaign and step_index is not None:
        matches.append(Enrollment.step_index == step_index)
    return exists().where(*matches)


@dataclass(frozen=True, slots=True)
class ContactPage:
    contacts: list[Contact]
    older: int | None  # pass as `before` for the next (older) page
    newer: int | None  # pass as `after` for the previous (newer) page


def find_contacts(session: Session, *, query: str = "", status: str = "", before: int | None = None,
                  after: int | None = None, limit: int = PAGE_SIZE, campaign: str = "",
                  step_index: int | None = None, added_from: datetime | None = None,
                  added_until: datetime | None = None) -> ContactPage:
    """One page of contacts, newest first, matching the search, the enrollment filter (status,
    campaign, steps done) and the date added (`added_from` inclusive, `added_until` exclusive)."""
    limit = max(1, min(limit, 200))
    conditions: list[ColumnElement[bool]] = [Contact.erased_at.is_(None)]
    for condition in (search_condition(query), enrollment_condition(status=status, campaign=campaign,
                                                                      step_index=step_index)):
        if condition is not None:
            conditions.append(condition)
    if added_from is not None:
        conditions.append(Contact.created_at >= added_from)
    if added_until is not None:
        conditions.append(Contact.created_at < added_until)
    statement = select(Contact).where(*conditions)
    if after is not None:
        rows = list(session.scalars(statement.where(Contact.id > after).order_by(Contact.id.asc()).limit(limit + 1)))
        more_newer = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        return ContactPage(rows, older=rows[-1].id if rows else None, newer=rows[0].id if rows and more_newer else None)
    if before is not None:
        statement = statement.where(Contact.id < before)
    rows = list(session.scalars(statement.order_by(Contact.id.desc()).limit(limit + 1)))
    more_older = len(rows) > limit
    rows = rows[:limit]
    return ContactPage(rows, older=rows[-1].id if rows and more_older else None,
                       newer=rows[0].id if rows and before is not None else None)


def enrollments_by_contact(session: Session, contact_ids: Sequence[int]) -> dict[int, list[Enrollment]]:
    """The enrollments of a page of contacts, in one query."""
    result: dict[int, list[Enrollment]] = {contact_id: [] for contact_id in contact_ids}
    if contact_ids:
        for enrollment in session.scalars(select(Enrollment).where(Enrollment.contact_id.in_(list(contact_ids)))
                                          .order_by(Enrollment.id)):
            result[enrollment.contact_id].append(enrollment)
    return result
