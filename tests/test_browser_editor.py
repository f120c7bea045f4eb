"""The template editor in a real browser: the source is highlighted (the vendored CodeMirror, Jinja tags
marked), "Insert a variable" puts `{{ first_name }}` where the cursor is and the live preview follows,
a problem's "line N" link puts the cursor on that line, and "Save draft" saves what the editor holds.
No request leaves our origin (no CDN). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from support.browser import MARKS, CodeEditor, chromium, screenshot, session_cookie
from support.builders import make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect
NAME = "sms/01-welcome.txt"


def test_marketing_edits_with_highlighting_and_inserts_a_variable(tmp_path, clock):
    from patient_drip.content.claim_library import seed_library
    from patient_drip.content.template_store import sync_from_files
    from patient_drip.models import TemplateVersion
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    settings = make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url)
    rt = build_runtime(settings)
    try:
        with rt.sessions() as session, session.begin():
            sync_from_files(session, settings.templates_dir, clock.now, "drip init")
            seed_library(session, settings.policy_dir, clock.now)
        cookie = session_cookie(rt, clock, url, "marketing")
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
            context.add_cookies([cookie])
            page = context.new_page()
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"/admin/templates/edit/{NAME}")
            expect(page.locator(".CodeMirror")).to_be_visible()
            expect(page.locator(".cm-jinja-variable").first).to_be_visible()  # a {{ … }} is highlighted
            source = CodeEditor(page)
            original = source.input_value()
            assert "{{ booking_link }}" in original

            opening = "Thank you for your consultation request."
            assert opening in original
            source.fill(original.replace(opening, "Hello , thanks for reaching out."))
            expect(page.locator("#preview-sms")).to_contain_text("thanks for reaching out")
            # put the cursor after "Hello " and insert the first name from the list
            line = next(i for i, text in enumerate(source.input_value().splitlines()) if "Hello ," in text)
            page.evaluate(f"window.dripTemplateEditor.setCursor({{line: {line}, ch: "
                          f"window.dripTemplateEditor.getLine({line}).indexOf('Hello ') + 6}})")
            page.get_by_text("Insert a variable").click()
            page.get_by_role("button", name="first_name", exact=True).click()
            assert "Hello {{ first_name }}, thanks for reaching out." in source.input_value()
            expect(page.locator("#preview-sms")).to_contain_text(re.compile(r"Hello \w+, thanks for reaching out"))
            screenshot(page, "editor-highlighted-insert-variable.png")

            # a problem's line link moves the editor's cursor there
            source.fill(source.input_value().replace("{{ booking_link }}", "{{ booking_lnk }}"))
            problem = page.locator("#preview .problems .line-ref").first
            expect(problem).to_be_visible()
            target_line = int(problem.get_attribute("data-line") or "1")
            problem.click()
            assert page.evaluate("window.dripTemplateEditor.getCursor().line") == target_line - 1
            source.fill(source.input_value().replace("{{ booking_lnk }}", "{{ booking_link }}"))
            expect(page.locator("#preview .preview-status.ok")).to_be_visible()

            page.get_by_label("What changed and why").fill("greets by name")
            page.get_by_role("button", name="Save draft").click()
            page.wait_for_url(re.compile(rf"/admin/templates/review/{NAME}\?v=2"))
            assert all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]
            assert errors == [], errors
            context.close()
        with rt.sessions() as session:
            draft = session.scalar(select(TemplateVersion).where(TemplateVersion.name == NAME,
                                                                  TemplateVersion.version == 2))
        assert draft is not None and "Hello {{ first_name }}, thanks for reaching out." in draft.source
    finally:
        rt.close()
