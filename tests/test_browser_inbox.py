"""The text inbox in a real browser: a patient's possible-crisis text arrives (signed, as Twilio signs);
the front desk opens the inbox, sees the crisis thread pinned first, opens it, sees the clinic's
crisis procedure, the tap-to-call links and 988, replies (the conversational rule is shown), sees the
reply on the thread, keeps a note, and marks the thread done. A new text then appears on the open page
without a reload. Screenshots go to test-artifacts/screenshots/ (`-s` prints their paths)."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from twilio.request_validator import RequestValidator

from support.browser import MARKS, PASSWORD, chromium, screenshot
from support.builders import add_contact, make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect
TOKEN = "twilio-token-for-the-inbox-browser-test"


def text_from(web: httpx.Client, url: str, sender: str, body: str, sid: str) -> None:
    """The patient texts the clinic: Twilio's signed inbound webhook, to the live server."""
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TOKEN).compute_signature(f"{url}/webhooks/twilio/sms", params)
    answer = web.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200, answer.text


def test_front_desk_answers_a_crisis_thread_and_sees_new_texts_arrive(tmp_path, clock):
    from patient_drip.accounts.users import create_user
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url,
                                     twilio_auth_token=TOKEN))
    try:
        with rt.sessions() as session, session.begin():
            create_user(session, "frontdesk@example.com", PASSWORD, "staff", clock.now, "test", name="Front desk")
        add_contact(rt, clock.now, email="jordan@example.com", phone="+13125550177", first_name="Jordan")
        add_contact(rt, clock.now, email="alex@example.com", phone="+13125550142", first_name="Alex")
        with LiveApp(rt, clock), httpx.Client(base_url=url) as web, chromium(playwright_api) as browser:
            text_from(web, url, "+13125550177", "is there parking near you?", "SMb1")
            clock.advance(timedelta(minutes=3))
            text_from(web, url, "+13125550142", "I can't do this anymore, I want to die", "SMb2")

            context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto("/admin/login")
            page.get_by_label("Email").fill("frontdesk@example.com")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"/admin/?$"))
            page.get_by_role("link", name="Replies", exact=True).click()
            page.wait_for_url(re.compile(r"/admin/replies$"))
            threads = page.locator("#inbox-threads li.thread")
            expect(threads.first).to_contain_text("Alex")  # the crisis is pinned first, though Jordan waited longer
            expect(threads.first).to_contain_text("possible crisis")
            expect(threads.nth(1)).to_contain_text("Jordan")
            screenshot(page, "inbox-crisis-pinned.png")

            threads.first.get_by_role("link", name="Alex", exact=True).click()
            page.wait_for_url(re.compile(r"/admin/replies/contacts/\d+$"))
            crisis = page.locator(".crisis-panel")
            expect(crisis).to_contain_text("Call the person back now")
            expect(crisis.get_by_role("link", name=re.compile("Call 988"))).to_have_attribute("href", "tel:988")
            expect(crisis.get_by_role("link", name=re.compile("Call Alex"))).to_have_attribute("href", "tel:+13125550142")
            expect(crisis.get_by_role("link", name=re.compile("Call the clinic"))).to_have_attribute(
                "href", "tel:+12175550100")
            expect(page.locator("#reply-rule")).to_contain_text("Conversational reply")
            screenshot(page, "inbox-crisis-thread.png")

            page.get_by_label("Text to Alex").fill("This is the clinic. We are calling you now. You can call or text 988 any time.")
            expect(page.locator("#reply-count")).to_contain_text("of at most 4 segments")
            page.get_by_role("button", name="Send text").click()
            expect(page.get_by_text("Text sent.")).to_be_visible()
            expect(page.locator("#thread-entries .entry-out")).to_contain_text("We are calling you now")
            expect(page.locator("#thread-entries .entry-out")).to_contain_text("Reply by frontdesk@example.com")

            page.get_by_label("Resolve the crisis: what happened").fill("called back, safe, follow-up tomorrow")
            page.get_by_role("button", name="Done, keep sequences paused").click()
            expect(page.get_by_text("Thread done.")).to_be_visible()
            expect(page.locator("#thread-state")).to_have_text("done")
            expect(page.locator(".crisis-panel")).to_have_count(0)
            expect(page.locator("#thread-entries .entry-note")).to_contain_text("called back, safe, follow-up tomorrow")
            screenshot(page, "inbox-thread-done.png")

            # A new text while the page is open: it appears without a reload, and the thread reopens.
            page.evaluate("window.__sameDocument = true")
            clock.advance(timedelta(minutes=10))
            text_from(web, url, "+13125550142", "thank you for calling", "SMb3")
            expect(page.locator("#thread-entries .entry-in").last).to_contain_text("thank you for calling",
                                                                                  timeout=15000)
            expect(page.locator("#thread-live")).to_contain_text("New activity")
            expect(page.locator("#thread-state")).to_have_text("open")  # their text reopened the thread
            assert page.evaluate("window.__sameDocument === true")  # no reload happened
            screenshot(page, "inbox-new-text-live.png")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

            page.goto("/admin/replies")
            page.evaluate("window.__sameDocument = true")
            text_from(web, url, "+13125550177", "also, can I bring my sister?", "SMb4")
            expect(page.locator("#inbox-threads")).to_contain_text("also, can I bring my sister?", timeout=15000)
            assert page.evaluate("window.__sameDocument === true")
            assert errors == [], errors
            context.close()
    finally:
        rt.close()
