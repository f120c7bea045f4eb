"""The import's cheaper parsing gives exactly what the libraries give when asked the long way:
an email address's verdict remembered per domain, a phone number parsed once with its type asked
once. Each property compares with the library called as `fields` called it before the shortcut."""

from __future__ import annotations

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from phonenumbers import timezone as phone_timezone

from patient_drip.contacts.fields import (
    FieldError,
    ZoneSource,
    normalize_email,
    parse_phone,
    phone_zones,
    resolve_timezone,
)

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _library_email(raw: str) -> str | tuple[str, str]:
    """The address as email-validator normalises it, or (field, message) as FieldError carries it
    (`normalize_email` refused anything over 320 characters before asking the library, as before)."""
    if len(raw.strip()) > 320:
        return ("email", "is too long to be an email address")
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return ("email", str(exc))


def _ours_email(raw: str) -> str | tuple[str, str]:
    try:
        return normalize_email(raw)
    except FieldError as exc:
        return (exc.field, exc.message)


_label = st.from_regex(r"[A-Za-z0-9-]{1,70}", fullmatch=True)
_domain = st.one_of(
    st.lists(_label, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["example.com", "EXAMPLE.COM", "gmail.com", "localhost", "mail.local", "x.test", "a.invalid",
                     "xn--bcher-kva.com", "xn--zz.com", "ab--cd.com", "-start.com", "end-.com", "123.456",
                     "x.onion", "com", "a.b", "a.b.c.d.e.f", ("d" * 63) + ".com", ("d" * 64) + ".com",
                     ".".join(["abcdefghij"] * 25)]),
)
_local = st.one_of(
    st.from_regex(r"[A-Za-z0-9_+.-]{1,70}", fullmatch=True),
    st.sampled_from(["a", "postmaster", "Abuse", "first.last", ".lead", "trail.", "two..dots", "x" * 64, "x" * 65,
                     '"quoted"', "ünï", "a b"]),
)
addresses = st.one_of(st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain), st.text(max_size=60))


@PROPERTY
@given(addresses)
@example("person1@example1.com")
@example("  Person.Name+tag@Example.COM ")
@example("x@xn--bcher-kva.com")
@example("a@b@example.com")
@example("@example.com")
@example("me@localhost")
@example(("l" * 64) + "@" + ".".join(["abcdefghij"] * 13) + ".com")
@example("a@" + ".".join(["abcdefghij"] * 40) + ".com")  # over 320 characters
def test_email_shortcut_gives_the_librarys_answer(raw):
    assert _ours_email(raw) == _library_email(raw)


REGIONS = ["US", "CA", "GB", "DE", "IN", "BR", "AU", "MX", "FR", "JP", "RU"]
numbers = st.one_of(
    st.from_regex(r"\+?1?[ (.-]{0,2}[0-9]{3}[ ).-]{0,2}[0-9]{3}[ .-]?[0-9]{4}( ?(x|ext\.?) ?[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"\+[0-9]{1,3} ?[0-9 ]{4,16}", fullmatch=True),
    st.from_regex(r"0[0-9]{6,12}", fullmatch=True),
    st.text(alphabet="0123456789+-() .x", max_size=25),
)


def _library_phone(raw: str, region: str) -> tuple[str, list[str]] | str:
    """(E.164, the zones `phone_zones` gives it) as before the shortcut, or the error kind."""
    text = raw.strip()
    if len(text) > 40:
        return "long"
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return "unparsable"
    if not phonenumbers.is_valid_number(number):
        return "invalid"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phone_zones(e164)


def _ours_phone(raw: str, region: str) -> tuple[str, list[str]] | str:
    try:
        parsed = parse_phone(raw, region)
    except FieldError as exc:
        return ("long" if "too long" in exc.message else
                "invalid" if "not a valid" in exc.message else "unparsable")
    return parsed.e164, parsed.zones()


@PROPERTY
@given(numbers, st.sampled_from(REGIONS))
@example("+13125550101", "US")
@example("(312) 555-0101 ext 7", "US")
@example("+1 208 320 1234", "US")  # Idaho: an area code in two zones
@example("+7 912 345 6789", "RU")  # a mobile in a country of many zones
@example("+1 800 555 0199", "US")  # toll free: not geographical, zones for the country
@example("+44 7911 123456", "GB")  # a mobile outside the geographic-mobile countries
@example("+91 98765 43210", "IN")
@example("+870 301 234 567", "US")  # a non-geographic entity (region 001)
@example("+1 268 464 1234", "US")  # Antigua: found by leading digits under +1
def test_phone_parsed_once_gives_the_librarys_answer(raw, region):
    assert _ours_phone(raw, region) == _library_phone(raw, region)


@pytest.mark.parametrize("raw", ["+13125550101", "+1 208 320 1234", "+7 912 345 6789", "+1 800 555 0199", "+44 7911 123456", "+61 2 9374 4000",
                                 "+1 268 464 1234", "+80012345678", "+870301234567"])
def test_a_parsed_phone_resolves_the_zone_its_e164_form_resolves(raw):
    parsed = parse_phone(raw)
    for given, source in ((None, ZoneSource.STAFF), ("Europe/London", ZoneSource.BROWSER), ("UTC", ZoneSource.BROWSER)):
        assert (resolve_timezone(given, source, parsed, "America/Chicago")
                == resolve_timezone(given, source, parsed.e164, "America/Chicago"))
    assert parsed.zones() == [zone for zone in phone_timezone.time_zones_for_number(parsed.number)
                              if zone in phone_zones(parsed.e164)]
