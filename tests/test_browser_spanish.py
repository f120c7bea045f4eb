"""The consultation form in a Spanish-speaking browser (Chromium with locale es-MX): the page, its
consent wording and its errors are in Spanish, and the request is stored in Spanish with the
interest chosen. Screenshot in test-artifacts/screenshots/."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from patient_drip.models import ConsentRecord, Contact
from support.browser import MARKS, chromium, screenshot
from support.builders import make_settings
from support.databases import TEMPLATES
from support.live import LiveApp, loopback_url, wait_until

pytestmark = MARKS
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect


def test_a_spanish_browser_fills_in_the_form_in_spanish(tmp_path, clock):
    from patient_drip.runtime import build_runtime

    url = loopback_url()
    rt = build_runtime(make_settings(TEMPLATES.copy_sqlite(tmp_path / "drip.db"), public_url=url))
    try:
        with LiveApp(rt, clock), chromium(playwright_api) as browser:
            context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=url, locale="es-MX")
            page = context.new_page()
            page.goto("/consult")
            expect(page.get_by_role("heading", name="Solicite su consulta gratuita de 15 minutos")).to_be_visible()
            page.get_by_role("button", name="Solicitar mi consulta").click()  # nothing filled in
            expect(page.locator("#error-summary")).to_contain_text("Por favor, díganos su nombre.")
            page.locator("#first_name").fill("Lucía")
            page.locator("#email").fill("lucia@example.com")
            page.get_by_label("Trastorno bipolar").check()
            page.locator('input[name="consent_email"]').check()
            screenshot(page, "consult-es-filled.png")
            page.get_by_role("button", name="Solicitar mi consulta").click()
            expect(page.get_by_role("heading", name="Gracias")).to_be_visible()
            context.close()

        def stored() -> bool:
            with rt.sessions() as session:
                return session.scalar(select(Contact.id).where(Contact.email == "lucia@example.com")) is not None

        wait_until(stored)
        with rt.sessions() as session:
            person = session.scalar(select(Contact).where(Contact.email == "lucia@example.com"))
            record = session.scalar(select(ConsentRecord).where(ConsentRecord.contact_id == person.id))
            assert (person.language, person.interest) == ("es", "bipolar")
            assert record.wording_version == "email-es-v1"
    finally:
        rt.close()
