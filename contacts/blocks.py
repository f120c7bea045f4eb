"""Channel blocks and the suppression list: why a channel of a contact must not be used any more.

A block has a kind (`BlockReason`, stored in `<channel>_block_reason`, the only thing code reads)
and a readable text with its detail (`<channel>_blocked`, what staff and the API see). Every writer
goes through `block_channel` / `unblock_channel` (or, for the importer's in-memory state,
`set_block` / `clear_block` plus the rows of `block_rows` / `unblock_rows`); every reader asks
`blocked_reason`, `is_blocked`, `is_opted_out` or `consent_can_lift`.

Which block wins: the first cause is kept, except that an opt-out (the weakest block: fresh consent
lifts it) gives way to any other cause, and erasure overrides everything.

May import `models`, `contacts.fields`, `contacts.records`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.fields import address_hash
from patient_drip.contacts.records import Row, add_rows, event_row
from patient_drip.models import Channel, Contact, EventKind, Suppression


class BlockReason(StrEnum):
    OPTED_OUT = "opted_out"  # the person withdrew consent; fresh explicit consent lifts it
    SUPPRESSED = "suppressed"  # the address is on the suppression list (bounce, complaint, erasure...)
    FAILED = "failed"  # the provider refused the address for good (invalid number, carrier block...)
    BOUNCED = "bounced"  # hard bounce reported by the email provider
    COMPLAINED = "complained"  # the person marked an email as spam
    DROPPED = "dropped"  # the email provider dropped a message for a bounce/unsubscribe/spam/invalid reason
    ERASED = "erased"  # the person's data was erased at their request


# The readable text starts with these (the wording stored before the kind had its own column).
_LABELS = {BlockReason.COMPLAINED: "spam complaint"}


class Blockable(Protocol):
    """What the block rules read and write: a `Contact`, or the importer's in-memory copy of one."""

    email_block_reason: str | None
    email_blocked: str | None
    sms_block_reason: str | None
    sms_blocked: str | None


def block_text(reason: BlockReason, detail: str = "") -> str:
    """The readable text of a block, e.g. "suppressed: hard bounce" or "spam complaint"."""
    label = _LABELS.get(reason, reason.value)
    return (f"{label}: {detail}" if detail else label)[:200]


def blocked_reason(contact: Blockable, channel: Channel) -> BlockReason | None:
    """Why `channel` of `contact` must not be used, or None when it may be. Every writer goes through
    `set_block`, which stores the kind beside the text (migration 0003 gave older rows theirs)."""
    value = contact.email_block_reason if channel == Channel.EMAIL else contact.sms_block_reason
    return BlockReason(value) if value else None


def blocked_text(contact: Blockable, channel: Channel) -> str | None:
    """The readable text of the block on `channel` (what staff see), or None."""
    return contact.email_blocked if channel == Channel.EMAIL else contact.sms_blocked


def is_blocked(contact: Blockable, channel: Channel) -> bool:
    return blocked_reason(contact, channel) is not None


def is_opted_out(contact: Blockable, channel: Channel) -> bool:
    """The person withdrew consent on `channel` (and nothing stronger blocks it)."""
    return blocked_reason(contact, channel) == BlockReason.OPTED_OUT


def consent_can_lift(contact: Blockable, channel: Channel) -> bool:
    """Fresh consent would make `channel` usable again: it is not blocked, or only by an opt-out."""
    return blocked_reason(contact, channel) in (None, BlockReason.OPTED_OUT)


def _write(target: Blockable, channel: Channel, reason: BlockReason | None, text: str | None) -> None:
    if channel == Channel.EMAIL:
        target.email_block_reason, target.email_blocked = (reason.value if reason else None), text
    else:
        target.sms_block_reason, target.sms_blocked = (reason.value if reason else None), text


def set_block(target: Blockable, channel: Channel, reason: BlockReason, detail: str = "") -> bool:
    """Block `channel` in memory unless a block that wins is already there (see the module
    docstring). Returns whether anything changed."""
    current = blocked_reason(target, channel)
    replaces = (current is None
                or (current == BlockReason.OPTED_OUT and reason != BlockReason.OPTED_OUT)
                or (reason == BlockReason.ERASED and current != BlockReason.ERASED))
    if not replaces:
        return False
    _write(target, channel, reason, block_text(reason, detail))
    return True


def clear_block(target: Blockable, channel: Channel) -> BlockReason | None:
    """Lift the block on `channel` in memory; returns the reason it had (None: was not blocked)."""
    previous = blocked_reason(target, channel)
    if previous is not None:
        _write(target, channel, None, None)
    return previous


def block_rows(contact_id: int | None, channel: Channel, reason: BlockReason, detail: str, now: datetime,
               actor: str) -> list[Row]:
    """The timeline row of a block that `set_block` applied."""
    return [event_row(EventKind.CHANNEL_BLOCKED, now, contact_id, channel=str(channel), reason=str(reason),
                      detail=detail[:200], actor=actor)]


def unblock_rows(contact_id: int | None, channel: Channel, previous: BlockReason, now: datetime,
                 actor: str) -> list[Row]:
    """The timeline row of a block that `clear_block` lifted."""
    return [event_row(EventKind.CHANNEL_UNBLOCKED, now, contact_id, channel=str(channel), reason=str(previous), actor=actor)]


def block_channel(session: Session, contact: Contact, channel: Channel, reason: BlockReason, detail: str,
                  now: datetime, actor: str) -> bool:
    """Stop using `channel` for the contact, with an event `channel_blocked`. A block that wins
    (see the module docstring) stays as it is; returns whether the block changed."""
    if not set_block(contact, channel, reason, detail):
        return False
    add_rows(session, block_rows(contact.id, channel, reason, detail, now, actor))
    return True


def unblock_channel(session: Session, contact: Contact, channel: Channel, now: datetime, actor: str, *,
                    only: BlockReason | None = None) -> bool:
    """Lift the block on `channel` (only if it is of kind `only`, when given), with an event
    `channel_unblocked`. Returns whether a block was lifted."""
    if only is not None and blocked_reason(contact, channel) != only:
        return False
    previous = clear_block(contact, channel)
    if previous is None:
        return False
    add_rows(session, unblock_rows(contact.id, channel, previous, now, actor))
    return True


def suppression_reason(session: Session, suppression_key: str, channel: Channel, value: str) -> str | None:
    """Why this (normalised) address is suppressed on `channel`, or None."""
    digest = address_hash(suppression_key, channel, value)
    return session.scalar(
        select(Suppression.reason).where(Suppression.channel == channel, Suppression.value_hash == digest)
    )


def suppress(session: Session, suppression_key: str, channel: Channel, value: str, reason: str, now: datetime) -> None:
    """Never contact this address on this channel again (kept as a keyed hash: survives erasure)."""
    if suppression_reason(session, suppression_key, channel, value):
        return
    session.add(Suppression(channel=channel, value_hash=address_hash(suppression_key, channel, value),
                            reason=reason[:200], created_at=now))
