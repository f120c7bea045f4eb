"""No placeholders in production: what real patients would get from a half-configured install.

With real providers (`DRIP_DELIVERY=providers` and no sandbox base URL), every message carries
the public URL (links, the one-click unsubscribe that Gmail and Yahoo require over https), the
clinic's name, postal address (CAN-SPAM) and phone, and the booking URL. The shipped defaults and
the usual stand-ins ("Example …", "123 Main St", 555-01xx numbers, example.com, a loopback or
private address) would reach patients as they are, so `placeholder_problems` lists each one,
naming its variable; `runtime.require_ready_to_send` refuses to start with any of them.

Sandbox runs (both provider base URLs set, as `drip sandbox` prints) and the outbox keep the
defaults: they send to nobody.
"""

from __future__ import annotations

import ipaddress
import re
from email.utils import parseaddr
from urllib.parse import urlsplit

from patient_drip.settings import Settings

# The shipped defaults (settings.py), which look real enough to slip through.
_DEFAULTS = {name: Settings.model_fields[name].default for name in ("clinic_name", "clinic_address", "clinic_phone")}
# Words that only a stand-in value contains.
_PLACEHOLDER_WORDS = re.compile(
    r"\b(?:example|sample|placeholder|lorem|ipsum|changeme|change[ -]me|todo|tbd|xxx+|your (?:clinic|address|"
    r"phone|name)|acme|anytown|foo|test clinic)\b", re.I)
_MAIN_STREET = re.compile(r"\b123\s+Main\b", re.I)
# RFC 2606 / RFC 6761 names that never reach anyone.
_RESERVED_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|net|org)|example|test|invalid|localhost|local)$", re.I)


def is_live(settings: Settings) -> bool:
    """Whether messages would reach real people: real providers, and not both pointed at a sandbox."""
    return settings.delivery == "providers" and not (settings.twilio_base_url and settings.sendgrid_base_url)


def _private_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost") or _RESERVED_DOMAIN.search(host):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare name ("intranet") resolves only inside some network
    return not address.is_global


def _url_problem(variable: str, url: str, *, purpose: str) -> str | None:
    if not url:
        return f"{variable}: missing; set the https:// address {purpose}"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return (f"{variable}: {url!r} is not https; links in messages (and one-click unsubscribe) need an "
                f"https:// address {purpose}")
    if _private_host(parts.hostname or ""):
        return f"{variable}: {url!r} points at a local, private or reserved host; use a public address {purpose}"
    return None


def _text_problem(variable: str, field: str, value: str, what: str) -> str | None:
    if not value.strip():
        return f"{variable}: missing; set the clinic's real {what}"
    if value == _DEFAULTS[field]:
        return f"{variable}: still the shipped example value {value!r}; set the clinic's real {what}"
    if _PLACEHOLDER_WORDS.search(value) or _MAIN_STREET.search(value):
        return f"{variable}: {value!r} looks like a placeholder; set the clinic's real {what}"
    return None


def _phone_problem(value: str) -> str | None:
    if problem := _text_problem("DRIP_CLINIC_PHONE", "clinic_phone", value, "phone number"):
        return problem
    digits = re.sub(r"\D", "", value)
    national = digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
    # 555-0100 to 555-0199 are reserved for fiction in the North American plan (any area code).
    if len(national) == 10 and national[3:6] == "555" and national[6:8] == "01":
        return f"DRIP_CLINIC_PHONE: {value!r} is a fictional 555-01xx number; set the clinic's real phone number"
    if len(digits) < 7:
        return f"DRIP_CLINIC_PHONE: {value!r} is not a phone number patients can call"
    return None


def placeholder_problems(settings: Settings) -> list[str]:
    """Each setting that would reach patients as a placeholder, as "VARIABLE: what is wrong".

    Checked: `DRIP_PUBLIC_URL` and `DRIP_BOOKING_URL` (https, public host), `DRIP_CLINIC_NAME`,
    `DRIP_CLINIC_ADDRESS`, `DRIP_CLINIC_PHONE` (present, not the shipped default, no stand-in
    words, no fictional 555-01xx number) and the domain of `DRIP_FROM_EMAIL`. Meant for live runs
    (`is_live`); it says nothing about whether the values are the clinic's own."""
    problems = [
        _url_problem("DRIP_PUBLIC_URL", settings.public_url, purpose="for this service"),
        _url_problem("DRIP_BOOKING_URL", settings.booking_url, purpose="for the clinic's booking page"),
        _text_problem("DRIP_CLINIC_NAME", "clinic_name", settings.clinic_name, "name"),
        _text_problem("DRIP_CLINIC_ADDRESS", "clinic_address", settings.clinic_address,
                      "postal address (CAN-SPAM requires it in every email)"),
        _phone_problem(settings.clinic_phone),
    ]
    domain = parseaddr(settings.from_email)[1].rpartition("@")[2]
    if domain and _private_host(domain):
        problems.append(f"DRIP_FROM_EMAIL: {domain!r} is a reserved or local domain; send from the clinic's own domain")
    return [problem for problem in problems if problem]
