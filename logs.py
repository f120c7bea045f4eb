"""Logging setup: readable text by default, one JSON object per line with DRIP_LOG_FORMAT=json.

Log lines name message and contact ids, never addresses, names or bodies (STYLE rule 9).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings, *, quiet: bool = False) -> None:
    """Quiet commands (one-shot CLI) log warnings only, to stderr, so their stdout stays clean."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.WARNING if quiet else getattr(logging, settings.log_level.upper(), logging.INFO)
    root.setLevel(level)
    for noisy in ("apscheduler", "twilio.http_client", "urllib3", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
