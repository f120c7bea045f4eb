"""Every entry point makes a rule's change through the one service, so the same change gives the
same stored rows whichever way it came: consent (with wording version and exact text), channel
blocks (their kind), enrollment refusals and user changes."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from twilio.request_validator import RequestValidator

from support.builders import ROOT, add_contact, make_settings
from patient_drip import db
from patient_drip.cli import main
from patient_drip.contacts.blocks import suppress
from patient_drip.contacts.double_opt_in import confirmation_text
from patient_drip.contacts.importer import import_csv, import_csv_rowwise
from patient_drip.models import ApiToken, AuditEntry, ConsentRecord, Contact, Enrollment, Event, User
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.web.app import create_app
from support.staff import add_user, sign_in_as, token_for

TWILIO_TOKEN = "twilio-test-token"
EMAIL, PHONE = "dana@example.com", "+13125550188"
WORDING = yaml.safe_load((ROOT / "policy" / "consent_wording.yaml").read_text(encoding="utf-8"))


def current_wording(channel: str) -> tuple[str, str]:
    version = WORDING[channel]["current"]
    return version, " ".join(WORDING[channel]["versions"][version].split())


@pytest.fixture
def art(database_url: str) -> Iterator[Runtime]:
    """A runtime whose Twilio webhooks can be signed."""
    settings = make_settings(database_url, twilio_auth_token=TWILIO_TOKEN)
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def web(art: Runtime, clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(art, clock=clock), base_url="https://clinic.test", follow_redirects=False) as client:
        yield client


@pytest.fixture
def cli(art: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., str]:
    """Run `drip …` against the same database as `art`."""
    env = {"DRIP_DATABASE_URL": art.settings.database_url, "DRIP_PUBLIC_URL": "https://clinic.test",
           "DRIP_CLINIC_NAME": "Riverside Wellness", "DRIP_CLINIC_ADDRESS": "12 River Road, Springfield, IL 62701",
           "DRIP_CLINIC_PHONE": "+1 217 555 0100", "DRIP_CLINIC_TIMEZONE": "America/Chicago", "USER": "tester",
           # The CLI must use the server's keys (the suppression hash is keyed), as in production.
           "DRIP_SECRET_KEY": art.settings.secret_key.get_secret_value()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, expect: int = 0) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result.output

    return run


def sms_in(web: TestClient, body: str, sid: str) -> None:
    params = {"From": PHONE, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature("https://clinic.test/webhooks/twilio/sms", params)
    assert web.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}).status_code == 200


def staff_csrf(web: TestClient, art: Runtime, clock) -> str:  # type: ignore[no-untyped-def]
    return sign_in_as(web, art, add_user(art, "staff"), clock.now)


def contact_id(art: Runtime) -> int:
    with art.sessions() as session:
        found = session.scalar(select(Contact.id).where(Contact.phone == PHONE))
        assert found is not None
        return found


def stored(art: Runtime, cid: int) -> dict[str, Any]:
    """What a rule wrote for one contact, without who did it or how it came (those differ by design)."""
    with art.sessions() as session:
        contact = session.get(Contact, cid)
        assert contact is not None
        return {
            "consent": [(r.channel, r.action, r.wording_version, r.wording_text) for r in session.scalars(
                select(ConsentRecord).where(ConsentRecord.contact_id == cid).order_by(ConsentRecord.id))],
            "state": (contact.email_consent, contact.sms_consent, contact.email_block_reason, contact.sms_block_reason),
            "events": [(e.kind, {k: v for k, v in e.detail.items() if k not in ("actor", "method", "ip", "detail",
                                                                                 "source")})
                       for e in session.scalars(select(Event).where(Event.contact_id == cid).order_by(Event.id))
                       # the CLI runs on the real clock: at night it notes when the first message will go out
                       if e.kind != "message_deferred"],
            "audit": [a.action for a in session.scalars(
                select(AuditEntry).where(AuditEntry.contact_id == cid).order_by(AuditEntry.id))],
            "enrollments": [(e.campaign_id, e.status, e.exit_reason) for e in session.scalars(
                select(Enrollment).where(Enrollment.contact_id == cid).order_by(Enrollment.id))],
        }


CSV = "first_name,email,phone,consent_email,consent_sms\nDana,dana@example.com,+13125550188,yes,yes\n"


def enroll_via(how: str, art: Runtime, web: TestClient, cli: Callable[..., str], clock) -> None:  # type: ignore[no-untyped-def]
    """Create Dana with email and SMS consent and enroll her in ketamine-consult, through `how`."""
    person = {"first_name": "Dana", "email": EMAIL, "phone": PHONE}
    campaign = art.campaign("ketamine-consult")
    if how == "cli":
        cli("enroll", "--campaign", campaign.id, "--email", EMAIL, "--phone", PHONE, "--first-name", "Dana",
            "--consent", "email,sms")
    elif how == "admin":
        csrf = staff_csrf(web, art, clock)
        response = web.post("/admin/contacts/new", data={**person, "campaign": campaign.id, "consent_email": "yes",
                                                          "consent_sms": "yes", "csrf_token": csrf})
        assert response.status_code == 303, response.text
    elif how == "api":
        response = web.post("/api/v1/contacts", headers=token_for(art, "staff"),
                            json={**person, "consent": ["email", "sms"], "campaign": campaign.id})
        assert response.status_code == 201, response.text
    elif how == "form":  # the form, then the number's YES to its one confirmation text (double opt-in)
        response = web.post("/api/consultations", json={**person, "consent_email": "yes", "consent_sms": "yes"})
        assert response.status_code == 202 and response.json() == {"status": "received"}
        sms_in(web, "YES", "SM-confirm")
    else:
        run = import_csv if how == "import" else import_csv_rowwise
        report = run(art, io.StringIO(CSV), campaign, clock.now, "cli:test")
        assert report.enrolled == 1, report.errors


ENTRY_POINTS = ["cli", "admin", "api", "form", "import", "import-rowwise"]


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_consent_from_every_entry_point_records_the_wording_version_and_its_text(how, art, web, cli, clock):
    enroll_via(how, art, web, cli, clock)
    (email_version, email_text), (sms_version, sms_text) = current_wording("email"), current_wording("sms")
    if how == "form":  # texts are granted by the YES, with the exact confirmation text it answered
        shown = confirmation_text(ROOT / "policy", art.settings.sms_brand)
        sms_version, sms_text = shown.version, shown.text
    assert stored(art, contact_id(art)) == {
        "consent": [("email", "granted", email_version, email_text), ("sms", "granted", sms_version, sms_text)],
        "state": (True, True, None, None),
        "events": [("contact_created", {}),
                   ("consent_granted", {"channel": "email", "wording_version": email_version}),
                   ("consent_granted", {"channel": "sms", "wording_version": sms_version}),
                   ("enrolled", {"campaign": "ketamine-consult"})] if how != "form" else [
                   ("contact_created", {}), ("consultation_requested", {}),
                   ("consent_granted", {"channel": "email", "wording_version": email_version}),
                   ("sms_confirmation_sent", {"wording_version": sms_version}),
                   ("enrolled", {"campaign": "ketamine-consult"}),
                   ("sms_reply", {"inbound_id": 1, "reply_kind": "opt_in"}),
                   ("consent_granted", {"channel": "sms", "wording_version": sms_version}),
                   ("sms_confirmed", {"inbound_id": 1, "wording_version": sms_version})],
        "audit": ["consent_granted", "consent_granted", "enrolled"] if how != "form" else [
                  "consent_granted", "enrolled", "consent_granted", "sms_confirmed"],
        "enrollments": [("ketamine-consult", "active", None)],
    }


@pytest.mark.parametrize("how", ENTRY_POINTS)
def test_a_suppressed_address_is_blocked_the_same_way_by_every_entry_point(how, art, web, cli, clock):
    with art.sessions() as session, session.begin():
        suppress(session, art.suppression_key, "email", EMAIL, "hard bounce", clock.now)  # type: ignore[arg-type]
    enroll_via(how, art, web, cli, clock)
    result = stored(art, contact_id(art))
    assert result["state"] == (True, True, "suppressed", None)
    assert ("channel_blocked", {"channel": "email", "reason": "suppressed"}) in result["events"]
    with art.sessions() as session:
        assert session.get(Contact, contact_id(art)).email_blocked == "suppressed: hard bounce"


def unsubscribe_sms_via(how: str, art: Runtime, web: TestClient, cli: Callable[..., str], clock) -> None:  # type: ignore[no-untyped-def]
    cid = contact_id(art)
    if how == "cli":
        cli("unsubscribe", "--phone", PHONE, "--channel", "sms")
    elif how == "admin":
        csrf = staff_csrf(web, art, clock)
        assert web.post(f"/admin/contacts/{cid}/unsubscribe", data={"channel": "sms", "csrf_token": csrf}
                        ).status_code == 303
    elif how == "api":
        assert web.post(f"/api/v1/contacts/{cid}/unsubscribe", headers=token_for(art, "staff"),
                        json={"channel": "sms"}).status_code == 200
    elif how == "preferences":
        page = web.post(f"/u/{art.tokens.unsubscribe(cid)}", data={"action": "sms"})
        assert page.status_code == 200
    else:
        sms_in(web, "STOP", "SM-stop")


@pytest.mark.parametrize("how", ["cli", "admin", "api", "preferences", "sms"])
def test_an_sms_opt_out_from_every_entry_point_blocks_the_channel_as_opted_out(how, art, web, cli, clock):
    add_contact(art, clock.now, email=EMAIL, phone=PHONE)
    before = stored(art, contact_id(art))
    unsubscribe_sms_via(how, art, web, cli, clock)
    after = stored(art, contact_id(art))
    assert after["consent"][len(before["consent"]):] == [("sms", "withdrawn", None, None)]
    assert after["state"] == (True, False, None, "opted_out")
    assert [e for e in after["events"] if e[0] != "sms_reply"][len(before["events"]):] == [
        ("consent_withdrawn", {"channel": "sms"}), ("channel_blocked", {"channel": "sms", "reason": "opted_out"})]
    assert after["audit"][len(before["audit"]):] == ["consent_withdrawn"]
    assert after["enrollments"] == [("ketamine-consult", "active", None)]  # email still reaches her


@pytest.mark.parametrize("how", ["preferences", "sms"])
def test_opting_back_in_records_the_current_wording_and_lifts_only_the_opt_out(how, art, web, cli, clock):
    add_contact(art, clock.now, email=EMAIL, phone=PHONE)
    sms_in(web, "STOP", "SM-stop")
    before = stored(art, contact_id(art))
    if how == "preferences":
        assert web.post(f"/u/{art.tokens.unsubscribe(contact_id(art))}", data={"action": "resubscribe_sms",
                                                                     "wording_version": current_wording("sms")[0]}
                        ).status_code == 200
    else:
        sms_in(web, "START", "SM-start")
    after = stored(art, contact_id(art))
    assert after["consent"][len(before["consent"]):] == [("sms", "granted", *current_wording("sms"))]
    assert after["state"] == (True, True, None, None)
    assert [e for e in after["events"] if e[0] != "sms_reply"][len(before["events"]) - 1:] == [
        ("consent_granted", {"channel": "sms", "wording_version": current_wording("sms")[0]}),
        ("channel_unblocked", {"channel": "sms", "reason": "opted_out"})]


def twilio_failure(web: TestClient, message_id: int, code: str) -> None:
    params = {"MessageSid": "SM-failed", "MessageStatus": "undelivered", "ErrorCode": code}
    url = f"https://clinic.test/webhooks/twilio/status?m={message_id}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    assert web.post(f"/webhooks/twilio/status?m={message_id}", data=params,
                    headers={"X-Twilio-Signature": signature}).status_code == 204


def test_a_permanent_failure_outranks_an_opt_out_and_no_keyword_lifts_it(art, web, clock):
    from support.builders import messages_for
    from patient_drip.dispatch.pipeline import Dispatcher

    cid = add_contact(art, clock.now, email=EMAIL, phone=PHONE)
    Dispatcher(art, "w").run_once(clock.now)
    sms = next(m for m in messages_for(art, cid) if m.channel == "sms")
    sms_in(web, "STOP", "SM-stop")
    twilio_failure(web, sms.id, "21211")
    sms_in(web, "START", "SM-start")
    with art.sessions() as session:
        contact = session.get(Contact, cid)
        assert contact.sms_block_reason == "failed" and "Invalid phone number" in contact.sms_blocked
    assert ("channel_blocked", {"channel": "sms", "reason": "failed"}) in stored(art, cid)["events"]
    assert stored(art, cid)["consent"][-1][:2] == ("sms", "withdrawn")  # START recorded nothing


@pytest.mark.parametrize("how", ["cli", "api", "import", "import-rowwise"])
def test_a_second_enrollment_is_refused_with_the_same_reason_everywhere(how, art, web, cli, clock):
    add_contact(art, clock.now, email=EMAIL, phone=PHONE, first_name="Dana")
    expected = "Dana is already enrolled in ketamine-consult (status active)"
    if how == "cli":
        assert expected in cli("enroll", "--campaign", "ketamine-consult", "--email", EMAIL, expect=1)
    elif how == "api":
        response = web.post(f"/api/v1/contacts/{contact_id(art)}/enroll", headers=token_for(art, "staff"),
                            json={"campaign": "ketamine-consult"})
        assert response.status_code == 409 and expected in response.text
    else:
        run = import_csv if how == "import" else import_csv_rowwise
        report = run(art, io.StringIO(CSV), art.campaign("ketamine-consult"), clock.now, "cli:test")
        assert [e.message for e in report.errors] == [expected]


def test_the_last_active_admin_can_be_neither_disabled_nor_demoted_from_the_cli_or_the_staff_ui(art, web, cli, clock):
    add_user(art, "admin", "boss@clinic.test")
    other = add_user(art, "admin", "second@clinic.test", disabled=True)
    assert "last active admin" in cli("users", "disable", "boss@clinic.test", expect=1)
    assert "last active admin" in cli("users", "role", "boss@clinic.test", "staff", expect=1)
    cli("users", "enable", "second@clinic.test")
    csrf = sign_in_as(web, art, other, clock.now)
    assert web.post(f"/admin/users/{other.id}/disable", data={"csrf_token": csrf}).status_code == 400  # self
    cli("users", "disable", "boss@clinic.test")  # another admin is active now
    assert web.post(f"/admin/users/{other.id}/role", data={"role": "staff", "csrf_token": csrf}).status_code == 400
    with art.sessions() as session:
        users = {u.email: (u.role, u.disabled) for u in session.scalars(select(User))}
        assert users == {"boss@clinic.test": ("admin", True), "second@clinic.test": ("admin", False)}
        actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert actions == ["user_enabled", "user_disabled"]
    # Through the staff UI the acting user is an active admin, so the only "last active admin" a page
    # can target is the actor; the own-account rule refuses that first (above, and in the role test).


def test_migration_0003_gives_existing_blocks_their_kind(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(db.alembic_config(url), "0002")
    texts = ["opted_out (one_click)", "suppressed: hard bounce", "failed: Invalid phone number (code 21211)",
             "bounced", "spam complaint", "dropped: Bounced Address", "erased", "something else"]
    engine = create_engine(url)
    with engine.begin() as connection:
        for index, blocked in enumerate(texts):
            connection.execute(text(
                "INSERT INTO contact (first_name, last_name, email, timezone, source, email_consent, sms_consent, "
                "email_blocked, preferred_channel, created_at, updated_at) VALUES ('', '', :email, 'UTC', '', 0, 0, "
                ":blocked, '', '2026-01-01', '2026-01-01')"), {"email": f"p{index}@example.com", "blocked": blocked})
    db.upgrade(url)
    with engine.connect() as connection:
        kinds = [row[0] for row in connection.execute(text("SELECT email_block_reason FROM contact ORDER BY id"))]
        sms = {row[0] for row in connection.execute(text("SELECT sms_block_reason FROM contact"))}
    engine.dispose()
    assert kinds == ["opted_out", "suppressed", "failed", "bounced", "complained", "dropped", "erased", "failed"]
    assert sms == {None}


def test_an_admin_changes_a_role_from_the_users_page_and_it_is_audited(art, web, clock):
    admin = add_user(art, "admin", "boss@clinic.test")
    staff = add_user(art, "staff", "desk@clinic.test")
    csrf = sign_in_as(web, art, admin, clock.now)
    page = web.get("/admin/users")
    assert f'action="/admin/users/{staff.id}/role"' in page.text
    changed = web.post(f"/admin/users/{staff.id}/role", data={"role": "marketing", "csrf_token": csrf})
    assert changed.status_code == 303
    assert "Role changed." in web.get(changed.headers["location"]).text
    refused = web.post(f"/admin/users/{staff.id}/role", data={"role": "owner", "csrf_token": csrf})
    assert refused.status_code == 400 and "desk@clinic.test:" in refused.text
    add_user(art, "admin", "second@clinic.test")  # so that the last-admin rule is not what refuses
    own = web.post(f"/admin/users/{admin.id}/role", data={"role": "staff", "csrf_token": csrf})
    assert own.status_code == 400 and "cannot change your own role" in own.text
    with art.sessions() as session:
        assert session.scalar(select(User.role).where(User.id == staff.id)) == "marketing"
        assert [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))] == ["user_role_changed"]


@pytest.mark.parametrize("how", ["cli-reset", "ui-reset", "cli-disable", "ui-disable", "own-change"])
def test_a_password_reset_or_disable_ends_the_users_sessions_from_every_entry_point(how, art, web, cli, clock):
    admin = add_user(art, "admin", "boss@clinic.test")
    staff = add_user(art, "staff", "desk@clinic.test")
    with TestClient(create_app(art, clock=clock), base_url="https://clinic.test", follow_redirects=False) as other_device:
        sign_in_as(other_device, art, staff, clock.now)
        assert other_device.get("/admin/contacts", follow_redirects=False).status_code == 200
        if how.startswith("cli"):
            cli("users", "reset-password" if how == "cli-reset" else "disable", "desk@clinic.test")
        elif how == "own-change":
            with TestClient(create_app(art, clock=clock), base_url="https://clinic.test", follow_redirects=False) as this_device:
                csrf = sign_in_as(this_device, art, staff, clock.now)
                changed = this_device.post("/admin/account/password", data={
                    "current": "correct horse battery", "new": "another long passphrase",
                    "confirm": "another long passphrase", "csrf_token": csrf})
                assert changed.status_code == 303
                assert this_device.get("/admin/contacts", follow_redirects=False).status_code == 200  # kept
        else:
            csrf = sign_in_as(web, art, admin, clock.now)
            action = "password" if how == "ui-reset" else "disable"
            assert web.post(f"/admin/users/{staff.id}/{action}", data={"csrf_token": csrf}).status_code in (200, 303)
        stale = other_device.get("/admin/contacts", follow_redirects=False)
        assert stale.status_code == 303 and "/admin/login" in stale.headers["location"]


@pytest.mark.parametrize("contact", ["\u00b2", "9" * 40, "12"])
def test_the_audit_page_filters_by_contact_or_ignores_what_is_no_id(art, web, clock, contact):
    admin = add_user(art, "admin", "boss@clinic.test")
    sign_in_as(web, art, admin, clock.now)
    assert web.get("/admin/audit", params={"contact": contact}).status_code == 200


def test_api_tokens_are_made_limited_and_revoked_through_the_accounts_service(art, web, clock):
    staff = add_user(art, "staff", "desk@clinic.test")
    csrf = sign_in_as(web, art, staff, clock.now)
    made = web.post("/admin/account/tokens", data={"name": "  front   desk ", "scopes": ["contacts:read"],
                                                   "csrf_token": csrf})
    token = re.search(r"drip_[A-Za-z0-9_-]{43}", made.text)
    assert made.status_code == 200 and token is not None
    assert web.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token.group(0)}"}).status_code == 200
    for _ in range(19):
        assert web.post("/admin/account/tokens", data={"scopes": "metrics", "csrf_token": csrf}).status_code == 200
    refused = web.post("/admin/account/tokens", data={"name": "one too many", "scopes": "metrics", "csrf_token": csrf})
    assert refused.status_code == 400 and "You already have 20 tokens; revoke one." in refused.text
    with art.sessions() as session:
        first = session.scalar(select(ApiToken).where(ApiToken.name == "front desk"))
        assert first is not None and first.token_hash != token.group(0)  # only the digest is stored
    assert web.post(f"/admin/account/tokens/{first.id}/revoke", data={"csrf_token": csrf}).status_code == 303
    assert web.get("/api/v1/contacts", headers={"Authorization": f"Bearer {token.group(0)}"}).status_code == 401
    with art.sessions() as session:
        actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions.count("api_token_created") == 20 and actions.count("api_token_revoked") == 1
