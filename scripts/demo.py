"""Demo: one person asks for a consultation and receives the whole sequence through the real
Twilio and SendGrid SDKs into the local provider sandbox — then we read what arrived.

Runs everything in one process on loopback with a temporary SQLite database and a virtual clock,
so two weeks pass in seconds. Usage: `make demo` (or `.venv/bin/python scripts/demo.py`).

`--spanish`: Maya fills in the form in Spanish, asks about bipolar disorder, and taps the booking
link on day 1 without booking: the journey's Spanish bipolar welcome and its "anything we can help
with?" text arrive in the sandbox.
"""

from __future__ import annotations

import re
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent

from patient_drip import db  # noqa: E402
from patient_drip.dispatch.pipeline import Dispatcher  # noqa: E402
from patient_drip.models import Enrollment, Message, MessageStatus  # noqa: E402
from patient_drip.content.rendering import sms_info  # noqa: E402
from patient_drip.runtime import build_runtime  # noqa: E402
from patient_drip.providers.sandbox import SandboxServer  # noqa: E402
from patient_drip.settings import Settings  # noqa: E402
from patient_drip.dispatch.funnel import campaign_summaries, format_table  # noqa: E402
from patient_drip.web.app import create_app  # noqa: E402


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_settled(rt, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.sessions() as session:
            if session.scalar(select(Message.id).where(Message.status == MessageStatus.SENT).limit(1)) is None:
                return
        time.sleep(0.05)


def main() -> None:
    spanish = "--spanish" in sys.argv[1:]
    start = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)  # Monday 09:00 in Chicago
    clock = Clock(start)
    workdir = Path(tempfile.mkdtemp(prefix="drip-demo-"))
    sandbox = SandboxServer(callback_delay_ms=5).start()
    port = free_port()
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'demo.db'}", public_url=f"http://127.0.0.1:{port}",
        delivery="providers", booking_url="https://clinic.example/book",
        twilio_account_sid=sandbox.config.twilio_account_sid, twilio_auth_token=sandbox.config.twilio_auth_token,
        twilio_from_number="+15005550006", twilio_base_url=sandbox.url,
        sendgrid_api_key=sandbox.config.sendgrid_api_key, from_email="Riverside Wellness <care@clinic.example>",
        sendgrid_base_url=sandbox.url, sendgrid_webhook_public_key=sandbox.public_key,
        clinic_name="Riverside Wellness", clinic_address="12 River Road, Springfield, IL 62701",
        clinic_phone="+1 217 555 0100", sms_rate_per_second=100, _env_file=None,  # type: ignore[call-arg]
    )
    db.upgrade(settings.database_url)
    rt = build_runtime(settings)
    sandbox.configure(twilio_inbound_url=f"{settings.public_url}/webhooks/twilio/sms",
                      sendgrid_event_url=f"{settings.public_url}/webhooks/sendgrid/events")
    server = uvicorn.Server(uvicorn.Config(create_app(rt, clock=clock), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)

    print(f"sandbox {sandbox.url}, app {settings.public_url}, database {workdir / 'demo.db'}\n")
    response = httpx.post(f"{settings.public_url}/api/consultations", data={
        "first_name": "Maya", "last_name": "Okafor", "email": "maya@example.com", "phone": "(312) 555-0147",
        "consent_email": "yes", "consent_sms": "yes", "preferred_channel": "sms",
        **({"language": "es", "wording_language": "es", "interest": "bipolar"} if spanish else {}),
    })
    print(f"Maya submits the consultation form: HTTP {response.status_code}\n")
    if spanish:  # she confirms her number ("Responda SI"), so texts may start
        confirmed = sandbox.send_inbound_sms("+13125550147", "SI")
        print(f"> SI\n< {confirmed.text}\n")

    dispatcher = Dispatcher(rt, "demo")
    clicked = not spanish
    while True:
        with rt.sessions() as session:
            due = session.scalar(select(func.min(Enrollment.next_due_at)))
        if due is None:
            break
        if not clicked and due > start + timedelta(days=1):
            clock.now = start + timedelta(days=1)  # day 1: Maya taps the booking link in her text, does not book
            bodies = [m.get("body") or m.get("text") or "" for m in sandbox.messages()]
            link = next(found for body in bodies
                        if (found := re.search(r"http://127\.0\.0\.1:\d+(/b/[\w.-]+[\w-])", body)))
            answer = httpx.get(f"{settings.public_url}{link.group(1)}", follow_redirects=False)
            print(f"day 1: Maya taps the booking link in her welcome email: HTTP {answer.status_code}, does not book\n")
            clicked = True
            continue
        clock.now = max(clock.now, due)
        dispatcher.run_once(clock.now)
        wait_settled(rt)

    print("=" * 78)
    print("What arrived, as Maya sees it")
    print("=" * 78)
    with rt.sessions() as session:
        sent_at = {m.provider_message_id: (m.sent_at, m.status) for m in session.scalars(select(Message))}
    for item in sorted(sandbox.messages(), key=lambda m: m["received_at"]):
        when, status = sent_at.get(item["id"], (None, "?"))
        offset = f"day {(when - start).days}, {when.astimezone().strftime('%H:%M')} UTC" if when else "?"
        if item["provider"] == "twilio":
            body = item.get("body") or item.get("text") or ""
            info = sms_info(body)
            print(f"\n--- TEXT MESSAGE  ({offset}; {info.segments} segment(s), {info.encoding}; {status})")
            print(body)
        else:
            print(f"\n--- EMAIL  ({offset}; {status})")
            print(f"From: {item.get('from')}\nSubject: {item['subject']}")
            print(f"List-Unsubscribe: {item['headers'].get('List-Unsubscribe')}\n")
            print(item["text"].strip())

    print("\n" + "=" * 78)
    print("Maya texts back")
    print("=" * 78)
    for body in (("AYUDA", "¿cuánto cuesta la consulta?", "ALTO") if spanish else
                 ("HELP", "what does the consultation cost?", "STOP")):
        reply = sandbox.send_inbound_sms("+13125550147", body)
        print(f"> {body}\n< {reply.text}")
    print()
    with rt.sessions() as session:
        print(format_table(campaign_summaries(session, rt.campaigns)))
    server.should_exit = True
    sandbox.stop()


if __name__ == "__main__":
    main()
