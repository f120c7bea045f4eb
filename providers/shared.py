"""Small helpers both provider senders use: redacting provider messages, reading Retry-After,
checking a configured base URL. Imports nothing of ours."""

from __future__ import annotations

import email.utils
import re
import time
from datetime import UTC
from urllib.parse import urlsplit

_PHONE_RE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_EMAIL_RE = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+")


def redact(text: str, limit: int = 300) -> str:
    """Strip phone numbers and email addresses from a provider message (logs must not hold PII)."""
    text = _EMAIL_RE.sub("<email>", text)
    text = _PHONE_RE.sub("<phone>", text)
    return text[:limit]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def check_base_url(name: str, url: str) -> str:
    """`url` without its trailing slash; raises ValueError (naming the setting `name`) unless it is
    an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {url!r}")
    return url.rstrip("/")

