"""Pausing a channel for everyone: the one service every entry point calls.

A pause is a status in the database (listmonk style): a `pause:<channel>` row in `key_value`
whose value says when and why. While it is there the dispatcher finds nothing to send on that
channel and looks again every `queue.PAUSE_RECHECK`; nothing is skipped or failed.

Who pauses and resumes: the dispatcher, when a provider refuses our account (`AccountSendError`);
an admin on the settings page; `drip resume`. Every pause and every resume writes the same
`channel_paused` / `channel_resumed` Event and an audit row of the same name, whoever did it.
Readers (the dispatcher, the dashboard, the settings page, `/metrics`) all call `paused_channels`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip import db
from patient_drip.models import Channel, EventKind, KeyValue, add_event, audit

_PREFIX = "pause:"


def pause_key(channel: str) -> str:
    """The `key_value` key that holds `channel`'s pause."""
    return f"{_PREFIX}{channel}"


def paused_channels(session: Session) -> dict[Channel, str]:
    """Every paused channel with its stored reason ("<time> UTC <why>"); empty when none is.

    One primary-key lookup per channel in a single statement (cheap enough for every batch)."""
    rows = session.execute(
        select(KeyValue.key, KeyValue.value).where(KeyValue.key.in_([pause_key(c) for c in Channel]))
    )
    return {Channel(key.removeprefix(_PREFIX)): value for key, value in rows if value}


def pause_channel(session: Session, channel: Channel, reason: str, now: datetime, actor: str) -> None:
    """Stop all sending on `channel` until someone resumes it; records an Event and an audit row.

    `reason` is stored (prefixed with the time) for staff and operators to read; pausing a channel
    already paused replaces the reason and records again. Runs in the caller's transaction."""
    db.set_kv(session, pause_key(channel), f"{now:%Y-%m-%d %H:%M} UTC {reason}", now)
    add_event(session, EventKind.CHANNEL_PAUSED, now, contact_id=None, channel=channel, reason=reason, actor=actor)
    audit(session, actor, EventKind.CHANNEL_PAUSED, now, channel=channel, reason=reason)


def resume_channel(session: Session, channel: Channel, now: datetime, actor: str) -> str | None:
    """Let `channel` send again; returns the reason it was paused with, or None (and records
    nothing) when it was not paused. Records an Event and an audit row; runs in the caller's
    transaction."""
    reason = db.get_kv(session, pause_key(channel))
    if not reason:
        return None
    db.delete_kv(session, pause_key(channel))
    add_event(session, EventKind.CHANNEL_RESUMED, now, contact_id=None, channel=channel, paused_because=reason,
              actor=actor)
    audit(session, actor, EventKind.CHANNEL_RESUMED, now, channel=channel, paused_because=reason)
    return reason
