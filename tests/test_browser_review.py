"""The review queue in a real browser: Playwright drives Debian's Chromium against a real uvicorn
server whose emails go to the provider sandbox. Two emails timed out after reaching SendGrid and got
no event: a front-desk user sees both on the dashboard and in `/admin/review`, marks one as sent and
sends the other again; each decision is shown, audited, and the queue empties.

Screenshots go to test-artifacts/screenshots/ (`-s` prints their paths).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from support.browser import MARKS, PASSWORD, SHOTS, chromium, laptop_page, sign_in_with_password
from support.builders import ROOT, VirtualClock, add_contact, sandbox_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect



@pytest.fixture
def browser() -> Iterator[object]:
    with chromium(playwright_api) as instance:
        yield instance


def test_front_desk_settles_the_review_queue_in_the_browser(browser, sandbox, tmp_path):
    from patient_drip.accounts.users import create_user
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.dispatch.reconcile import reconcile_unknown
    from patient_drip.models import AuditEntry, Message, MessageStatus
    from patient_drip.providers.sandbox import Fault
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(sandbox_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), sandbox, public_url=url,
                                        provider_timeout_seconds=1, worker_concurrency=2))
    clock = VirtualClock()
    try:
        with rt.sessions() as session, session.begin():
            create_user(session, "frontdesk@example.com", PASSWORD, "staff", clock.now, "test", name="Front desk")
        for email, name in (("rosa@example.com", "Rosa"), ("sam@example.com", "Sam")):
            add_contact(rt, clock.now, email=email, phone=None, consent=("email",), first_name=name)
        sandbox.add_fault("sendgrid", Fault(timeout=True, hang_ms=1400, times=2))
        Dispatcher(rt, "worker:clinic-1:4242").run_once(clock.now)
        clock.advance(timedelta(minutes=31))
        assert reconcile_unknown(rt, clock.now) == {"needs_review": 2}

        with LiveApp(rt, clock):
            context, page, errors = laptop_page(browser, url)
            sign_in_with_password(page, "frontdesk@example.com")
            expect(page.locator("#in-review")).to_have_text("2")
            page.get_by_role("link", name="messages to review").click()
            page.wait_for_url(re.compile(r"/admin/review$"))
            expect(page.get_by_role("heading", name="Messages to review")).to_be_visible()
            expect(page.locator("li.reply")).to_have_count(2)
            expect(page.locator("li.reply").first).to_contain_text("worker:clinic-1:4242")
            SHOTS.mkdir(parents=True, exist_ok=True)
            before = SHOTS / "review-queue.png"
            page.screenshot(path=str(before), full_page=True)
            print(f"screenshot: {before}")

            first = page.locator("li.reply").filter(has_text="Rosa")
            first.get_by_role("button", name="Mark as sent").click()
            expect(page.get_by_text("Marked as sent.")).to_be_visible()
            expect(page.locator("li.reply")).to_have_count(1)
            page.locator("li.reply").filter(has_text="Sam").get_by_role("button", name="Send again").click()
            expect(page.get_by_text("Queued to be sent again")).to_be_visible()
            expect(page.get_by_text("Nothing to review.")).to_be_visible()
            after = SHOTS / "review-queue-settled.png"
            page.screenshot(path=str(after), full_page=True)
            print(f"screenshot: {after}")
            page.goto("/admin")
            expect(page.locator("#in-review")).to_have_text("0")
            assert errors == []
            context.close()
        with rt.sessions() as session:
            statuses = sorted(str(s) for s in session.scalars(select(Message.status).where(Message.channel == "email")))
            decisions = sorted(e.detail["decision"] for e in session.scalars(
                select(AuditEntry).where(AuditEntry.action == "message_settled")))
        assert statuses == ["retrying", "sent"] and decisions == ["mark_sent", "send_again"]
    finally:
        rt.close()
