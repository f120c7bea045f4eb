"""Marketing changes a step's timing and sees the diagram (issue 14's browser path, issue 13's timing
versions) in a real Chromium: the campaign page draws the journey with live counts, the timing form
shows every problem at once, and a saved change appears as a new version in the history and as the
diagram's new wait. Screenshots go to test-artifacts/screenshots/ (`-s` prints their paths)."""

from __future__ import annotations

import pytest

from support.browser import MARKS, chromium, laptop_page, screenshot, session_cookie
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect


def test_marketing_changes_a_steps_timing_and_sees_the_diagram(tmp_path, clock):
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url))
    try:
        add_contact(rt, clock.now, email="alex@example.com", phone="+13125550142", first_name="Alex")
        add_contact(rt, clock.now, email="sam@example.com", phone="+13125550143", first_name="Sam")
        Dispatcher(rt, "browser-test").run_once(clock.now)  # both welcomes go; both wait for day 2's check
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            context, page, errors = laptop_page(browser, url)
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
            context.add_cookies([session_cookie(rt, clock, url, "marketing", name="Morgan Marketing")])
            page.goto("/admin/campaigns/ketamine-consult")

            diagram = page.locator("svg.journey-svg")
            expect(diagram).to_be_visible()
            expect(diagram.locator("#node-welcome-email")).to_have_attribute("data-sent", "2")
            expect(diagram.locator("#node-check-day-2")).to_have_attribute("data-waiting", "2")
            expect(diagram.locator("#node-check-day-2")).to_contain_text("2 waiting")
            expect(diagram.locator("#node-choose-welcome")).to_be_visible()  # the interest branch
            expect(diagram.locator("#node-stress-brain-email")).to_contain_text("2d after enrolling")
            expect(page.locator("#version-in-force")).to_have_text("1")
            screenshot(page, "campaign-journey.png")

            # Two mistakes at once: both are listed, nothing is saved.
            page.get_by_label("stress-brain-email", exact=True).fill("soon")
            page.get_by_role("button", name="Save as version 2").click()
            summary = page.locator("#error-summary")
            expect(summary.locator("li")).to_have_count(2)
            expect(summary).to_contain_text("stress-brain-email")
            expect(summary).to_contain_text("say why the timing changes")
            expect(page.locator("#version-in-force")).to_have_text("1")
            screenshot(page, "campaign-timing-errors.png")

            page.get_by_label("stress-brain-email", exact=True).fill("3d")
            page.get_by_label("Why this change").fill("Day 3 gives people a breather")
            page.get_by_role("button", name="Save as version 2").click()
            expect(page.get_by_text("Timing saved as a new version.")).to_be_visible()
            expect(page.locator("#version-in-force")).to_have_text("2")
            row = page.locator("#version-2")
            expect(row).to_contain_text("Day 3 gives people a breather")
            expect(row).to_contain_text("marketing@example.com")
            expect(row).to_contain_text("stress-brain-email: 2d → 3d")
            expect(diagram.locator("#node-stress-brain-email")).to_contain_text("3d after enrolling")
            # The two already in the journey still wait where they were, on their own version's timing.
            expect(diagram.locator("#node-check-day-2")).to_have_attribute("data-waiting", "2")
            screenshot(page, "campaign-timing-saved.png")
            # The refused form answers 400 (the browser logs that); nothing else may fail.
            assert [e for e in errors if "status of 400" not in e] == []
            assert outside == []
            context.close()
    finally:
        rt.close()
