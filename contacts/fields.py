"""Parse and normalise what people type: phone numbers, email addresses, names, time zones.

Every error is a `FieldError` naming the field, so the form, the CLI and the importer can all say
which input is wrong and why.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezone

DEFAULT_REGION = "US"
MAX_NAME = 100


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def normalize_phone(raw: str, region: str = DEFAULT_REGION, field: str = "phone") -> str:
    """E.164 (`+15551234567`) or `FieldError`. National numbers are read as `region` numbers."""
    text = raw.strip()
    if len(text) > 40:
        raise FieldError(field, "is too long to be a phone number")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise FieldError(field, f"{text!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError(field, f"{text!r} is not a valid phone number (include the area code)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str, field: str = "email") -> str:
    """Normalised address (domain lower-cased, local part as typed but compared lower-case)."""
    text = raw.strip()
    if len(text) > 320:
        raise FieldError(field, "is too long to be an email address")
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


_ZONE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
MAX_ZONE = 64


def check_timezone(raw: str, field: str = "timezone") -> str:
    """An IANA zone name (`America/Chicago`) or `FieldError`.

    Zone names are file paths inside the tz database: a folder name ("America"), a very long
    name or one with odd characters makes `ZoneInfo` raise OSError rather than "not found", so
    only the IANA name syntax reaches it."""
    text = raw.strip()
    if text in _zones():
        return text
    shown = text if len(text) <= MAX_ZONE else text[:MAX_ZONE] + "…"
    problem = FieldError(field, f"{shown!r} is not an IANA time zone such as America/New_York")
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


def timezone_for_phone(e164: str, fallback: str) -> str:
    """The phone number's zone when it has exactly one (or one that is the clinic's); else `fallback`."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return fallback
    zones = [zone for zone in phone_timezone.time_zones_for_number(number) if zone in _zones()]
    if len(zones) == 1:
        return zones[0]
    if fallback in zones or not zones:
        return fallback
    return zones[0]


def resolve_timezone(explicit: str | None, phone: str | None, clinic_timezone: str) -> str:
    """Explicit zone, else the phone number's, else the clinic's (SPEC decision 6)."""
    if explicit and explicit.strip():
        return check_timezone(explicit)
    if phone:
        return timezone_for_phone(phone, clinic_timezone)
    return clinic_timezone


def address_hash(secret: str, channel: str, value: str) -> str:
    """Keyed hash of a normalised address, for suppression that outlives erasure.

    Keyed (HMAC) because phone numbers are few enough to brute-force a plain hash."""
    return hmac.new(secret.encode(), f"{channel}:{value}".encode(), hashlib.sha256).hexdigest()
