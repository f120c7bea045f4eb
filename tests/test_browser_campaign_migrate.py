"""Marketing saves a new timing version, previews moving the people already in the sequence, confirms,
and sees them move (issue 13's "editing a live journey safely"), in a real Chromium; and a journey that
branches is drawn with its branches, waits and exits. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import pytest

from support.browser import MARKS, chromium, laptop_page, screenshot, session_cookie
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from support.journeys import BRANCHING, LINEAR, write_campaigns
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect


def test_marketing_moves_in_flight_people_to_a_new_version_after_seeing_the_preview(tmp_path, clock):
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.runtime import build_runtime

    url = loopback_url()  # a port of its own
    campaigns = write_campaigns(tmp_path / "campaigns", LINEAR, BRANCHING)
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url,
                                     campaigns_dir=campaigns))
    try:
        for n, name in enumerate(("Alex", "Sam")):
            add_contact(rt, clock.now, email=f"{name.lower()}@example.com", phone=f"+1312555014{n}",
                        first_name=name, campaign="short-course")
            add_contact(rt, clock.now, email=f"{name.lower()}.j@example.com", phone=f"+1312555015{n}",
                        first_name=name, campaign="listening")
        Dispatcher(rt, "browser-test").run_once(clock.now)  # first steps go; everyone waits further on
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            context, page, errors = laptop_page(browser, url)
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
            context.add_cookies([session_cookie(rt, clock, url, "marketing", name="Morgan Marketing")])

            # The branching journey: a branch, a wait, the rebook path's entry, an exit, a loop.
            page.goto("/admin/campaigns/listening")
            diagram = page.locator("svg.journey-svg")
            expect(diagram.locator("#node-by-interest polygon")).to_be_visible()
            expect(diagram.locator("#node-wait-click")).to_have_attribute("data-waiting", "2")
            expect(diagram.locator("#node-by-interest")).to_contain_text("2 passed")
            expect(diagram.locator("#journey-rebook")).to_contain_text("Cancelled a booking")
            expect(diagram.locator(".journey-back")).to_contain_text("not clicked in 4d")
            expect(page.locator("#row-node-wait-click")).to_contain_text("not clicked in 3d → nudge-email")
            screenshot(page, "journey-branching.png")

            page.goto("/admin/campaigns/short-course")
            expect(page.locator("#people-on-older-versions")).to_contain_text("Everyone in the sequence is on version 1")
            page.get_by_label("middle-email", exact=True).fill("3d")
            page.get_by_label("checkin-email on").uncheck()
            page.get_by_label("Why this change").fill("A day more before the second email; no check-in")
            page.get_by_role("button", name="Save as version 2").click()
            expect(page.locator("#version-in-force")).to_have_text("2")
            offer = page.locator("#older-1")
            expect(offer).to_contain_text("2 people on version 1")
            screenshot(page, "campaign-migrate-offer.png")

            offer.get_by_role("button", name="Move 2 people to version 2…").click()
            expect(page.locator("#people-to-move")).to_have_text("2")
            expect(page.locator("#preview-middle-email")).to_have_attribute("data-later", "2")
            expect(page.locator("#preview-checkin-email")).to_have_attribute("data-skip", "2")
            expect(page.locator("#preview-hello-email")).to_have_attribute("data-receive", "0")
            expect(page.locator("#preview-hello-email")).to_have_attribute("data-repeat", "0")
            expect(page.get_by_text("Nobody repeats a step")).to_be_visible()
            screenshot(page, "campaign-migrate-preview.png")

            page.get_by_label("Why move them").fill("Everyone should get the breather")
            page.get_by_role("button", name="Move 2 people to version 2").click()
            expect(page.get_by_text("Moved to the version in force.")).to_be_visible()
            expect(page.locator("#people-on-older-versions")).to_contain_text("Everyone in the sequence is on version 2")
            expect(page.locator("#older-1")).to_have_count(0)
            # They still wait at the same step; the diagram's figures did not lose anyone.
            expect(page.locator("svg.journey-svg #node-middle-email")).to_have_attribute("data-waiting", "2")
            screenshot(page, "campaign-migrate-done.png")
            assert errors == []
            assert outside == []
            context.close()
    finally:
        rt.close()
