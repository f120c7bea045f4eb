"""Required parts: what every message, and every email layout, must carry.

- every message: the booking link (`booking-link`);
- every email, and every email layout on its own: the one-click unsubscribe link, the clinic's
  postal address (CAN-SPAM) and the 988 Suicide & Crisis Lifeline (`email-footer`).

A layout is checked on its own, not only through the emails that extend it: an edited layout is
saved and approved before any email is rendered with it, and a layout without the unsubscribe
link would otherwise reach every email at once.

`missing_parts` is the one rule. The content guard applies it to probe renders of template
sources (so `drip templates check` and the template editor refuse a layout or an email without
its parts), and the dispatcher applies it to each rendered email before sending
(`content.send_rules.hold_reasons`): an email without them is held, not sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

EMAIL_FOOTER = "email-footer"  # the ids are the content guard's rule ids
BOOKING_LINK = "booking-link"

Kind = Literal["email", "sms", "layout"]

_CRISIS_LINE = re.compile(r"(?<!\d)988(?!\d)")
_LAYOUT_BLOCK = re.compile(r"\{%-?\s*block\s+\w+")
_EXTENDS = re.compile(r"\{%-?\s*extends\b")


def is_email_layout(source: str) -> bool:
    """Whether an email template source is a layout (it declares blocks and extends nothing), as
    opposed to a partial that a layout includes (which carries no footer of its own)."""
    return bool(_LAYOUT_BLOCK.search(source)) and not _EXTENDS.search(source)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def missing_parts(kind: Kind, output: str, visible: str, values: Mapping[str, object]) -> list[tuple[str, str]]:
    """(rule id, what is missing) for one rendered output; empty when nothing is missing.

    `output` is everything rendered (links may sit in href attributes), `visible` what a reader
    sees of it (for an email's plain-text part, the part itself), `values` the strings that
    stand for `booking_link`, `unsubscribe_link` and `clinic_address` in it (real values, or the
    guard's marker strings). A layout is not required to link to booking (each email does)."""
    missing: list[tuple[str, str]] = []
    if kind != "layout":
        booking = str(values.get("booking_link", ""))
        if not booking or booking not in output:
            missing.append((BOOKING_LINK, "has no {{ booking_link }}: every message links to booking"))
    if kind == "sms":
        return missing
    unsubscribe = str(values.get("unsubscribe_link", ""))
    if not unsubscribe or unsubscribe not in output:
        missing.append((EMAIL_FOOTER, "has no {{ unsubscribe_link }}: every email needs a one-click unsubscribe link"))
    address = _collapse(str(values.get("clinic_address", "")))
    # Found as it is, it is found collapsed too (its ends are not spaces, its inner spaces single):
    # collapsing a whole email's text for every send is the slow way to the same answer.
    if not address or (address not in visible and address not in _collapse(visible)):
        missing.append((EMAIL_FOOTER, "does not show {{ clinic_address }}: every email shows the clinic's postal "
                                      "address"))
    if not _CRISIS_LINE.search(visible):
        missing.append((EMAIL_FOOTER, "does not show the 988 Suicide & Crisis Lifeline: every email footer has it"))
    return missing
