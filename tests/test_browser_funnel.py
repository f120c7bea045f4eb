"""The contact workbench and the funnel in a real browser: a front-desk user sees only the actions
that fit each person (no "Stop emails" for someone without email, no "Mark as booked" after booking),
marks someone booked, and the dashboard's funnel shows the booking on the very next view, credited to
one step; the funnel page draws its charts without scripts from elsewhere. Screenshots go to
test-artifacts/screenshots/ (`-s` prints their paths)."""

from __future__ import annotations

import re

import pytest

from support.browser import MARKS, PASSWORD, chromium, screenshot
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect


def test_contact_actions_fit_and_the_funnel_moves_right_after_a_booking(tmp_path, clock):
    from patient_drip.accounts.users import create_user
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url))
    try:
        with rt.sessions() as session, session.begin():
            create_user(session, "frontdesk@example.com", PASSWORD, "staff", clock.now, "test", name="Front desk")
        alex = add_contact(rt, clock.now, email="alex@example.com", phone="+13125550142", first_name="Alex")
        texts_only = add_contact(rt, clock.now, email=None, phone="+13125550177", first_name="Robin",
                                 consent=("sms",))
        Dispatcher(rt, "browser-test").run_once(clock.now)
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
            page = context.new_page()
            errors: list[str] = []
            outside: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
            page.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" of data-confirm
            page.goto("/admin/login")
            page.get_by_label("Email").fill("frontdesk@example.com")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"/admin/?$"))
            block = page.locator('section[data-campaign="ketamine-consult"]').first
            expect(block.locator('[data-stage="booked"]')).to_have_text("0")
            expect(block.locator('[data-stage="sent"]')).to_have_text("3")

            # Someone who gets texts only: no email actions at all.
            page.goto(f"/admin/contacts/{texts_only}")
            actions = page.locator("section[aria-labelledby=actions-h]")
            expect(actions.get_by_role("button", name="Stop texts")).to_be_visible()
            expect(actions.get_by_role("button", name="Stop emails")).to_have_count(0)
            expect(actions.get_by_role("button", name="Stop everything")).to_have_count(0)
            expect(page.get_by_role("link", name="(312) 555-0177")).to_have_attribute("href", "tel:+13125550177")
            screenshot(page, "contact-texts-only-actions.png")

            page.goto(f"/admin/contacts/{alex}")
            actions = page.locator("section[aria-labelledby=actions-h]")
            for name in ("Mark as booked", "Stop emails", "Stop texts", "Stop everything"):
                expect(actions.get_by_role("button", name=name)).to_be_visible()
            actions.get_by_role("button", name="Mark as booked").click()
            expect(page.get_by_text("Marked as booked.")).to_be_visible()
            expect(actions.get_by_role("button", name="Mark as booked")).to_have_count(0)
            expect(page.locator("#booked-note")).to_be_visible()
            screenshot(page, "contact-after-booking.png")

            page.goto("/admin")  # the very next view counts it: no minute-old figures
            block = page.locator('section[data-campaign="ketamine-consult"]').first
            expect(block.locator('[data-stage="booked"]')).to_have_text("1")
            expect(page.get_by_text("Each booking counts once, under one step")).to_be_visible()
            screenshot(page, "dashboard-funnel-after-booking.png")

            page.goto("/admin/funnel")
            expect(page.locator('section[data-campaign="ketamine-consult"] [data-stage="booked"]')).to_have_text("1")
            expect(page.locator("svg.trend-chart").first).to_be_visible()
            page.get_by_text("Show the figures per step as a table").first.click()
            row = page.locator("table.funnel-table tr").filter(has_text="4. Welcome sms")
            expect(row).to_contain_text("1 50.0%")  # Alex's booking, under the last text sent, once (of 2 texts)
            screenshot(page, "funnel-page.png")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            assert outside == [] and errors == [], (outside, errors)
            context.close()
    finally:
        rt.close()
