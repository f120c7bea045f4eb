"""Parse and normalise what people type: phone numbers, email addresses, names, time zones; and
the one rule that decides a contact's time zone (`resolve_timezone`).

Every error is a `FieldError` naming the field, so the form, the CLI and the importer can all say
which input is wrong and why.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from patient_drip.content.languages import LANGUAGE_NAMES, LANGUAGES
from patient_drip.content.names import name_problem

DEFAULT_REGION = "US"
E164_MAX_LENGTH = 16  # "+" and at most 15 digits (ITU-T E.164)
MAX_NAME = 100


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class ParsedPhone:
    """A valid phone number: its E.164 form and what was learnt parsing it (`parse_phone`)."""

    e164: str
    number: phonenumbers.PhoneNumber
    kind: int  # phonenumbers.PhoneNumberType, never UNKNOWN

    def zones(self) -> list[str]:
        """`phone_zones(self.e164)`, without parsing the number again or asking its type twice."""
        if phonenumbers.is_number_type_geographical(self.kind, self.number.country_code):
            found = phone_timezone.time_zones_for_geographical_number(self.number)
        else:  # country-level zones (non-geographic numbers): rare, the library decides
            found = phone_timezone.time_zones_for_number(self.number)
        return [zone for zone in found if zone in _zones()]


def parse_phone(raw: str, region: str = DEFAULT_REGION, field: str = "phone") -> ParsedPhone:
    """The number `raw` (national numbers read as `region` numbers), or `FieldError`.

    A number is valid when phonenumbers gives it a type: `number_type(n) != UNKNOWN` is exactly
    `is_valid_number(n)` (both match the national number against the patterns of the region
    `region_code_for_number` picks), and the type is what the time zones need next, so the
    pattern matching — most of the cost of an import row — runs once instead of four times."""
    text = raw.strip()
    if len(text) > 40:
        raise FieldError(field, "is too long to be a phone number")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise FieldError(field, f"{text!r} is not a phone number") from None
    kind = phonenumbers.number_type(number)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        raise FieldError(field, f"{text!r} is not a valid phone number (include the area code)")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # phonenumbers accepts some national patterns longer than E.164 allows (a German fixed line of
    # 14 national digits gives 16): no carrier routes those, and the column holds E.164.
    if len(e164) > E164_MAX_LENGTH:
        raise FieldError(field, f"{text!r} has more digits than an international number can have (15)")
    return ParsedPhone(e164, number, kind)


def normalize_phone(raw: str, region: str = DEFAULT_REGION, field: str = "phone") -> str:
    """E.164 (`+15551234567`) or `FieldError`. National numbers are read as `region` numbers."""
    return parse_phone(raw, region, field).e164


# An address this plain is valid exactly when its domain is (email-validator checks the local part
# and the domain separately, then the length): the domain's verdict is remembered, so a file of
# thousands of addresses at a few hundred domains runs the library's IDNA checks once per domain.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_PLAIN_MAX = 200  # well inside the 254-octet limit on the whole address, and 64 on the local part


@lru_cache(maxsize=4096)
def _plain_domain(domain: str) -> str | None:
    """The normalised `domain` when an address at it with a plain local part is valid, else None."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def normalize_email(raw: str, field: str = "email") -> str:
    """Normalised address (domain lower-cased, local part as typed but compared lower-case)."""
    text = raw.strip()
    if len(text) > 320:
        raise FieldError(field, "is too long to be an email address")
    local, _, domain = text.rpartition("@")
    if (len(text) <= _PLAIN_MAX and len(local) <= 64 and _PLAIN_LOCAL.fullmatch(local)
            and _PLAIN_DOMAIN.fullmatch(domain)):
        normal = _plain_domain(domain)
        if normal is not None:
            return f"{local}@{normal}".lower()
    # Anything else (quoted, Unicode, display name, refused domain...) the library judges in full,
    # with its own error message.
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise FieldError(field, str(exc)) from None
    return result.normalized.lower()


# Right-to-left overrides and isolates: in a name they only serve to make text display in an
# order other than it is stored ("Trojan Source" spoofing in the staff UI and in messages).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def normalize_name(raw: str | None, field: str) -> str:
    """Whitespace folded; `FieldError` for more than `MAX_NAME` characters, control characters
    (NUL and friends: PostgreSQL cannot store NUL), lone surrogates (not encodable as UTF-8, so
    no database can store them) and bidirectional overrides."""
    text = " ".join((raw or "").split())
    if len(text) > MAX_NAME:
        raise FieldError(field, f"is longer than {MAX_NAME} characters")
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise FieldError(field, "contains control characters")
        if category == "Cs":
            raise FieldError(field, "contains characters that are not valid text (broken encoding?)")
        if ch in _BIDI_CONTROLS:
            raise FieldError(field, "contains invisible text-direction characters")
    return text


def check_first_name(raw: str | None, field: str = "first_name") -> str:
    """A first name as typed on the public form, refused with a `FieldError` saying why unless it
    is a name (`content.names.name_problem`: letters, spaces, hyphens and apostrophes, at most 40
    characters and 5 words; no link, digits or markup). Names are data, not message content."""
    text = normalize_name(raw, field)
    problem = name_problem(text)
    if problem is not None:
        raise FieldError(field, problem)
    return text


PREFERRED_CHANNELS = ("email", "sms", "phone")


def check_preferred_channel(raw: str | None, field: str = "preferred_channel") -> str:
    """How the person wants to be contacted: "email", "sms", "phone" or "" (no preference);
    `FieldError` otherwise. (`contacts.changes.parse_contact_input` applies the same values.)"""
    value = (raw or "").strip().lower()
    if value and value not in PREFERRED_CHANNELS:
        raise FieldError(field, "must be email, sms or phone")
    return value


# What the person said they would like to learn about (the form's optional question): it picks the
# variant of the condition email. "" = not said.
INTERESTS = ("depression", "bipolar", "unsure")
# Words staff files and people use for each language and interest, folded (lower case, no accents).
_LANGUAGE_WORDS = {"en": "en", "eng": "en", "english": "en", "ingles": "en", "es": "es", "spa": "es",
                   "spanish": "es", "espanol": "es", "castellano": "es"}
_INTEREST_WORDS = {"depression": "depression", "depresion": "depression", "mdd": "depression",
                   "bipolar": "bipolar", "bipolar disorder": "bipolar", "trastorno bipolar": "bipolar",
                   "unsure": "unsure", "not sure": "unsure", "no estoy seguro": "unsure",
                   "no estoy segura": "unsure", "no se": "unsure"}


def _folded(raw: str | None) -> str:
    """Lower case, accents removed, inner spaces single: "Español" → "espanol"."""
    text = unicodedata.normalize("NFKD", (raw or "").strip().casefold())
    return " ".join("".join(ch for ch in text if not unicodedata.combining(ch)).replace("_", " ").split())


def check_language(raw: str | None, field: str = "language") -> str:
    """A language code from `content.languages.LANGUAGES` ("en", "es"), read from a code, a tag
    such as "es-MX", or a name ("Spanish", "Español"); "" when nothing was given; `FieldError` otherwise."""
    value = _folded(raw)
    if not value:
        return ""
    code = _LANGUAGE_WORDS.get(value) or _LANGUAGE_WORDS.get(value.replace("-", " ").split(" ")[0])
    if code not in LANGUAGES:
        names = ", ".join(f"{code} ({LANGUAGE_NAMES[code]})" for code in LANGUAGES)
        raise FieldError(field, f"{_quoted(raw or '')} is not a language we write in; use {names}")
    return code


def check_interest(raw: str | None, field: str = "interest") -> str:
    """What the person wants to learn about: one of `INTERESTS` (also read from the form's words in
    English or Spanish), or "" when nothing was given; `FieldError` otherwise."""
    value = _folded(raw)
    if not value:
        return ""
    interest = _INTEREST_WORDS.get(value)
    if interest is None:
        raise FieldError(field, f"{_quoted(raw or '')} is not an interest we know; use {', '.join(INTERESTS)} "
                                "(or leave it empty)")
    return interest


_ZONE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
MAX_ZONE = 64


def _quoted(text: str, limit: int = 40) -> str:
    """`text` quoted for an error message, at most `limit` characters of it and a bounded repr
    (escapes such as `\\U0010ffff` would otherwise make 40 characters 400)."""
    shown = repr(text[:limit] + ("…" if len(text) > limit else ""))
    return shown if len(shown) <= 2 * limit else shown[: 2 * limit] + "…'"


def check_timezone(raw: str, field: str = "timezone") -> str:
    """An IANA zone name (`America/Chicago`) or `FieldError` (quoting at most 40 characters of `raw`).

    Zone names are file paths inside the tz database: a folder name ("America"), a very long
    name or one with odd characters makes `ZoneInfo` raise OSError rather than "not found", so
    only the IANA name syntax reaches it."""
    text = raw.strip()
    if text in _zones():
        return text
    problem = FieldError(field, f"{_quoted(text)} is not an IANA time zone such as America/New_York")
    if len(text) > MAX_ZONE or not _ZONE_KEY.fullmatch(text):
        raise problem
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise problem from None
    return text


_ZONES: set[str] | None = None


def _zones() -> set[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = available_timezones()
    return _ZONES


@lru_cache(maxsize=1)
def _zone_links() -> dict[str, str]:
    """Link name → canonical zone (`Asia/Calcutta` → `Asia/Kolkata`, `US/Central` →
    `America/Chicago`), read from the tz database's `tzdata.zi`; empty when it is not there."""
    for folder in TZPATH:
        source = Path(folder) / "tzdata.zi"
        if source.is_file():
            links = {}
            for line in source.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "L":
                    links[parts[2]] = parts[1]
            return links
    return {}


def canonical_zone(zone: str) -> str:
    """The canonical name of a zone that is a link (browsers still report `Asia/Calcutta`)."""
    return _zone_links().get(zone, zone)


def _place_zone(zone: str) -> bool:
    """A zone that names a place: not UTC or one of its aliases (GMT, Zulu, Universal...), not a
    fixed offset (Etc/GMT+5), not a rule-only zone such as EST5EDT."""
    canonical = canonical_zone(zone)
    return "/" in canonical and not canonical.startswith("Etc/")


def phone_zones(e164: str) -> list[str]:
    """The zones phonenumbers gives for the number (several for a mobile or non-geographic number
    in a country with several zones; none for a number it cannot place)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return []
    return [zone for zone in phone_timezone.time_zones_for_number(number) if zone in _zones()]


def _country_zones(e164: str) -> set[str]:
    """Canonical zones of the number's country calling code (every zone phonenumbers knows for it)."""
    try:
        code = str(phonenumbers.parse(e164, None).country_code)
    except phonenumbers.NumberParseException:
        return set()
    return {canonical_zone(zone) for zone in TIMEZONE_DATA.get(code) or () if zone in _zones()}


class ZoneSource(StrEnum):
    """Where a time zone given with a contact came from, which decides how far it is trusted."""

    STAFF = "staff"  # typed or chosen by staff: the CLI, the admin UI, the API, an import column
    BROWSER = "browser"  # reported by the patient's browser on the public form


def resolve_timezone(given: str | None, source: ZoneSource, phone: str | ParsedPhone | None,
                     clinic_timezone: str) -> str:
    """The contact's time zone, first that applies (SPEC decision 6):

    1. a zone `given` by staff (`source` STAFF), whatever it is;
    2. the phone number's zone, when phonenumbers names exactly one, or the clinic zone when it is
       among several (an area code spanning two zones);
    3. a zone the browser reported (`source` BROWSER), only when it names a place (not UTC, GMT,
       Etc/*) and, when there is a phone number, is one of the zones of the number's country
       (a browser set to UTC or a travelling laptop must not move a Chicago patient's window);
    4. the clinic's zone.

    `phone` is the E.164 number, or the `ParsedPhone` the caller already has (not parsed again).
    Raises `FieldError` when `given` is not an IANA zone, from either source."""
    zone = check_timezone(given) if given and given.strip() else None
    if zone is not None and source is ZoneSource.STAFF:
        return zone
    if phone:
        zones = phone.zones() if isinstance(phone, ParsedPhone) else phone_zones(phone)
        if len(zones) == 1:
            return zones[0]
        if clinic_timezone in zones:
            return clinic_timezone
    e164 = phone.e164 if isinstance(phone, ParsedPhone) else phone
    if zone is not None and _place_zone(zone) and (not e164 or canonical_zone(zone) in _country_zones(e164)):
        return zone
    return clinic_timezone


def address_hash(secret: str, channel: str, value: str) -> str:
    """Keyed hash of a normalised address, for suppression that outlives erasure.

    Keyed (HMAC) because phone numbers are few enough to brute-force a plain hash."""
    mac = _keyed(secret).copy()
    mac.update(f"{channel}:{value}".encode())
    return mac.hexdigest()


@lru_cache(maxsize=4)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 with the key already absorbed: a copy of it hashes one more address in less
    than half the time of a fresh `hmac.new` (an import hashes every address of every row)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)
