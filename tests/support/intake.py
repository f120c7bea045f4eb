"""The public intake as a person (or an attacker) meets it over HTTP: a live app in providers mode
against the sandbox (`live_clinic`), the form posted over loopback (`post_request`), and what the
sandbox received (`outbound_texts`, `emails_to`, `confirmation_link`); `processed` waits until the
app has acted on every request it answered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import select

from patient_drip.models import PendingChange, SmsConfirmation
from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import Runtime
from support.builders import UNLIMITED_INTAKE, VirtualClock
from support.live import LiveApp, live_sandbox_runtime, wait_until

CONFIRM_LINK = re.compile(r"https?://\S+/confirm/[A-Za-z0-9_.\-]+")


@contextmanager
def live_clinic(database_url: str, sandbox: SandboxServer, clock: VirtualClock, *,
                form_limit: int | None = None) -> Iterator[tuple[Runtime, str]]:
    """Our app served over loopback in providers mode against `sandbox` (whose inbound texts and
    events come back to it, signed): yields (runtime, base URL). The intake limits are lifted (these
    tests are about what a request may change, not about its limits: `test_attacks_pumping.py`);
    `form_limit` sets the form's per-address limit (every request here comes from 127.0.0.1)."""
    overrides = dict(UNLIMITED_INTAKE)
    if form_limit is not None:
        overrides["intake_form_limit"] = f"{form_limit}/10m"
    rt = live_sandbox_runtime(database_url, sandbox, **overrides)
    try:
        with LiveApp(rt, clock) as app:
            yield rt, app.url
    finally:
        rt.close()


def post_request(base: str, *, as_form: bool = False, **fields: Any) -> httpx.Response:
    """POST /api/consultations as JSON (or as the browser's form), from loopback."""
    if as_form:
        return httpx.post(f"{base}/api/consultations", data={k: str(v) for k, v in fields.items()}, timeout=10)
    return httpx.post(f"{base}/api/consultations", json=fields, timeout=10)


def processed(rt: Runtime) -> None:
    """Wait until every recorded request has been acted on and every confirmation text it asked
    for has had its answer from the provider (the app does both after answering)."""
    def done() -> bool:
        with rt.sessions() as session:
            waiting = session.scalar(select(PendingChange.id).where(PendingChange.processed_at.is_(None)).limit(1))
            sending = session.scalar(select(SmsConfirmation.id).where(
                SmsConfirmation.sent_at.is_(None), SmsConfirmation.send_error.is_(None)).limit(1))
            return waiting is None and sending is None

    wait_until(done)


def outbound_texts(sandbox: SandboxServer, to: str) -> list[str]:
    """Every text our side sent to `to` (API sends and TwiML replies alike), oldest first."""
    return [m["text"] for m in sandbox.messages("twilio", to=to) if m["direction"] != "inbound"]


def emails_to(sandbox: SandboxServer, to: str) -> list[dict[str, Any]]:
    """Every email the sandbox received for `to`, oldest first."""
    return sandbox.messages("sendgrid", to=to)


def confirmation_link(sandbox: SandboxServer, to: str) -> str:
    """The confirmation link in the newest email to `to` (fails the test when there is none)."""
    for email in reversed(emails_to(sandbox, to)):
        found = CONFIRM_LINK.search(email.get("text") or "")
        if found:
            return found.group()
    raise AssertionError(f"no confirmation link was emailed to {to}")
