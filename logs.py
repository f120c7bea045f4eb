"""Logging setup: readable text by default, one JSON object per line with DRIP_LOG_FORMAT=json.

Log lines name message and contact ids, never addresses, names or bodies (STYLE rule 9). Our own
code is written that way (tests/test_no_phi_in_logs.py checks it); two guards catch what other
code might still say:

- libraries that log request or row data at INFO/DEBUG -- SQLAlchemy's statement parameters, the
  Twilio SDK's request bodies, HTTP clients -- are held at WARNING whatever `DRIP_LOG_LEVEL` is;
- every line our handler writes, exception text included, has email addresses and phone numbers
  masked (`RedactingFilter`) -- uvicorn's lines too, whichever handler writes them -- and uvicorn's
  access log loses query strings and link tokens (`AccessLogFilter`).
"""

from __future__ import annotations

import json
import logging
import traceback
import re
import sys
from datetime import datetime, timezone

from patient_drip.settings import Settings

# Loggers that put request bodies, SQL parameters or headers into INFO/DEBUG lines.
NOISY_LOGGERS = ("apscheduler", "twilio", "urllib3", "httpx", "httpcore", "alembic", "sqlalchemy",
                 "python_http_client", "sendgrid", "multipart", "hpack", "asyncio")

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# E.164 (+13125550142) and North American formats with separators ((312) 555-0142, 312.555.0142).
_PHONE = re.compile(r"\+[1-9]\d{7,14}\b|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b")
_ACCESS_TOKEN_PATH = re.compile(r"^(/[ub])/[^/?#]+")


def redact(text: str) -> str:
    """`text` with email addresses and phone numbers replaced by placeholders."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


class RedactingFilter(logging.Filter):
    """Masks addresses and numbers in a record's message and exception text (a last line of
    defence: the code does not log them in the first place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class AccessLogFilter(logging.Filter):
    """uvicorn's access lines without query strings (a staff search for `?q=dana@...`) and without
    the signed tokens of preference and booking links."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = _ACCESS_TOKEN_PATH.sub(r"\1/…", args[2].split("?", 1)[0])
            record.args = (*args[:2], path, *args[3:])
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry)


def configure_logging(settings: Settings, *, quiet: bool = False) -> None:
    """Quiet commands (one-shot CLI) log warnings only, to stderr, so their stdout stays clean."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.WARNING if quiet else getattr(logging, settings.log_level.upper(), logging.INFO)
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # uvicorn (as `drip serve` runs it) writes through its own handlers, not ours: filter at its
    # loggers, where every record it makes passes (its tracebacks of a failed request included).
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not any(isinstance(f, AccessLogFilter) for f in logger.filters):
            logger.addFilter(AccessLogFilter())
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def error_kind(exc: BaseException | None) -> str:
    """An exception's type (and the driver's), never its text: SQLAlchemy and the drivers put
    statement parameters — addresses, names, message bodies — into it (STYLE rule 9)."""
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None)
    return type(exc).__name__ + (f": {type(orig).__name__}" if orig is not None else "")


def error_stack(exc: BaseException | None) -> str:
    """The traceback's frames only (no exception text), for a log line."""
    return "".join(traceback.format_tb(exc.__traceback__)) if exc is not None else ""
