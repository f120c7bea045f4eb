"""The staff navigation in a real browser: on a laptop (1280 px) the bar is one row for every role —
the administrator's pages share one "Admin" entry that opens and closes like a menu; on a phone
(390 px) the links fold behind a "Menu" button. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest

from support.browser import MARKS, chromium, screenshot, session_cookie
from support.builders import make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect
ROLES = ("admin", "staff", "marketing", "clinician")


def test_the_bar_is_one_row_on_a_laptop_and_folds_on_a_phone(tmp_path, clock):
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url))
    try:
        cookies = {role: session_cookie(rt, clock, url, role, name="Dr. Jennifer Okonkwo-Smith" if role == "admin"
                                        else "") for role in ROLES}
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            for role in ROLES:
                context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=url)
                context.add_cookies([cookies[role]])
                page = context.new_page()
                page.goto("/admin")
                expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
                expect(page.get_by_role("button", name="Menu")).to_be_hidden()
                tops = page.eval_on_selector_all("#mainnav > ul > li", "items => items.map(i => i.offsetTop)")
                assert len(set(tops)) == 1, (role, tops)  # every entry on the same row
                bar = page.locator(".topbar-inner").bounding_box()
                assert bar is not None and bar["height"] < 70, (role, bar)  # brand, nav and account in one row
                if role == "admin":
                    expect(page.get_by_role("link", name="Users")).to_be_hidden()
                    page.locator("#mainnav .nav-group summary").click()
                    expect(page.get_by_role("link", name="Audit log")).to_be_visible()
                    screenshot(page, "nav-laptop-admin-open.png")
                    page.get_by_role("heading", name="Dashboard").click()  # a click elsewhere closes it
                    expect(page.get_by_role("link", name="Audit log")).to_be_hidden()
                    page.locator("#mainnav .nav-group summary").click()
                    page.locator("#mainnav").get_by_role("link", name="Users").click()
                    page.wait_for_url(re.compile(r"/admin/users$"))
                    expect(page.locator(".nav-group details.current > summary")).to_have_text("Admin")
                else:
                    expect(page.locator("#mainnav .nav-group")).to_have_count(0)
                screenshot(page, f"nav-laptop-{role}.png")
                context.close()

            context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=url, is_mobile=True)
            context.add_cookies([cookies["admin"]])
            page = context.new_page()
            page.goto("/admin")
            menu = page.get_by_role("button", name="Menu")
            expect(menu).to_be_visible()
            expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            screenshot(page, "nav-phone-closed.png")
            menu.click()
            expect(menu).to_have_attribute("aria-expanded", "true")
            nav = page.get_by_role("navigation", name="Main")
            expect(nav.get_by_role("link", name="To do")).to_be_visible()
            screenshot(page, "nav-phone-open.png")
            nav.get_by_role("link", name="Contacts", exact=True).click()
            page.wait_for_url(re.compile(r"/admin/contacts$"))
            page.locator(".usermenu summary").click()  # the user's menu: account and sign out
            expect(page.get_by_role("link", name="Your account")).to_be_visible()
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url(re.compile(r"/admin/login"))
            context.close()
    finally:
        rt.close()
