"""Consent: grants and withdrawals, each recorded in the append-only ledger with its proof.

A grant always stores the wording version the person agreed to *and its exact text* from
`policy/consent_wording.yaml` (an unknown version is refused; none given means the current one,
which every staff screen shows), the method, the actor, the IP address and user agent where there
is one, and a note saying how it came (a keyword reply, an imported file...). Fresh consent lifts an
earlier opt-out, never any other block. A withdrawal stores method, actor, IP/user agent and note,
and blocks the channel as opted out.

Every entry point calls `grant_consent` / `withdraw_consent`; the bulk importer applies the same
`require_address` + `apply_grant` + `grant_rows` to its in-memory state and inserts the rows itself.
May import `models`, `content.languages`, `contacts.fields`, `contacts.records`, `contacts.blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from enum import StrEnum
from typing import Protocol

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.blocks import (BlockReason, Blockable, block_channel, blocked_reason, clear_block,
                                          consent_can_lift, is_blocked, unblock_rows)
from patient_drip.contacts.fields import FieldError
from patient_drip.content.languages import DEFAULT_LANGUAGE
from patient_drip.contacts.records import ConsentRow, Row, add_rows, audit_row, event_row
from patient_drip.models import Channel, ConsentAction, ConsentMethod, ConsentRecord, Contact, EventKind

WORDING_FILE = "consent_wording.yaml"


@dataclass(frozen=True, slots=True)
class Wording:
    """One published consent wording: its version id and the exact text shown."""

    version: str
    text: str


class UnknownWording(FieldError):
    """A consent wording version that `policy/consent_wording.yaml` does not publish."""

    def __init__(self, channel: Channel, version: str, known: list[str]) -> None:
        super().__init__("wording_version", f"{version!r} is not a published {channel} consent wording in "
                                            f"policy/{WORDING_FILE} (published: {', '.join(known) or 'none'})")


@dataclass(frozen=True)
class ConsentWording:
    """Every published consent wording per channel, and which one forms show now: `current` in
    English, `current_in[language]` in each other language (its own version ids, e.g. `sms-es-v1`)."""

    current: dict[Channel, str]
    versions: dict[Channel, dict[str, str]]
    current_in: dict[str, dict[Channel, str]] = field(default_factory=dict)

    def current_version(self, channel: Channel, language: str = DEFAULT_LANGUAGE) -> str:
        """The version forms in `language` show now (English where the language has none)."""
        return self.current_in.get(language, {}).get(channel) or self.current[channel]

    def wording(self, channel: Channel, version: str | None = None, language: str = DEFAULT_LANGUAGE) -> Wording:
        """The wording `version` of `channel` (default: the current one in `language`). Raises
        `UnknownWording`. Any published version is found, whatever its language."""
        chosen = version or self.current_version(channel, language)
        text = self.versions[channel].get(chosen)
        if text is None:
            raise UnknownWording(channel, chosen, sorted(self.versions[channel]))
        return Wording(chosen, text)

    def shown(self, language: str = DEFAULT_LANGUAGE) -> dict[str, tuple[str, str]]:
        """The current (version, text) per channel name in `language`, as the forms show them."""
        return {channel.value: (self.current_version(channel, language),
                                self.versions[channel][self.current_version(channel, language)])
                for channel in (Channel.EMAIL, Channel.SMS)}


@lru_cache(maxsize=4)
def load_wording(policy_dir: Path) -> ConsentWording:
    """Read `policy_dir/consent_wording.yaml` (whitespace in each text folded to single spaces)."""
    data = yaml.safe_load((policy_dir / WORDING_FILE).read_text(encoding="utf-8"))
    current: dict[Channel, str] = {}
    versions: dict[Channel, dict[str, str]] = {}
    current_in: dict[str, dict[Channel, str]] = {}
    for channel in (Channel.EMAIL, Channel.SMS):
        versions[channel] = {str(v): " ".join(str(text).split()) for v, text in data[channel]["versions"].items()}
        current[channel] = str(data[channel]["current"])
        for language, version in (data[channel].get("current_in") or {}).items():
            current_in.setdefault(str(language), {})[channel] = str(version)
        for version in (current[channel], *(by[channel] for by in current_in.values() if channel in by)):
            if version not in versions[channel]:
                raise UnknownWording(channel, version, sorted(versions[channel]))
    return ConsentWording(current, versions, current_in)


def consent_wording(policy_dir: Path, language: str = DEFAULT_LANGUAGE) -> dict[str, tuple[str, str]]:
    """The current (version, text) of the consent wording per channel name in `language` (what forms show)."""
    return load_wording(policy_dir).shown(language)


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """What an entry point knows about a grant; the wording text is always looked up, never given."""

    channel: Channel
    method: ConsentMethod
    wording_version: str | None = None  # None: the current wording (what staff screens show)
    ip_address: str | None = None
    user_agent: str | None = None
    note: str = ""


class Consentable(Blockable, Protocol):
    """What the consent rules read and write: a `Contact`, or the importer's copy of one."""

    email: str | None
    phone: str | None
    email_consent: bool
    sms_consent: bool


def require_address(contact: Consentable, channel: Channel) -> None:
    """Consent to a channel needs the address to use it: raises `FieldError` (email / phone) otherwise."""
    if channel == Channel.EMAIL and not contact.email:
        raise FieldError("email", "consent to emails needs an email address")
    if channel == Channel.SMS and not contact.phone:
        raise FieldError("phone", "consent to text messages needs a mobile number")


def apply_grant(contact: Consentable, channel: Channel) -> BlockReason | None:
    """Consent on `channel` in memory: the flag goes on and an opt-out is lifted (no other block).
    Returns the block lifted, if any."""
    if channel == Channel.EMAIL:
        contact.email_consent = True
    else:
        contact.sms_consent = True
    if blocked_reason(contact, channel) == BlockReason.OPTED_OUT:
        return clear_block(contact, channel)
    return None


def grant_rows(contact_id: int | None, grant: ConsentGrant, wording: Wording, lifted: BlockReason | None,
               now: datetime, actor: str) -> list[Row]:
    """The ledger, timeline and audit rows of one grant, in the order they are written."""
    rows: list[Row] = [
        ConsentRow(contact_id, str(grant.channel), str(ConsentAction.GRANTED), str(grant.method), wording.version,
                   wording.text, grant.ip_address, (grant.user_agent or "")[:400] or None, actor, grant.note[:400], now),
        event_row(EventKind.CONSENT_GRANTED, now, contact_id, channel=str(grant.channel), method=str(grant.method),
                  wording_version=wording.version),
        audit_row(actor, "consent_granted", now, contact_id, channel=str(grant.channel), method=str(grant.method),
                  wording_version=wording.version),
    ]
    if lifted is not None:
        rows += unblock_rows(contact_id, grant.channel, lifted, now, actor)
    return rows


def grant_consent(session: Session, wording: ConsentWording, contact: Contact, grant: ConsentGrant, now: datetime,
                  actor: str, *, shown: Wording | None = None) -> None:
    """Record consent with its proof (version and exact text from `wording`); fresh consent lifts an
    earlier opt-out. `shown` replaces the lookup only where the text was composed when it was sent
    (the double opt-in text names the clinic's SMS brand): the ledger then holds exactly what the
    person answered. Raises `UnknownWording`, or `FieldError` when the contact lacks the address."""
    shown = shown or wording.wording(grant.channel, grant.wording_version)
    require_address(contact, grant.channel)
    lifted = apply_grant(contact, grant.channel)
    contact.updated_at = now
    add_rows(session, grant_rows(contact.id, grant, shown, lifted, now, actor))


def withdraw_consent(session: Session, contact: Contact, channel: Channel, method: ConsentMethod, now: datetime,
                     actor: str, *, note: str = "", ip_address: str | None = None,
                     user_agent: str | None = None) -> bool:
    """Record the withdrawal and block the channel as opted out (a stronger block stays).
    Returns False if consent was already withdrawn (the record is written all the same)."""
    consented = contact.email_consent if channel == Channel.EMAIL else contact.sms_consent
    already = not consented and blocked_reason(contact, channel) is not None
    if channel == Channel.EMAIL:
        contact.email_consent = False
    else:
        contact.sms_consent = False
    contact.updated_at = now
    add_rows(session, [
        ConsentRow(contact.id, str(channel), str(ConsentAction.WITHDRAWN), str(method), None, None, ip_address,
                   (user_agent or "")[:400] or None, actor, note[:400], now),
        event_row(EventKind.CONSENT_WITHDRAWN, now, contact.id, channel=str(channel), method=str(method)),
        audit_row(actor, "consent_withdrawn", now, contact.id, channel=str(channel), method=str(method), note=note),
    ])
    block_channel(session, contact, channel, BlockReason.OPTED_OUT, str(method), now, actor)
    return not already


def ever_granted(session: Session, contact: Contact, channel: Channel) -> bool:
    """Whether the ledger holds a grant for `channel` (a withdrawal since does not matter): only then
    may a patient "start again" what they once agreed to; a channel never agreed to starts afresh."""
    return session.scalar(select(ConsentRecord.id).where(
        ConsentRecord.contact_id == contact.id, ConsentRecord.channel == str(channel),
        ConsentRecord.action == str(ConsentAction.GRANTED)).limit(1)) is not None


class Offer(StrEnum):
    """What a person may be offered for a channel they do not receive (the preference page)."""

    RESTART = "restart"  # consented before, then opted out: "Start … again"
    START = "start"  # never consented, email: start with the wording shown
    CONFIRM_BY_TEXT = "confirm_by_text"  # never consented, SMS: only a confirmation by text starts them


def receives(contact: Contact, channel: Channel) -> bool:
    """Whether `channel` reaches the contact now: an address, consent, no block."""
    address = contact.email if channel == Channel.EMAIL else contact.phone
    consent = contact.email_consent if channel == Channel.EMAIL else contact.sms_consent
    return bool(address) and consent and not is_blocked(contact, channel)


def consent_offer(session: Session, contact: Contact, channel: Channel) -> Offer | None:
    """What may be offered for `channel`: nothing when the person receives it, has no address for
    it, or it is blocked by more than their own opt-out (a bounce, a suppression, erasure); else
    RESTART when they consented before, START / CONFIRM_BY_TEXT when they never did (consent is
    recorded only as given: never "again" for what was never given)."""
    address = contact.email if channel == Channel.EMAIL else contact.phone
    if not address or receives(contact, channel) or not consent_can_lift(contact, channel):
        return None
    if ever_granted(session, contact, channel):
        return Offer.RESTART
    return Offer.START if channel == Channel.EMAIL else Offer.CONFIRM_BY_TEXT


class NothingToResubscribe(FieldError):
    """Staff asked to resubscribe a channel that cannot be restarted by consent (see `resubscribe`)."""

    def __init__(self, channel: Channel, why: str) -> None:
        super().__init__("channel", f"{'emails' if channel == Channel.EMAIL else 'text messages'} {why}")


def resubscribe(session: Session, wording: ConsentWording, contact: Contact, grant: ConsentGrant, now: datetime,
                actor: str) -> Wording:
    """Staff record that the person agreed again to `grant.channel` with the wording they were shown
    (`grant.wording_version`, which must be published; its exact text goes into the ledger). Only a
    channel `consent_offer` offers may be resubscribed: not one that already reaches them, has no
    address, or is blocked by more than their own opt-out (a bounce, a complaint, erasure) — fresh
    consent cannot lift those. Raises `NothingToResubscribe` or `UnknownWording`; returns the wording."""
    if receives(contact, grant.channel):
        raise NothingToResubscribe(grant.channel, "already reach this person")
    address = contact.email if grant.channel == Channel.EMAIL else contact.phone
    if not address:
        raise NothingToResubscribe(grant.channel, "need an address on file first (edit the contact)")
    if not consent_can_lift(contact, grant.channel):
        raise NothingToResubscribe(grant.channel, f"are blocked ({blocked_reason(contact, grant.channel)}); "
                                                  "consent cannot lift that block")
    shown = wording.wording(grant.channel, grant.wording_version)
    grant_consent(session, wording, contact, grant, now, actor)
    return shown
