"""The staff UI in a real browser: Playwright drives Debian's Chromium against a real uvicorn server
on a free port (SQLite file database). Each step saves a screenshot to test-artifacts/screenshots/.

Run: `python -m pytest tests/test_browser.py -m browser -s` (the paths of the screenshots are printed).
Skipped when /usr/bin/chromium is not installed (`apt-get install chromium`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest

from support.browser import MARKS, PASSWORD, SHOTS, CodeEditor, chromium
from support.builders import ROOT
from support.staff import add_user, next_totp_time, totp_code

pytestmark = MARKS

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect

LAPTOP = {"width": 1280, "height": 860}
TABLET = {"width": 768, "height": 1024}


@dataclass
class LiveServer:
    url: str
    rt: object
    clock: object


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from patient_drip.accounts.users import create_user
    from patient_drip.content.claim_library import seed_library
    from patient_drip.content.template_store import sync_from_files
    from patient_drip.runtime import build_runtime
    from support.builders import VirtualClock, make_settings
    from support.databases import TEMPLATES
    from support.live import LiveApp, loopback_url

    url = loopback_url()
    settings = make_settings(TEMPLATES.copy_sqlite(tmp_path_factory.mktemp("browser") / "drip.db"), public_url=url)
    rt = build_runtime(settings)
    clock = VirtualClock()  # a Monday morning in the clinic's zone: inside the send window
    with rt.sessions() as session, session.begin():
        sync_from_files(session, settings.templates_dir, clock.now, "drip init")
        seed_library(session, settings.policy_dir, clock.now)
        for role, email in (("admin", "admin@example.com"), ("staff", "frontdesk@example.com"),
                            ("marketing", "marketing@example.com"), ("clinician", "dr.kim@example.com")):
            create_user(session, email, PASSWORD, role, clock.now, "drip init", name=role.capitalize())
    with LiveApp(rt, clock):
        yield LiveServer(url, rt, clock)
    rt.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium(playwright_api) as instance:
        yield instance


@pytest.fixture
def page(browser, server):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=LAPTOP, base_url=server.url)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # "Stop everything?" confirmations
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("response", lambda response: errors.append(f"{response.status} {response.url}")
           if response.status >= 400 else None)
    tab.console_errors = errors  # type: ignore[attr-defined]
    yield tab
    context.close()


def shot(page, name: str, *, full_page: bool = True) -> Path:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = SHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=full_page)
    print(f"screenshot: {target}")
    return target


def sign_in(page, email: str, server: LiveServer | None = None) -> None:  # type: ignore[no-untyped-def]
    """Sign in through the form; for a user with two-step sign-in, type the code their app would show
    (pyotp on the server's virtual clock), and for an admin or clinician without it, enrol first."""
    page.goto("/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/admin/?$|/admin/login/code|/admin/account/mfa"))
    if "/admin/account/mfa" in page.url:
        assert server is not None, f"{email} must enrol a second factor: pass the server"
        secret = page.locator("#totp-secret").inner_text()
        page.get_by_label("Code from your app").fill(pyotp.TOTP(secret).at(server.clock.now))
        page.get_by_role("button", name="Turn on two-step sign-in").click()
        expect(page.locator("#recovery-codes li")).to_have_count(10)
        page.goto("/admin")
    elif "/admin/login/code" in page.url:
        assert server is not None, f"{email} has two-step sign-in: pass the server"
        user_id = _user_id(server, email)
        server.clock.set(next_totp_time(server.rt, user_id, server.clock.now))  # a code is accepted once
        page.get_by_label("Code").fill(totp_code(server.rt, user_id, server.clock.now))
        page.get_by_role("button", name="Verify").click()
        page.wait_for_url(re.compile(r"/admin/?$"))


def _user_id(server: LiveServer, email: str) -> int:
    from sqlalchemy import select

    from patient_drip.models import User

    with server.rt.sessions() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(User.id).where(User.email == email)))


def nav(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def sign_out(page) -> None:  # type: ignore[no-untyped-def]
    page.locator(".usermenu summary").click()  # the signed-in user's menu
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/admin/login"))


def test_front_desk_enrolls_a_contact_reads_its_timeline_and_unsubscribes_it(page, server):
    from patient_drip.dispatch.pipeline import Dispatcher

    page.goto("/admin/login")
    shot(page, "01-login")
    sign_in(page, "frontdesk@example.com")
    nav(page, "Enroll")
    page.get_by_label("First name").fill("Dana")
    page.get_by_label("Last name").fill("Reyes")
    page.get_by_label("Email", exact=True).fill("dana.reyes@example.com")
    page.get_by_label("Mobile number").fill("(312) 555-0188")
    page.get_by_role("checkbox", name=re.compile("Emails")).check()
    page.get_by_role("checkbox", name=re.compile("Text messages")).check()
    shot(page, "02-enroll-form")
    page.get_by_role("button", name="Enroll").click()
    page.wait_for_url(re.compile(r"/admin/contacts/\d+"))
    assert "Enrolled." in page.locator(".notice").inner_text()

    Dispatcher(server.rt, "browser-test").run_once(server.clock.now)  # the scheduler's next tick
    page.reload()
    timeline = page.locator(".timeline")
    assert "Email: Your consultation request" in timeline.inner_text()
    assert "Enrolled" in timeline.inner_text() and "Email consent given" in timeline.inner_text()
    shot(page, "03-contact-timeline")

    page.locator(".tl-message", has_text="Email:").get_by_role("link", name="Open").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+"))
    frame = page.frame_locator("iframe.email-frame")
    assert "Thank you for reaching out" in frame.locator("body").inner_text()
    shot(page, "04-message-as-sent")
    page.go_back()

    page.get_by_role("button", name="Stop everything").click()
    page.wait_for_url(re.compile(r"done=unsubscribed"))
    assert "Unsubscribed." in page.locator(".notice").inner_text()
    assert "Unsubscribed" in page.locator("#enr-h + .table-wrap").inner_text()  # the state in words
    shot(page, "05-contact-unsubscribed")

    nav(page, "Contacts")
    page.get_by_label("Search by last name, email or phone").fill("rey")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("link", name="Dana Reyes").is_visible()
    shot(page, "06-contacts-search")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_marketing_edits_a_template_with_live_preview_and_a_clinician_makes_it_live(page, server):
    sign_in(page, "marketing@example.com")
    nav(page, "Templates")
    shot(page, "07-templates")
    page.goto("/admin/templates/edit/sms/01-welcome.txt")
    source = CodeEditor(page)
    original = source.input_value()
    changed = original.replace("Thank you for your consultation request.", "Thanks for reaching out to us today.")
    assert changed != original
    source.fill(changed)
    expect(page.locator("#preview-sms")).to_contain_text("Thanks for reaching out")  # the live preview
    expect(page.locator("#sms-info")).to_contain_text("GSM-7")
    shot(page, "08-editor-sms-live-preview")

    # A problem appears inline while typing, and goes away when fixed.
    source.fill(changed.replace("{{ booking_link }}", "{{ booking_lnk }}"))
    expect(page.locator("#preview .problems")).to_contain_text("booking_lnk")
    shot(page, "09-editor-inline-error")
    source.fill(changed)
    expect(page.locator("#preview .preview-status.ok")).to_be_visible()
    page.get_by_label("What changed and why").fill("warmer opening")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/admin/templates/review/sms/01-welcome.txt\?v=2"))
    assert "waiting for a clinician" in page.content()
    shot(page, "10-draft-saved")

    page.goto("/admin/templates/edit/email/02-stress-brain.html")
    for width in ("desktop", "phone"):
        expect(page.frame_locator(f"iframe.email-frame.{width}").locator("h1")).to_contain_text("chronic stress")
    shot(page, "11-editor-email-desktop")
    # Full-page captures leave out-of-process (sandboxed) frames below the fold blank: scroll to it.
    page.locator("iframe.email-frame.phone").scroll_into_view_if_needed()
    shot(page, "11b-editor-email-phone", full_page=False)
    sign_out(page)

    sign_in(page, "dr.kim@example.com", server)
    nav(page, "Templates")
    page.get_by_role("link", name="sms/01-welcome.txt version 2").click()
    # the word-level diff of the rendered text (the source's line diff is folded below it)
    expect(page.locator("#word-diff ins.w-add").first).to_contain_text("Thanks")
    assert "+" in (page.locator("pre.diff").text_content() or "")
    shot(page, "12-clinician-review")
    page.get_by_role("button", name="Approve and make live").click()
    page.wait_for_url(re.compile(r"done=approved"))
    assert "now live" in page.locator(".notice").inner_text()
    shot(page, "13-approved-live")

    page.goto("/admin/campaigns/ketamine-consult")
    assert "Thanks for reaching out to us today." in page.locator("#msg-welcome-sms").inner_text()
    shot(page, "14-campaign-timeline")
    page.goto("/admin/templates/history/sms/01-welcome.txt")
    shot(page, "15-template-history")


def test_a_new_medical_claim_is_reviewed_rejected_and_approved_by_a_clinician(page, server):
    """Issue 12 as a clinician sees it: marketing's "cures depression" is refused and a new claim is
    flagged; the clinician sees the words highlighted, rejects with a reason; the next draft says its
    parent was rejected; the clinician adds the claim to the library and approves."""
    name = "email/05-consultation.html"
    anchor = "Thank you for reading our messages."
    claim = "Most patients feel calmer after their first infusion."
    sign_in(page, "marketing@example.com")
    page.goto(f"/admin/templates/edit/{name}")
    source = CodeEditor(page)
    original = source.input_value()
    source.fill(original.replace(anchor, f"{anchor} Ketamine cures depression in one session."))
    expect(page.locator("#preview .problems")).to_contain_text("promises a cure")
    shot(page, "40-editor-cures-refused")
    source.fill(original.replace(anchor, f"{anchor} {claim}"))
    expect(page.locator("#preview #new-claims")).to_contain_text("new claim — needs clinical review")
    expect(page.locator("#preview-status")).not_to_contain_text("No problems found")
    shot(page, "41-editor-new-claim-flagged")
    page.get_by_label("What changed and why").fill("reassure about the first visit")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"/admin/templates/review/email/05-consultation.html\?v=2"))
    sign_out(page)

    sign_in(page, "dr.kim@example.com", server)
    page.goto(f"/admin/templates/review/{name}?v=2")
    highlighted = page.locator("#word-diff ins.claim-new")
    expect(highlighted).to_contain_text(claim)
    assert page.locator("#word-diff").inner_text().count("<") == 0  # rendered text, not markup
    expect(page.get_by_role("button", name="Approve and make live")).to_be_disabled()
    shot(page, "42-clinician-review-highlighted")
    page.get_by_label("Reason for rejecting (required)").fill("We have no source for this; say what the page says.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_url(re.compile(r"done=rejected"))
    expect(page.locator("#rejected-reason")).to_contain_text("no source for this")
    shot(page, "43-rejected-with-reason")
    sign_out(page)

    sign_in(page, "marketing@example.com")
    page.goto(f"/admin/templates/review/{name}?v=2")
    page.get_by_role("link", name="Edit a new draft from this version").click()
    expect(page.locator("#rejected-base")).to_contain_text("no source for this")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url(re.compile(r"v=3"))
    sign_out(page)

    sign_in(page, "dr.kim@example.com", server)
    page.goto(f"/admin/templates/review/{name}?v=3")
    expect(page.locator("#rejected-parent")).to_contain_text("built on version 2, which dr.kim@example.com rejected")
    shot(page, "44-child-of-rejected-draft")
    form = page.locator("#claims-review form.claim-add").first
    form.get_by_label("a citation:").check()
    form.get_by_label("Source").fill("Clinic patient survey 2025 (internal)")
    form.get_by_role("button", name="Add to the claims library").click()
    page.wait_for_url(re.compile(r"done=claim_added"))
    expect(page.get_by_role("button", name="Approve and make live")).to_be_enabled()
    shot(page, "45-claim-added-approve-enabled")
    page.get_by_role("button", name="Approve and make live").click()
    page.wait_for_url(re.compile(r"done=approved"))
    nav(page, "Claims")
    expect(page.locator("#claims-table")).to_contain_text(claim)
    expect(page.locator("#claims-table")).to_contain_text("Clinic patient survey 2025")
    shot(page, "46-claims-library", full_page=False)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_staff_imports_a_csv_with_one_bad_row(page, server, tmp_path):
    csv_file = tmp_path / "leads.csv"
    rows = ["first_name,last_name,email,phone,consent_email,consent_sms"]
    rows += [f"Lead{i},Import,lead{i}@example.com,,yes,no" for i in range(40)]
    rows.insert(5, "Broken,Row,not-an-email,,yes,no")
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sign_in(page, "frontdesk@example.com")
    nav(page, "Import")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Upload and preview").click()
    assert "41 rows" in page.content() and page.locator(".preview-table tbody tr").count() == 5
    expect(page.get_by_label("email", exact=True)).to_have_value("email")  # recognised and chosen
    shot(page, "16-import-preview")
    page.get_by_role("button", name=re.compile(r"Check all 41 rows")).click()
    expect(page.locator("#check-ready")).to_have_text("40")
    expect(page.locator("#check-problems")).to_have_text("1")
    shot(page, "16b-import-checked")
    page.get_by_role("button", name=re.compile(r"Import 40 rows")).click()
    page.wait_for_selector("#import-result", timeout=20_000)  # the script polls, then shows the report
    assert page.locator("#import-failed").inner_text() == "1"
    assert "not-an-email" in page.locator("table.errors").inner_text() or \
        "email" in page.locator("table.errors").inner_text()
    assert page.locator("table.errors tbody tr").count() == 1
    assert page.locator("table.errors tbody th").inner_text() == "6"
    shot(page, "17-import-report")


def test_every_page_renders_for_an_admin_at_laptop_and_tablet_width(page, server):
    from support.builders import add_contact
    from patient_drip.dispatch.pipeline import Dispatcher
    from patient_drip.models import InboundMessage

    moment = server.clock.now
    contact_id = add_contact(server.rt, moment, email="alex.crisis@example.com", phone="+13125550177")
    Dispatcher(server.rt, "browser-test").run_once(moment)
    with server.rt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550177", body="I don't want to be here "
                                   "anymore", classification="crisis", crisis=True, received_at=moment))
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550177", body="Do you take insurance?",
                                   classification="other", received_at=moment - timedelta(minutes=3)))
    sign_in(page, "admin@example.com", server)
    pages = [("18-dashboard", "/admin"), ("19-replies", "/admin/replies"), ("20-contacts", "/admin/contacts"),
             ("21-campaigns", "/admin/campaigns"), ("22-users", "/admin/users"), ("23-audit-log", "/admin/audit"),
             ("24-settings", "/admin/settings"), ("25-account", "/admin/account"),
             ("26-import", "/admin/import")]
    add_user(server.rt, "staff", "desk@clinic.test")  # a row with controls (one's own row has none)
    for name, path in pages:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        # Row controls stay in view: a table that scrolls sideways at laptop width hides them.
        assert page.evaluate("[...document.querySelectorAll('.table-wrap')].every("
                             "w => w.scrollWidth <= w.clientWidth + 1)"), path
        shot(page, name)
    assert page.console_errors == []  # type: ignore[attr-defined]  # no CSP violations or script errors
    page.goto("/admin")
    assert page.locator("svg.funnel-chart").count() >= 1
    page.set_viewport_size(TABLET)
    for name, path in (("27-tablet-dashboard", "/admin"), ("28-tablet-contact", f"/admin/contacts/{contact_id}"),
                       ("29-tablet-editor", "/admin/templates/edit/email/01-welcome.html")):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
        shot(page, name)


def test_keyboard_only_sign_in_and_navigation(page, server):
    page.goto("/admin/login")
    assert page.evaluate("document.activeElement.id") == "f-email"  # autofocus: type at once
    page.keyboard.type("frontdesk@example.com")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-password"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/admin/?$"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Skip to content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.closest('main') !== null")
    assert focused  # the skip link jumps past the navigation
    for _ in range(3):  # the navigation is reachable too, in order
        page.keyboard.press("Shift+Tab")
    shot(page, "30-keyboard-focus", full_page=False)


def _password_step(page, email: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto("/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_clinician_sets_up_two_step_sign_in_uses_a_recovery_code_and_resets_a_forgotten_password(page, server):
    from patient_drip.accounts.users import create_user
    from patient_drip.providers.types import Channel
    from support.live import wait_until

    email = "dr.lee@example.com"
    with server.rt.sessions() as session, session.begin():
        create_user(session, email, PASSWORD, "clinician", server.clock.now, "drip init", name="Dr Lee")
    _password_step(page, email)
    page.wait_for_url(re.compile(r"/admin/account/mfa$"))  # a clinician must enrol before anything else
    expect(page.locator(".qr svg")).to_be_visible()
    shot(page, "40-mfa-enrol")
    page.goto("/admin/templates")
    assert page.url.endswith("/admin/account/mfa")
    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("Code from your app").fill("000000")
    page.get_by_role("button", name="Turn on two-step sign-in").click()
    expect(page.locator(".error")).to_contain_text("does not match")
    page.get_by_label("Code from your app").fill(pyotp.TOTP(secret).at(server.clock.now))
    page.get_by_role("button", name="Turn on two-step sign-in").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    codes = page.locator("#recovery-codes code").all_inner_texts()
    shot(page, "41-recovery-codes")
    page.goto("/admin/templates")
    assert page.url.endswith("/admin/templates")
    sign_out(page)

    _password_step(page, email)  # the authenticator app's code
    page.wait_for_url(re.compile(r"/admin/login/code"))
    shot(page, "42-code-step")
    server.clock.advance(timedelta(seconds=30))  # the enrolment used this step's code
    page.get_by_label("Code").fill(pyotp.TOTP(secret).at(server.clock.now))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(r"/admin/?$"))
    sign_out(page)

    _password_step(page, email)  # a lost phone: a recovery code, once
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(r"/admin/?$"))
    sign_out(page)
    _password_step(page, email)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("already used")
    shot(page, "43-recovery-code-spent")

    page.goto("/admin/login")  # forgot the password: the emailed link, from the outbox
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a link").click()
    expect(page.get_by_role("status")).to_contain_text("If that address belongs to a staff account")
    shot(page, "44-forgot-sent")
    outbox = server.rt.senders[Channel.EMAIL]  # type: ignore[attr-defined]
    wait_until(lambda: any(m.to == email for m in outbox.recorded))
    text = [m.text for m in outbox.recorded if m.to == email][-1]
    link = re.search(r"https?://\S+(/admin/login/reset\?token=\S+)", text).group(1)
    page.goto(link)
    page.get_by_label("New password (").fill("1234567890")
    page.get_by_label("New password again").fill("1234567890")
    page.get_by_role("button", name="Set new password").click()
    expect(page.locator(".error")).to_contain_text("at least 12 characters")
    shot(page, "45-reset-weak-refused")
    page.get_by_label("New password (").fill("walk the dog at dawn")
    page.get_by_label("New password again").fill("walk the dog at dawn")
    page.get_by_role("button", name="Set new password").click()
    page.wait_for_url(re.compile(r"/admin/login\?done=password_reset"))
    shot(page, "46-reset-done")
    _password_step(page, email, "walk the dog at dawn")
    server.clock.advance(timedelta(seconds=30))
    page.get_by_label("Code").fill(pyotp.TOTP(secret).at(server.clock.now))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(r"/admin/?$"))
    page.goto(link)  # the link worked once
    expect(page.get_by_role("alert")).to_contain_text("already used")
    expected = re.compile(r"^(40[01]|422) |status of (40[01]|422) ")  # the refusals this walk provoked
    assert not [e for e in page.console_errors if not expected.search(e)], page.console_errors
