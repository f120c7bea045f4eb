"""Attack: `kill -9` a worker in the middle of a pass (issue 11, finding 9).

Before: the worker had written its whole claimed batch as `sending` before handing the first one to
SendGrid, so after the kill every one of them was of unknown fate — 177 emails went to staff review
although about 168 had never left. Now only what the worker had actually handed to the provider (at
most its concurrency) is in doubt; the rest is simply sent once the lease runs out, exactly once.

A real `drip worker` process, the provider sandbox in its own process (answering in 150 ms, sending
no events back, so nothing but our own records can tell what happened), SQLite and PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from patient_drip import db
from patient_drip.models import Event, Message, MessageStatus
from patient_drip.runtime import build_runtime, utcnow
from support.builders import add_contact, make_settings
from support.chaos import (
    FROM_NUMBER,
    SENDGRID_KEY,
    TWILIO_SID,
    TWILIO_TOKEN,
    SandboxProcess,
    WorkerPool,
    audit_sandbox,
    drip_message_id,
    provider_env,
    settle_in_virtual_time,
    write_chaos_campaign,
)
from support.live import free_port

CONTACTS = 60  # one claim: the whole batch is written `sending` before the kill
CONCURRENCY = 4


def test_kill_9_mid_pass_leaves_only_what_was_handed_to_the_provider_in_doubt(database_url, tmp_path):
    campaigns = write_chaos_campaign(tmp_path / "campaigns")
    box = SandboxProcess(tmp_path)  # no event webhook: SendGrid tells us nothing afterwards
    box.faults({"latency_ms": {"sendgrid": 150}})
    public_url = f"http://127.0.0.1:{free_port()}"  # nobody listens: no callbacks either
    settings = make_settings(database_url, delivery="providers", public_url=public_url,
                             secret_key="chaos-secret-key-for-links", twilio_account_sid=TWILIO_SID,
                             twilio_auth_token=TWILIO_TOKEN, twilio_from_number=FROM_NUMBER, twilio_base_url=box.url,
                             sendgrid_api_key=SENDGRID_KEY,
                             from_email="Riverside Wellness <care@clinic.test>", sendgrid_base_url=box.url,
                             sendgrid_webhook_public_key=box.public_key, campaigns_dir=campaigns,
                             email_rate_per_second=100_000, provider_timeout_seconds=5)
    db.upgrade(database_url)
    rt = build_runtime(settings)
    pool = WorkerPool(provider_env(database_url, public_url, box.url, box.public_key, campaigns,
                                   DRIP_BATCH_SIZE="200", DRIP_WORKER_CONCURRENCY=str(CONCURRENCY),
                                   DRIP_EMAIL_RATE="100000"), tmp_path, size=1)
    try:
        now = utcnow()
        for index in range(CONTACTS):  # email only: every send in doubt would need a person
            add_contact(rt, now, email=f"crash{index}@example.com", phone=None, consent=("email",),
                        campaign="chaos")
        pool.start()
        deadline = time.monotonic() + 120
        while len(box.messages()) < 2 * CONCURRENCY:  # two rounds of the pool are through: mid-pass
            assert time.monotonic() < deadline, f"the worker sent nothing:\n{pool.logs()[-3000:]}"
            time.sleep(0.02)
        worker = pool.workers[0].process
        worker.send_signal(signal.SIGKILL)
        worker.wait()

        with rt.sessions() as session:
            written = session.scalar(select(func.count()).select_from(Message).where(
                Message.status == MessageStatus.SENDING))
        received_at_kill = len(box.messages())
        # The kill landed with much more claimed and written than the pool had in flight.
        assert written > 3 * CONCURRENCY, (written, received_at_kill)

        # Recovery as the next worker does it: leases run out, reconciliation waits pass (virtual time).
        box.clear_faults()
        settle_in_virtual_time(rt, utcnow() + timedelta(minutes=10))
        records = box.messages()
        audit = audit_sandbox(records)
        received = Counter(drip_message_id(r) for r in records)
        with rt.sessions() as session:
            in_doubt = session.scalar(select(func.count()).select_from(Event).where(Event.kind == "message_unknown"))
            emails = list(session.scalars(select(Message).where(Message.channel == "email")))
        review = [m for m in emails if m.status == MessageStatus.NEEDS_REVIEW]
        print(f"kill -9 mid-pass: {written} written as sending, {received_at_kill} received by then, "
              f"{in_doubt} in doubt afterwards, {len(review)} for staff review")

        assert in_doubt <= CONCURRENCY, f"{in_doubt} sends of unknown fate after one kill (written: {written})"
        assert len(review) <= CONCURRENCY
        assert audit.duplicates_by_id == {} and audit.duplicates_by_content == {}
        assert len(emails) == CONTACTS * 5  # every email step of every contact, one record each
        for message in emails:
            if message.status == MessageStatus.NEEDS_REVIEW:
                assert received[message.id] <= 1
            else:  # everything not in doubt reached SendGrid exactly once
                assert message.status == MessageStatus.SENT and received[message.id] == 1, message.id
    finally:
        pool.stop()
        box.stop()
        rt.close()
