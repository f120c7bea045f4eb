"""Counting attempts atomically: sign-ins per account and per network, second-factor codes, reset
requests.

Each attempt is counted *before* the secret is checked, by one statement per key
(`INSERT … ON CONFLICT (key) DO UPDATE … RETURNING attempts`), committed at once. The database
serialises the updates of one row, so N parallel requests get the counts 1…N and only the first
`limit` may go on to the password check, in every process, on SQLite and PostgreSQL alike. (The
previous in-memory counter checked first and counted after the slow argon2 check: 40 parallel
wrong passwords were all checked.)

Windows are fixed (they start at the first attempt and last `window_seconds`); times are epoch
seconds so that the arithmetic stays in SQL. May import `models` only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from patient_drip.models import AuthThrottle

_TABLE = AuthThrottle.__table__


def network_of(ip: str) -> str:
    """The network an address is counted under: IPv4 /24, IPv6 /64 (one host's usual allocation), an
    IPv4-mapped IPv6 address as IPv4. Anything unparsable is counted as itself."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip.strip()[:100] or "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class Count:
    """One key's count after this attempt."""

    key: str
    limit: int
    attempts: int
    retry_after: int  # seconds until this key's window ends

    @property
    def over(self) -> bool:
        return self.attempts > self.limit

    @property
    def just_tripped(self) -> bool:
        """This attempt is the first one over the limit in the window (audit it once, not per attempt)."""
        return self.attempts == self.limit + 1


@dataclass(frozen=True, slots=True)
class Decision:
    counts: tuple[Count, ...]

    @property
    def allowed(self) -> bool:
        return not any(count.over for count in self.counts)

    @property
    def retry_after(self) -> int:
        """Seconds to wait (for `Retry-After`); 0 when allowed."""
        return max((count.retry_after for count in self.counts if count.over), default=0)

    def tripped(self, key: str) -> bool:
        return any(count.key == key and count.just_tripped for count in self.counts)


def _bump(session: Session, key: str, moment: int, window_seconds: int) -> tuple[int, int]:
    """Count one attempt for `key` and return (attempts in the window, window start): one atomic
    statement. In `DO UPDATE SET` the column names are the row as it was, on both databases."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    expired = _TABLE.c.window_start <= moment - window_seconds
    statement = (
        insert(_TABLE)
        .values(key=key, window_start=moment, attempts=1)
        .on_conflict_do_update(
            index_elements=[_TABLE.c.key],
            set_={"attempts": case((expired, 1), else_=_TABLE.c.attempts + 1),
                  "window_start": case((expired, moment), else_=_TABLE.c.window_start)},
        )
        .returning(_TABLE.c.attempts, _TABLE.c.window_start)
    )
    attempts, start = session.execute(statement).one()
    return int(attempts), int(start)


def count_attempt(session: Session, limits: Sequence[tuple[str, int]], now: datetime,
                  window_seconds: int) -> Decision:
    """Count one attempt under every (key, limit) and say whether it may go on. Every key is counted,
    allowed or not (a refused attempt still counts: hammering does not help). The caller commits
    before doing the check the limit protects, so that parallel requests see this count."""
    moment = int(now.timestamp())
    counts = []
    for key, limit in limits:
        attempts, start = _bump(session, key, moment, window_seconds)
        counts.append(Count(key, limit, attempts, max(1, start + window_seconds - moment)))
    return Decision(tuple(counts))


def refund_attempt(session: Session, key: str) -> None:
    """Take back one counted attempt (a sign-in that succeeded is not a failure)."""
    session.execute(update(_TABLE).where(_TABLE.c.key == key, _TABLE.c.attempts > 0)
                    .values(attempts=_TABLE.c.attempts - 1))


def prune_attempts(session: Session, now: datetime, older_than_seconds: int = 86_400) -> None:
    """Drop counters whose window started more than a day ago (called at each successful sign-in, so
    a spray of addresses does not leave rows for ever)."""
    session.execute(delete(_TABLE).where(_TABLE.c.window_start < int(now.timestamp()) - older_than_seconds))


def clear_attempts(session: Session, key: str) -> None:
    """Forget every attempt of `key` (after a successful sign-in to that account)."""
    session.execute(delete(_TABLE).where(_TABLE.c.key == key))
