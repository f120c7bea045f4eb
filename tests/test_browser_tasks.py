"""The "To do" page in a real browser: Calendly tells a live server (signed as Calendly signs) that a
patient missed their consultation; a front-desk user sees the task on the dashboard, takes it, marks it
done, and sees it kept with their name and the time. The page fits a laptop screen without sideways
scrolling. Screenshots go to test-artifacts/screenshots/ (`-s` prints their paths)."""

from __future__ import annotations

import re

import httpx
import pytest

from support.browser import MARKS, PASSWORD, chromium, laptop_page, screenshot, sign_in_with_password
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url
from support.webhooks import calendly_event, calendly_headers

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect
CALENDLY_KEY = "calendly-signing-key-for-tests"


def test_front_desk_takes_and_finishes_a_no_show_task_in_the_browser(tmp_path, clock):
    from patient_drip.accounts.users import create_user
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url,
                                     calendly_signing_key=CALENDLY_KEY))
    try:
        with rt.sessions() as session, session.begin():
            create_user(session, "frontdesk@example.com", PASSWORD, "staff", clock.now, "test", name="Front desk")
        add_contact(rt, clock.now, email="alex@example.com", first_name="Alex")
        with LiveApp(rt, clock), httpx.Client(base_url=url) as web, chromium(playwright_api) as browser:
            for body in (calendly_event("invitee.created", email="alex@example.com", name="Alex Rivera", uri="u-2",
                                        at=clock.now),
                         b'{"event": "invitee_no_show.created", "created_at": "2026-03-02T16:00:00Z", "payload": '
                         b'{"invitee": {"uri": "u-2", "email": "alex@example.com"}, "uri": "ns-1"}}'):
                answer = web.post("/webhooks/calendly", content=body,
                                  headers=calendly_headers(CALENDLY_KEY, body, clock.now))
                assert answer.status_code == 200, answer.text

            context, page, errors = laptop_page(browser, url)
            sign_in_with_password(page, "frontdesk@example.com")
            expect(page.locator("#tasks-open")).to_have_text("1")
            page.get_by_role("link", name="tasks to do").click()
            page.wait_for_url(re.compile(r"/admin/tasks$"))
            row = page.locator("tbody tr").filter(has_text="Missed the consultation")
            expect(row).to_contain_text("nobody yet")
            screenshot(page, "tasks-open.png")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

            row.get_by_role("button", name="Take it").click()
            expect(page.get_by_text("The task is yours now.")).to_be_visible()
            expect(row).to_contain_text("Front desk")
            expect(row.get_by_role("button", name="Take it")).to_have_count(0)
            row.get_by_role("button", name="Done").click()
            expect(page.get_by_text("Done. The task is kept below")).to_be_visible()
            expect(page.get_by_text("Nothing to do.")).to_be_visible()
            expect(page.locator("table[aria-labelledby=done-heading] tbody tr")).to_contain_text(
                "frontdesk@example.com")
            screenshot(page, "tasks-done.png")
            page.get_by_role("link", name="Alex").click()
            page.wait_for_url(re.compile(r"/admin/contacts/\d+$"))
            page.goto("/admin")
            expect(page.locator("#tasks-open")).to_have_text("0")
            assert page.goto("/admin/contacts/abc").status == 404  # a mistyped address: the staff layout, not JSON
            expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
            expect(page.get_by_role("link", name="To do")).to_be_visible()
            screenshot(page, "staff-not-found.png")
            assert errors == [] or all("404" in error for error in errors), errors
            context.close()
    finally:
        rt.close()
