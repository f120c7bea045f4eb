"""The public intake's protection against SMS pumping: which numbers may be texted at all, and how
many texts to unconfirmed numbers the public form may cause.

SMS pumping ("toll fraud") is a form that texts any number typed into it: an attacker types
premium-rate or foreign numbers they are paid for, from many addresses, and the clinic pays for
every text. Three defences, each one function here that every entry point calls:

- `check_number_for_texts`: a number must be of a kind a person texts (mobile, fixed-or-mobile,
  VoIP) in a country the clinic serves (`DRIP_SMS_COUNTRIES`); premium-rate, shared-cost, UAN,
  personal, pager, voicemail, toll-free and unknown numbers are refused with a field error.
- `admit_consultation` / `allow_unconfirmed_text`: limits shared by every process through the
  `rate_bucket` table — successful form requests per client address (`DRIP_INTAKE_FORM_LIMIT`),
  and texts to an unconfirmed number per number, per network (IPv4 /24, IPv6 /64) and in all
  (`DRIP_INTAKE_SMS_*`). A refusal names the limit and when to try again (`Refusal`); nothing is
  counted unless every limit allows the request.
- when the global limit refuses, a system event (`intake_limit_tripped`, at most one per window)
  and an audit row, which the staff dashboard shows (`recent_alerts`).

Limits use GCRA (the "generic cell rate algorithm"): one timestamp per key, the theoretical
arrival time (TAT), so a limit of N per window W allows a burst of N and then one every W/N; it
needs no table of hits and one row per key. Keys are keyed hashes: the table never holds a phone
number or an address in clear (`drip forget` need not find them there).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import phonenumbers
from phonenumbers import PhoneNumberType
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from patient_drip.contacts.fields import FieldError, address_hash
from patient_drip.models import Event, EventKind, RateBucket, add_event, audit
from patient_drip.settings import Rate, Settings, parse_rate

log = logging.getLogger("drip.intake")

KEY_PREFIX = "intake:"
SYSTEM_ACTOR = "system:intake-limits"

# Kinds of number a person can get a text on. In the US and Canada phonenumbers cannot tell mobile
# from landline (both are FIXED_LINE_OR_MOBILE), so that type must pass.
#
# VoIP is allowed on purpose: patients use Google Voice and similar numbers, which phonenumbers
# cannot even tell apart from mobiles in North America (they are FIXED_LINE_OR_MOBILE there too),
# so refusing the VOIP type would only refuse other countries' VoIP ranges — which the country
# list already refuses — while a pumping attack is held by the limits below whatever the type.
_TEXTABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP})
_REFUSED_KIND = {
    PhoneNumberType.PREMIUM_RATE: "is a premium-rate number; we cannot text it",
    PhoneNumberType.SHARED_COST: "is a shared-cost number; we cannot text it",
    PhoneNumberType.UAN: "is a company switchboard (UAN) number; please give your own mobile number",
    PhoneNumberType.TOLL_FREE: "is a toll-free number; please give your own mobile number",
    PhoneNumberType.PERSONAL_NUMBER: "is a forwarding (personal) number; please give your own mobile number",
    PhoneNumberType.PAGER: "is a pager number; please give your own mobile number",
    PhoneNumberType.VOICEMAIL: "is a voicemail access number; please give your own mobile number",
    PhoneNumberType.FIXED_LINE: "is a landline, which cannot receive texts; please give a mobile number",
}


class Limit(StrEnum):
    """Which limit refused a request (also the `limit` of a JSON refusal)."""

    FORM = "form"  # successful form requests from one client address
    NUMBER = "number"  # texts to one unconfirmed number
    NETWORK = "network"  # texts to unconfirmed numbers from one /24 or /64
    GLOBAL = "global"  # texts to unconfirmed numbers, all together


_MESSAGES = {
    Limit.FORM: "Too many requests from your address. Please try again later, or call us.",
    Limit.NUMBER: "Too many requests for this phone number. Please try again later, or call us.",
    Limit.NETWORK: "Too many requests for text messages from your network. Please try again later, untick "
                   "text messages, or call us.",
    Limit.GLOBAL: "We are receiving an unusual number of requests for text messages. Please try again later, "
                  "untick text messages, or call us.",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the limits refuse: which limit, a message for the person, seconds until it may
    succeed (the HTTP Retry-After)."""

    limit: Limit
    message: str
    retry_after: int


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """The limits and the country list, read once from the settings; `secret` keys the hashes."""

    form: Rate
    per_number: Rate
    per_network: Rate
    overall: Rate
    countries: frozenset[str]
    secret: str

    @classmethod
    def from_settings(cls, settings: Settings, secret: str) -> IntakeLimits:
        return cls(form=parse_rate(settings.intake_form_limit), per_number=parse_rate(settings.intake_sms_per_number),
                   per_network=parse_rate(settings.intake_sms_per_network),
                   overall=parse_rate(settings.intake_sms_global), countries=settings.sms_country_codes,
                   secret=secret)

    def rate(self, limit: Limit) -> Rate:
        return {Limit.FORM: self.form, Limit.NUMBER: self.per_number, Limit.NETWORK: self.per_network,
                Limit.GLOBAL: self.overall}[limit]


# -- which numbers --------------------------------------------------------------------------------


def check_number_for_texts(e164: str, countries: frozenset[str], *, field: str = "phone",
                           landline_ok: bool = False) -> None:
    """Raise `FieldError` on `field` unless `e164` (already normalised) is a number of a kind a
    person texts, in one of `countries` (ISO codes). `landline_ok`: the number is only for calling
    back (no texts asked for), so a landline is fine; cost traps never are."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        raise FieldError(field, "is not a phone number") from None
    region = phonenumbers.region_code_for_number(number)
    kind = phonenumbers.number_type(number)
    if region is None or kind == PhoneNumberType.UNKNOWN:
        raise FieldError(field, "is not a number we can recognise as a mobile number; please check it or call us")
    if region not in countries:
        where = ", ".join(sorted(countries))
        raise FieldError(field, f"must be a number in {where}; we cannot text numbers in {region}")
    if kind in _TEXTABLE or (landline_ok and kind == PhoneNumberType.FIXED_LINE):
        return
    raise FieldError(field, _REFUSED_KIND.get(kind, "is not a number we can recognise as a mobile number; "
                                                    "please check it or call us"))


# -- where a request comes from -------------------------------------------------------------------


def network_of(ip: str) -> str:
    """The network an address belongs to for the per-network limit: its IPv4 /24 or IPv6 /64
    (an IPv4-mapped IPv6 address counts as IPv4); the text itself when it is not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _key(limits: IntakeLimits, limit: Limit, value: str) -> str:
    if limit == Limit.GLOBAL:
        return f"{KEY_PREFIX}{limit}"
    return f"{KEY_PREFIX}{limit}:{address_hash(limits.secret, str(limit), value)[:40]}"


# -- the shared buckets ---------------------------------------------------------------------------


def _lock_buckets(session: Session, keys: list[str], now: datetime) -> dict[str, RateBucket]:
    """The rows of `keys`, created when missing, locked until the transaction ends (PostgreSQL:
    FOR UPDATE, in key order so two requests never wait on each other crosswise; SQLite: the
    session's IMMEDIATE transaction already holds the database's write lock)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for _attempt in range(3):
        session.execute(insert(RateBucket).values([{"channel": key, "next_slot_at": now} for key in keys])
                        .on_conflict_do_nothing(index_elements=["channel"]))
        rows = session.scalars(select(RateBucket).where(RateBucket.channel.in_(keys)).order_by(RateBucket.channel)
                               .with_for_update().execution_options(populate_existing=True)).all()
        found = {row.channel: row for row in rows}
        if len(found) == len(keys):  # else a clean-up deleted one between our insert and our lock
            return found
    raise RuntimeError("intake rate buckets vanished three times in a row")


def _gcra(tat: datetime, rate: Rate, now: datetime) -> tuple[datetime | None, int]:
    """(the new TAT when one more is allowed, else None; seconds until it would be allowed)."""
    window = timedelta(seconds=rate.seconds)
    if rate.count == 0:
        return None, rate.seconds
    new_tat = max(tat, now) + window / rate.count
    if new_tat - now <= window:
        return new_tat, 0
    return None, max(1, math.ceil((new_tat - window - now).total_seconds()))


def _take(session: Session, limits: IntakeLimits, wanted: list[tuple[Limit, str]], now: datetime) -> Refusal | None:
    """Count one request against every (limit, value) in `wanted`, all or none: the first refusing
    limit in `wanted`'s order is named, with the longest wait among the refusing ones."""
    keys = {limit: _key(limits, limit, value) for limit, value in wanted}
    rows = _lock_buckets(session, sorted(set(keys.values())), now)
    new_tats: dict[str, datetime] = {}
    refused: list[tuple[Limit, int]] = []
    for limit, _value in wanted:
        new_tat, wait = _gcra(rows[keys[limit]].next_slot_at, limits.rate(limit), now)
        if new_tat is None:
            refused.append((limit, wait))
        else:
            new_tats[keys[limit]] = new_tat
    if refused:
        if any(limit == Limit.GLOBAL for limit, _ in refused):
            _alert_global(session, limits, now)
        limit = refused[0][0]
        return Refusal(limit, _MESSAGES[limit], max(wait for _, wait in refused))
    for key, new_tat in new_tats.items():
        rows[key].next_slot_at = new_tat
    return None


def _text_limits(phone: str, ip: str) -> list[tuple[Limit, str]]:
    return [(Limit.NUMBER, phone), (Limit.NETWORK, network_of(ip)), (Limit.GLOBAL, "")]


def allow_unconfirmed_text(session: Session, limits: IntakeLimits, *, phone: str, ip: str,
                           now: datetime) -> Refusal | None:
    """The gate for any text to a number not yet confirmed that a public request causes (today the
    first text of a sequence started by the form; with double opt-in, the "Reply YES" text).

    Counts the text against the per-number, per-network and global limits, in the caller's
    transaction (so it is undone if the caller rolls back), or counts nothing and returns the
    `Refusal`. A global refusal also writes the staff alert: commit it even when you store nothing
    else. `phone` is E.164 and must have passed `check_number_for_texts`."""
    return _take(session, limits, _text_limits(phone, ip), now)


def admit_consultation(session: Session, limits: IntakeLimits, *, ip: str, text_to: str | None,
                       now: datetime) -> Refusal | None:
    """The public form's one limit check, called with valid input just before anything is stored,
    in the transaction that stores it: counts this request against the per-address form limit
    (only requests that get this far count, so typos never use up a patient's tries) and, when it
    will cause a text to the unconfirmed number `text_to`, against the text limits — all or none.
    On a `Refusal` store nothing else, but commit (a global refusal writes the staff alert)."""
    wanted = [(Limit.FORM, ip)] + (_text_limits(text_to, ip) if text_to else [])
    return _take(session, limits, wanted, now)


def forget_expired(session: Session, now: datetime) -> int:
    """Delete intake buckets whose limits have fully recovered (a row whose TAT is in the past
    limits exactly as no row does); returns how many. Run on its own in a short transaction (the
    scheduler's housekeeping), so the table stays as small as the last window's traffic. Rows a
    request holds locked right now are skipped (PostgreSQL SKIP LOCKED), so this never waits on,
    or deadlocks with, the intake."""
    expired = (select(RateBucket.channel).where(RateBucket.channel.like(f"{KEY_PREFIX}%"),
                                                 RateBucket.next_slot_at < now)
               .with_for_update(skip_locked=True))
    result = session.execute(delete(RateBucket).where(RateBucket.channel.in_(expired)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- the staff alert ------------------------------------------------------------------------------


def _alert_global(session: Session, limits: IntakeLimits, now: datetime) -> None:
    """Record that the global limit refused a request: one event and audit row per window, not one
    per refused request (an attack would otherwise write thousands)."""
    window_start = now - timedelta(seconds=limits.overall.seconds)
    latest = session.scalar(select(Event.occurred_at).where(Event.kind == EventKind.INTAKE_LIMIT_TRIPPED,
                                                            Event.occurred_at > window_start).limit(1))
    if latest is not None:
        return
    log.warning("public form: the global limit on texts to unconfirmed numbers (%s) was reached; "
                "further requests for texts are refused (possible SMS pumping)", limits.overall)
    add_event(session, EventKind.INTAKE_LIMIT_TRIPPED, now, contact_id=None, limit=str(Limit.GLOBAL),
              rate=str(limits.overall))
    audit(session, SYSTEM_ACTOR, "intake_limit_tripped", now, limit=str(Limit.GLOBAL), rate=str(limits.overall))


@dataclass(frozen=True, slots=True)
class IntakeAlert:
    """A time the global limit refused requests, for the staff dashboard."""

    at: datetime
    rate: str


def recent_alerts(session: Session, now: datetime, within: timedelta = timedelta(days=1)) -> list[IntakeAlert]:
    """Global-limit alerts of the last `within`, newest first (index ix_event_kind_time)."""
    rows = session.execute(select(Event.occurred_at, Event.detail).where(
        Event.kind == EventKind.INTAKE_LIMIT_TRIPPED, Event.occurred_at > now - within)
        .order_by(Event.occurred_at.desc()).limit(10)).all()
    return [IntakeAlert(at, str((detail or {}).get("rate", ""))) for at, detail in rows]

