"""What every browser test shares: Debian's Chromium driven by Playwright, headless, and where the
screenshots go. Each test module still calls `pytest.importorskip("playwright.sync_api")` itself, so a
machine without Playwright skips them with one clear reason."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.builders import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "browser-test-password"
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium "
                                                     "(apt-get install chromium); browser tests skipped"),
]


@contextmanager
def chromium(playwright_api: Any) -> Iterator[Any]:
    """A launched headless Chromium, closed afterwards."""
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact and print its path (`-s` shows it)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / name
    page.screenshot(path=str(target), full_page=True)
    print(f"screenshot: {target}")
    return target


def session_cookie(rt: Any, clock: Any, url: str, role: str, *, email: str | None = None, name: str = "") -> dict[str, str]:
    """A new user with `role` (two-step sign-in already set up, so admins and clinicians need not enrol)
    and a browser cookie for a signed-in session of theirs — for tests about a page, not about sign-in
    (`tests/test_browser.py` signs in through the forms)."""
    import pyotp

    from patient_drip.accounts.users import create_user
    from patient_drip.web.admin.auth import SESSION_COOKIE, issue_session

    with rt.sessions() as session, session.begin():
        user = create_user(session, email or f"{role}@example.com", PASSWORD, role, clock.now, "test",
                           name=name or f"{role.capitalize()} user")
        user.totp_secret, user.mfa_enabled_at = pyotp.random_base32(), clock.now
        session.flush()
        return {"name": SESSION_COOKIE, "value": issue_session(rt, session, user, clock.now), "url": url}


class CodeEditor:
    """The template editor's source as a person edits it: click into the highlighting editor, select
    all, type (paste) the new text. Falls back to the plain textarea when the editor did not load."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def input_value(self) -> str:
        return str(self.page.evaluate(
            "window.dripTemplateEditor ? window.dripTemplateEditor.getValue() : document.getElementById('source').value"))

    def fill(self, text: str) -> None:
        if not self.page.evaluate("!!window.dripTemplateEditor"):
            self.page.get_by_label("Template source").fill(text)
            return
        self.page.locator(".CodeMirror").click()
        self.page.wait_for_selector(".CodeMirror-focused")  # keys typed before the editor has focus go elsewhere
        self.page.keyboard.press("Control+A")
        self.page.keyboard.insert_text(text)


def laptop_page(browser: Any, url: str) -> tuple[Any, Any, list[str]]:
    """A new laptop-sized (1280 × 860) context and page on `url`, and the list the page's console
    errors are collected in. Returns (context, page, errors)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=url)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return context, page, errors


def sign_in_with_password(page: Any, email: str, password: str = PASSWORD) -> None:
    """Sign in through the form as a user without two-step sign-in, ending on the dashboard."""
    import re

    page.goto("/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/admin/?$"))
