"""Settings: one class, read from the environment and `.env`, validated at start-up.

Every entry point builds one `Settings` (through `load_settings`) and passes it down; tests build
their own with keyword arguments. Nothing reads the environment anywhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
import phonenumbers
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


BOOKING_PHRASE_MAX_CHARS = 40
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit: at most `count` in any `seconds` (read from "5/10m", "10/h", "2/1d")."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count} per {_duration(self.seconds)}"


def _duration(seconds: int) -> str:
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % unit == 0:
            amount = seconds // unit
            return name if amount == 1 else f"{amount} {name}s"
    return f"{seconds} seconds"


def parse_rate(text: str) -> Rate:
    """`"<count>/<window>"` with the window in s, m, h or d ("5/10m", "10/h") → `Rate`; ValueError
    with the expected form otherwise. A count of 0 refuses everything (a kill switch)."""
    match = _RATE.fullmatch(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a limit such as 5/10m, 10/h or 2/1d (count / window in s, m, h or d)")
    count, amount, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    seconds = amount * _UNIT_SECONDS[unit]
    if not 0 < seconds <= 30 * 86400 or count > 1_000_000:
        raise ValueError(f"{text!r}: the window must be between 1 s and 30 days, the count at most 1000000")
    return Rate(count, seconds)
SMS_NAME_MAX_CHARS = 30
_URL_LIKE = re.compile(r"://|\bwww\.|\b[\w-]+\.(?:com|org|net|health|clinic|us|io)\b", re.I)
_FREE_WORD = re.compile(r"\bfree\b", re.I)


class SettingsError(Exception):
    """Configuration is wrong; the message names the variable and what to do."""


class Settings(BaseSettings):
    """Every setting the service reads. Field docs are the README's settings table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    database_url: str = Field(
        "sqlite:///./drip.db", validation_alias=_env("DRIP_DATABASE_URL", "database_url"),
        description="Any SQLAlchemy URL; PostgreSQL via postgresql+psycopg://",
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", validation_alias=_env("DRIP_PUBLIC_URL", "public_url"),
        description="Base of links in messages and of webhook URLs",
    )
    secret_key: SecretStr | None = Field(
        None, validation_alias=_env("DRIP_SECRET_KEY", "secret_key"),
        description="Master secret: staff sessions, link tokens and the suppression hash use keys derived from it; "
                    "unset: a secret generated on first run in DRIP_SECRET_KEY_FILE (never in the database)",
    )
    secret_key_file: Path | None = Field(
        None, validation_alias=_env("DRIP_SECRET_KEY_FILE", "secret_key_file"),
        description="Key file (created 0600 on first run) holding the master secret when DRIP_SECRET_KEY is unset, "
                    "and keys moved out of the database on upgrade; default: <SQLite database>.key beside the "
                    "database file; required with PostgreSQL unless DRIP_SECRET_KEY is set",
    )
    booking_url: str = Field(
        "", validation_alias=_env("DRIP_BOOKING_URL", "booking_url"),
        description="Where booking links lead (required with DRIP_DELIVERY=providers)",
    )
    delivery: Literal["outbox", "providers"] = Field(
        "outbox", validation_alias=_env("DRIP_DELIVERY", "delivery"),
        description="outbox: render and record only; providers: send through Twilio and SendGrid",
    )
    twilio_account_sid: str = Field("", validation_alias=_env("TWILIO_ACCOUNT_SID", "twilio_account_sid"))
    twilio_auth_token: SecretStr = Field(
        SecretStr(""), validation_alias=_env("TWILIO_AUTH_TOKEN", "twilio_auth_token")
    )
    twilio_messaging_service_sid: str = Field(
        "", validation_alias=_env("TWILIO_MESSAGING_SERVICE_SID", "twilio_messaging_service_sid")
    )
    twilio_from_number: str = Field("", validation_alias=_env("TWILIO_FROM_NUMBER", "twilio_from_number"))
    twilio_base_url: str = Field("", validation_alias=_env("DRIP_TWILIO_BASE_URL", "twilio_base_url"))
    sendgrid_api_key: SecretStr = Field(
        SecretStr(""), validation_alias=_env("SENDGRID_API_KEY", "sendgrid_api_key")
    )
    from_email: str = Field("", validation_alias=_env("DRIP_FROM_EMAIL", "from_email"))
    sendgrid_base_url: str = Field("", validation_alias=_env("DRIP_SENDGRID_BASE_URL", "sendgrid_base_url"))
    sendgrid_webhook_public_key: str = Field(
        "", validation_alias=_env("SENDGRID_WEBHOOK_PUBLIC_KEY", "sendgrid_webhook_public_key")
    )
    clinic_name: str = Field("Example Wellness Clinic", validation_alias=_env("DRIP_CLINIC_NAME", "clinic_name"))
    clinic_sms_name: str = Field(
        "", validation_alias=_env("DRIP_CLINIC_SMS_NAME", "clinic_sms_name"),
        description="Discreet brand used in texts, the email header and the default sender name (default: the "
                    "clinic name); required when the clinic name names a diagnosis or drug",
    )
    clinic_address: str = Field(
        "100 Main Street, Suite 200, Springfield, IL 62701",
        validation_alias=_env("DRIP_CLINIC_ADDRESS", "clinic_address"),
    )
    clinic_phone: str = Field("+1 555 010 0199", validation_alias=_env("DRIP_CLINIC_PHONE", "clinic_phone"))
    clinic_hours: str = Field(
        "Mon-Fri 9am-5pm", validation_alias=_env("DRIP_CLINIC_HOURS", "clinic_hours"),
        description="Opening hours named in the automatic answer to a patient's question",
    )
    conversation_hours: int = Field(
        24, ge=1, le=72, validation_alias=_env("DRIP_CONVERSATION_HOURS", "conversation_hours"),
        description="How long after a patient's own text a staff reply counts as conversational and may go "
                    "outside the quiet hours, in hours",
    )
    confirmation_hours: int = Field(
        48, ge=1, le=336, validation_alias=_env("DRIP_CONFIRMATION_HOURS", "confirmation_hours"),
        description="How long the emailed link that confirms a request for a known contact stays valid, in hours",
    )
    clinic_timezone: str = Field(
        "America/Chicago", validation_alias=_env("DRIP_CLINIC_TIMEZONE", "clinic_timezone"),
        description="IANA zone used when a contact has no zone and none can be derived from the phone",
    )
    consultation_free: bool = Field(
        False, validation_alias=_env("DRIP_CONSULTATION_FREE", "consultation_free"),
        description="Whether messages may call the consultation free; by default nothing is called free",
    )
    consultation_minutes: int = Field(
        15, ge=5, le=120, validation_alias=_env("DRIP_CONSULTATION_MINUTES", "consultation_minutes"),
        description="Length of the consultation the messages offer, in minutes",
    )
    booking_phrase: str = Field(
        "Book a consultation", validation_alias=_env("DRIP_BOOKING_PHRASE", "booking_phrase"),
        description="Text of the email's booking button",
    )
    campaigns_dir: Path = Field(ROOT / "campaigns", validation_alias=_env("DRIP_CAMPAIGNS_DIR", "campaigns_dir"))
    templates_dir: Path = Field(ROOT / "templates", validation_alias=_env("DRIP_TEMPLATES_DIR", "templates_dir"))
    policy_dir: Path = Field(ROOT / "policy", validation_alias=_env("DRIP_POLICY_DIR", "policy_dir"))
    booking_webhook_secret: SecretStr = Field(
        SecretStr(""), validation_alias=_env("DRIP_BOOKING_WEBHOOK_SECRET", "booking_webhook_secret"),
        description="Shared secret for HMAC-SHA256 signatures on POST /webhooks/booking",
    )
    booking_provider: Literal["generic", "calendly", "calcom"] = Field(
        "generic", validation_alias=_env("DRIP_BOOKING_PROVIDER", "booking_provider"),
        description="The scheduling tool behind DRIP_BOOKING_URL: how booking links are prefilled and tagged",
    )
    calendly_signing_key: SecretStr = Field(
        SecretStr(""), validation_alias=_env("DRIP_CALENDLY_SIGNING_KEY", "calendly_signing_key"),
        description="The webhook subscription's signing key: verifies Calendly-Webhook-Signature on "
                    "POST /webhooks/calendly",
    )
    calcom_webhook_secret: SecretStr = Field(
        SecretStr(""), validation_alias=_env("DRIP_CALCOM_WEBHOOK_SECRET", "calcom_webhook_secret"),
        description="The Cal.com webhook's secret: verifies X-Cal-Signature-256 on POST /webhooks/calcom",
    )
    staff_alert_email: str = Field(
        "", validation_alias=_env("DRIP_STAFF_ALERT_EMAIL", "staff_alert_email"),
        description="Where crisis-flagged replies are e-mailed (optional)",
    )
    sms_rate_per_second: float = Field(
        1.0, gt=0, validation_alias=_env("DRIP_SMS_RATE", "sms_rate_per_second"),
        description="SMS per second across all workers (one US long code: 1/s)",
    )
    email_rate_per_second: float = Field(
        100.0, gt=0, validation_alias=_env("DRIP_EMAIL_RATE", "email_rate_per_second"),
        description="Emails per second across all workers",
    )
    dispatch_interval_seconds: float = Field(
        5.0, gt=0, validation_alias=_env("DRIP_DISPATCH_INTERVAL", "dispatch_interval_seconds")
    )
    dispatch_batch_size: int = Field(
        200, ge=1, le=10_000, validation_alias=_env("DRIP_BATCH_SIZE", "dispatch_batch_size")
    )
    worker_concurrency: int = Field(
        8, ge=1, le=256, validation_alias=_env("DRIP_WORKER_CONCURRENCY", "worker_concurrency"),
        description="Concurrent provider calls inside one worker process",
    )
    max_attempts: int = Field(
        6, ge=1, le=50, validation_alias=_env("DRIP_MAX_ATTEMPTS", "max_attempts"),
        description="Transient failures tolerated per message before it is marked failed",
    )
    provider_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=_env("DRIP_PROVIDER_TIMEOUT", "provider_timeout_seconds")
    )
    api_token_max_days: int = Field(
        365, ge=1, le=3650, validation_alias=_env("DRIP_API_TOKEN_MAX_DAYS", "api_token_max_days"),
        description="Longest lifetime, in days, a staff API token may be given (1-3650)",
    )
    sms_countries: str = Field(
        "US,CA", validation_alias=_env("DRIP_SMS_COUNTRIES", "sms_countries"),
        description="Countries (ISO 3166 codes, comma-separated) whose numbers the public form accepts",
    )
    intake_form_limit: str = Field(
        "5/10m", validation_alias=_env("DRIP_INTAKE_FORM_LIMIT", "intake_form_limit"),
        description="Successful public form requests per client address (count/window: 5/10m)",
    )
    intake_sms_per_number: str = Field(
        "2/1d", validation_alias=_env("DRIP_INTAKE_SMS_PER_NUMBER", "intake_sms_per_number"),
        description="Texts the public form may cause to one unconfirmed number",
    )
    intake_sms_per_network: str = Field(
        "10/1h", validation_alias=_env("DRIP_INTAKE_SMS_PER_NETWORK", "intake_sms_per_network"),
        description="Texts to unconfirmed numbers the public form may cause from one IPv4 /24 or IPv6 /64",
    )
    intake_sms_global: str = Field(
        "50/1h", validation_alias=_env("DRIP_INTAKE_SMS_GLOBAL", "intake_sms_global"),
        description="Texts to unconfirmed numbers the public form may cause in all; staff see an alert when reached",
    )
    max_body_public: int = Field(
        64 * 1024, ge=1024, le=1024 ** 3, validation_alias=_env("DRIP_MAX_BODY_PUBLIC", "max_body_public"),
        description="Most bytes a request body may have on the public pages (consultation form, preference page); "
                    "larger bodies get 413 while they stream in",
    )
    max_body_webhook: int = Field(
        1024 * 1024, ge=1024, le=1024 ** 3, validation_alias=_env("DRIP_MAX_BODY_WEBHOOK", "max_body_webhook"),
        description="Most bytes a webhook body may have (Twilio, booking tools; SendGrid event batches: 4 times this)",
    )
    max_body_staff: int = Field(
        1024 * 1024, ge=1024, le=1024 ** 3, validation_alias=_env("DRIP_MAX_BODY_STAFF", "max_body_staff"),
        description="Most bytes a request body may have in the staff UI and the /api/v1 JSON API (but the CSV import)",
    )
    max_import_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, le=1024 ** 3, validation_alias=_env("DRIP_MAX_IMPORT_BYTES", "max_import_bytes"),
        description="Largest CSV file the staff UI's import accepts (drip import reads files of any size)",
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("DRIP_LOG_FORMAT", "log_format"))
    log_level: str = Field("INFO", validation_alias=_env("DRIP_LOG_LEVEL", "log_level"))
    # -- staff sign-in (accounts.throttle, accounts.sessions, accounts.password_reset) --
    login_account_limit: int = Field(
        5, ge=1, le=1000, validation_alias=_env("DRIP_LOGIN_ACCOUNT_LIMIT", "login_account_limit"),
        description="Failed sign-ins per account per window, from any address, before the form answers 429",
    )
    login_network_limit: int = Field(
        30, ge=1, le=100_000, validation_alias=_env("DRIP_LOGIN_NETWORK_LIMIT", "login_network_limit"),
        description="Failed sign-ins per network (IPv4 /24, IPv6 /64) per window, across all accounts",
    )
    login_window_minutes: int = Field(
        15, ge=1, le=1440, validation_alias=_env("DRIP_LOGIN_WINDOW_MINUTES", "login_window_minutes"),
        description="Length of the sign-in throttling window, in minutes",
    )
    session_idle_minutes: int = Field(
        30, ge=1, le=1440, validation_alias=_env("DRIP_SESSION_IDLE_MINUTES", "session_idle_minutes"),
        description="A staff session unused this long ends (checked on the server)",
    )
    session_lifetime_hours: int = Field(
        12, ge=1, le=168, validation_alias=_env("DRIP_SESSION_LIFETIME_HOURS", "session_lifetime_hours"),
        description="A staff session ends this long after sign-in, however active",
    )
    password_reset_minutes: int = Field(
        30, ge=5, le=1440, validation_alias=_env("DRIP_PASSWORD_RESET_MINUTES", "password_reset_minutes"),
        description="How long an emailed password-reset link works (once)",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("public_url", "booking_url", "twilio_base_url", "sendgrid_base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("sms_countries")
    @classmethod
    def _check_countries(cls, value: str) -> str:
        codes = [code.strip().upper() for code in value.split(",") if code.strip()]
        if not codes:
            raise ValueError("must name at least one country, e.g. US,CA")
        unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a country code phone numbers know (use ISO codes such as US, CA)")
        return ",".join(dict.fromkeys(codes))

    @field_validator("intake_form_limit", "intake_sms_per_number", "intake_sms_per_network", "intake_sms_global")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        parse_rate(value)
        return value.strip()

    @field_validator("secret_key_file")
    @classmethod
    def _check_secret_key_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        if value.is_dir():
            raise ValueError(f"{value} is a folder; give the path of a file (created on first run)")
        if not value.parent.is_dir():
            raise ValueError(f"the folder {value.parent} does not exist")
        return value

    @field_validator("clinic_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a folder
            raise ValueError(f"{value!r} is not an IANA time zone such as America/New_York") from None
        return value

    @field_validator("clinic_sms_name")
    @classmethod
    def _check_sms_name(cls, value: str) -> str:
        value = " ".join(value.split())
        # It opens every text: a long brand pushes a message into a third segment.
        if len(value) > SMS_NAME_MAX_CHARS:
            raise ValueError(f"must be at most {SMS_NAME_MAX_CHARS} characters (it opens every text message)")
        if _URL_LIKE.search(value):
            raise ValueError("must be a name, not a link")
        return value

    @field_validator("clinic_hours")
    @classmethod
    def _check_clinic_hours(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value or len(value) > 40:
            raise ValueError("must be 1 to 40 characters, e.g. \"Mon-Fri 9am-5pm\" (it goes into a text message)")
        if not value.isascii() or _URL_LIKE.search(value):
            # One non-GSM character (an en dash) would make the whole text UCS-2 and longer than 2 segments.
            raise ValueError("must be plain ASCII words, no link (write Mon-Fri, not Mon–Fri)")
        return value

    @field_validator("booking_phrase")
    @classmethod
    def _check_booking_phrase(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be empty, e.g. \"Book a consultation\"")
        if len(value) > BOOKING_PHRASE_MAX_CHARS:
            raise ValueError(f"must be at most {BOOKING_PHRASE_MAX_CHARS} characters (it is a button label)")
        if _URL_LIKE.search(value):
            raise ValueError("must be words, not a link: the button already leads to DRIP_BOOKING_URL")
        return value

    @model_validator(mode="after")
    def _check_sessions(self) -> Settings:
        if self.session_idle_minutes > self.session_lifetime_hours * 60:
            raise ValueError("DRIP_SESSION_IDLE_MINUTES is longer than DRIP_SESSION_LIFETIME_HOURS; "
                             "the idle timeout must fit in the lifetime")
        return self

    @model_validator(mode="after")
    def _check_offer(self) -> Settings:
        # The button label is the one offer text a clinic writes by hand; "free" there would
        # bypass DRIP_CONSULTATION_FREE, which is what decides whether anything is called free.
        if not self.consultation_free and _FREE_WORD.search(self.booking_phrase):
            raise ValueError("DRIP_BOOKING_PHRASE says \"free\" but DRIP_CONSULTATION_FREE is false")
        return self

    @model_validator(mode="after")
    def _check_providers(self) -> Settings:
        if self.delivery != "providers":
            return self
        missing = [
            name
            for name, present in [
                ("TWILIO_ACCOUNT_SID", bool(self.twilio_account_sid)),
                ("TWILIO_AUTH_TOKEN", bool(self.twilio_auth_token.get_secret_value())),
                (
                    "TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER",
                    bool(self.twilio_messaging_service_sid or self.twilio_from_number),
                ),
                ("SENDGRID_API_KEY", bool(self.sendgrid_api_key.get_secret_value())),
                ("DRIP_FROM_EMAIL", bool(self.from_email)),
                ("DRIP_BOOKING_URL", bool(self.booking_url)),
            ]
            if not present
        ]
        if missing:
            raise ValueError("DRIP_DELIVERY=providers needs " + ", ".join(missing))
        return self

    @property
    def sms_country_codes(self) -> frozenset[str]:
        """`DRIP_SMS_COUNTRIES` as a set of ISO region codes."""
        return frozenset(self.sms_countries.split(","))

    @property
    def sms_brand(self) -> str:
        """The discreet brand (`DRIP_CLINIC_SMS_NAME`, else the clinic name): texts, the email header,
        the default sender name — everything that shows on a lock screen or in an inbox list."""
        return self.clinic_sms_name or self.clinic_name

    @property
    def sender_name(self) -> str:
        """The email's from-name: the name part of `DRIP_FROM_EMAIL` ("Name <a@b>"), else the discreet brand."""
        return parseaddr(self.from_email)[0].strip() or self.sms_brand

    @property
    def effective_booking_url(self) -> str:
        """Booking destination; the embedded default points at a local placeholder page."""
        return self.booking_url or f"{self.public_url}/book-placeholder"


_FIELD_TO_ENV = {
    name: (field.validation_alias.choices[0] if isinstance(field.validation_alias, AliasChoices) else name)
    for name, field in Settings.model_fields.items()
}


def env_name(field: str) -> str:
    """The environment variable that sets a field."""
    return str(_FIELD_TO_ENV.get(field, field.upper()))


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and `.env`), raising `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            field = loc[0] if loc else ""
            name = env_name(field) if field else "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
