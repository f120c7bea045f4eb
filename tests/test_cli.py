"""The `drip` commands, through click's CliRunner with settings from the environment."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from patient_drip.cli import main
from patient_drip.content.campaign import load_campaigns
from patient_drip.content.discretion import plain_text_opening
from patient_drip.content.first_sms import sms_frequency
from patient_drip.content.guard import load_policy
from patient_drip.content.rendering import sms_info
from patient_drip.content.simulate import simulate_campaign
from patient_drip.settings import load_settings
from support.builders import ROOT, START
from support.experiments import add_people

CONTENT_RULE_TERMS = ("depress", "bipolar", "mdd", "mania", "manic", "ketamine", "antidepress", "infusion", "suicid")


@pytest.fixture
def env(empty_database_url, tmp_path, monkeypatch):
    # Empty: these tests run `drip init` on a new installation (or a command before it).
    values = {
        "DRIP_DATABASE_URL": empty_database_url, "DRIP_PUBLIC_URL": "https://clinic.test", "DRIP_CLINIC_NAME": "Riverside Wellness",
        "DRIP_CLINIC_ADDRESS": "12 River Road, Springfield, IL 62701", "DRIP_CLINIC_PHONE": "+1 217 555 0100",
        # PostgreSQL has no place beside the database for the key file: every process is told where it is.
        "DRIP_SECRET_KEY_FILE": str(tmp_path / "drip.key"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env; paths must not depend on the working directory
    return values


def run(*args: str, expect: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_init_twice_is_harmless_and_creates_an_admin_once(env):
    first = run("init")
    assert "first admin created: admin@example.com" in first.output
    second = run("init")
    assert "admin user exists" in second.output


def test_init_loads_the_claims_library_once_and_an_admin_can_be_made_a_clinician(env):
    first = run("init")
    assert re.search(r"claims library: \d{3} approved claims loaded", first.output)
    # the safety paragraph of two emails, in English and in Spanish, for clinical review
    assert "4 changed file(s) saved as drafts" in first.output
    assert "claims library: in place" in run("init").output
    assert "now holds the clinician's duties" in run("users", "clinician", "admin@example.com").output
    assert "no longer holds" in run("users", "clinician", "admin@example.com", "--off").output


def test_enroll_send_due_stats_and_unsubscribe(env):
    run("init")
    result = run("enroll", "--campaign", "ketamine-consult", "--email", "Pat@Example.com", "--phone", "312-555-0142",
                 "--first-name", "Pat", "--consent", "email,sms")
    assert "enrolled contact 1 (new)" in result.output
    run("send-due")
    stats = json.loads(run("stats", "--format", "json").output)
    assert stats[0]["campaign"] == "ketamine-consult" and stats[0]["enrolled"] == 1
    run("unsubscribe", "--email", "pat@example.com")
    again = run("enroll", "--campaign", "ketamine-consult", "--email", "pat@example.com", expect=1)
    assert "already enrolled" in again.output


def test_stats_shows_each_ab_step_and_the_holdout_and_keeps_the_old_keys(env):
    run("init")
    engine = create_engine(env["DRIP_DATABASE_URL"], poolclass=NullPool)
    with Session(engine) as session, session.begin():
        ab = {"campaign": "ketamine-consult", "step": "welcome-email"}
        add_people(session, START, 30, variant="A", **ab)
        add_people(session, START, 25, variant="B", **ab)
        add_people(session, START, 5, variant="B", booked="after", clicked=True, **ab)
        add_people(session, START, 3, campaign="ketamine-consult", holdout=True)
    engine.dispose()
    campaign = json.loads(run("stats", "--format", "json").output)[0]
    assert {"campaign", "enrolled", "active", "completed", "booked", "unsubscribed", "other_exits", "steps",
            "booking_rate"} <= set(campaign)
    # 0/30 against 5/30: pooled p = 5/60; se = sqrt(5/60 * 55/60 * (2/30)) = 0.071362; z = 0.16667 / 0.071362
    # = 2.3355; p = 0.0195: 30 a side and 5 bookings, just enough for a verdict.
    assert campaign["experiments"] == [{
        "step": "welcome-email",
        "variants": [{"variant": "A", "sent": 30, "clicked": 0, "booked": 0, "booking_rate": 0.0},
                     {"variant": "B", "sent": 30, "clicked": 5, "booked": 5, "booking_rate": 0.1667}],
        "p_value": 0.0195, "verdict": "B books more, 95% confidence"}]
    holdout = campaign["holdout"]
    assert holdout["holdout"] == {"enrolled": 3, "booked": 0, "booking_rate": 0.0}
    assert holdout["messaged"]["enrolled"] == 60 and holdout["verdict"] == "not enough data yet"
    assert set(holdout) == {"holdout", "messaged", "lift", "lift_ci_95", "relative_lift", "p_value", "verdict"}
    text = run("stats").output
    assert "A/B welcome-email: B books more, 95% confidence" in text and "holdout: not enough data yet" in text


@pytest.mark.parametrize(("args", "message"), [
    (["enroll", "--campaign", "nope", "--email", "a@example.com"], "known campaigns: ketamine-consult"),
    (["enroll", "--campaign", "ketamine-consult", "--email", "a@"], "email:"),
    (["enroll", "--campaign", "ketamine-consult", "--phone", "123"], "phone:"),
    (["enroll", "--campaign", "ketamine-consult", "--email", "a@example.com", "--timezone", "Nowhere/City"], "timezone"),
    (["unsubscribe", "--email", "ghost@example.com"], "no contact with email ghost@example.com"),
    (["booked", "--phone", "+13125550199"], "no contact with phone"),
])
def test_user_errors_are_one_line_without_traceback(env, args, message):
    run("init")
    result = run(*args, expect=1)
    assert message in result.output and "Traceback" not in result.output


def test_commands_before_init_say_to_run_init(env):
    result = run("send-due", expect=1)
    assert "run `drip init` first" in result.output


def test_bad_setting_names_the_variable(env, monkeypatch):
    monkeypatch.setenv("DRIP_DELIVERY", "carrier-pigeon")
    result = run("send-due", expect=1)
    assert "DRIP_DELIVERY" in result.output


def test_providers_mode_lists_the_missing_credentials(env, monkeypatch):
    monkeypatch.setenv("DRIP_DELIVERY", "providers")
    result = run("send-due", expect=1)
    assert "TWILIO_ACCOUNT_SID" in result.output and "DRIP_BOOKING_URL" in result.output


def test_import_reports_bad_rows_by_line_and_imports_the_rest(env, tmp_path):
    run("init")
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "first_name,last_name,email,phone,timezone,consent_email,consent_sms,source\n"
        "Ann,Lee,ann@example.com,+13125550101,,yes,yes,fair\n"
        "Bob,Kay,bob@,+13125550102,,yes,no,fair\n"
        "Cy,Ng,cy@example.com,,America/Denver,yes,maybe,fair\n"
        "Di,Ox,di@example.com,,,yes,no,fair\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["import", str(csv_file), "--campaign", "ketamine-consult"])
    assert result.exit_code == 0, result.output
    assert "people.csv:line 3: email:" in result.output
    assert "people.csv:line 4: consent_sms: 'maybe' is not yes or no" in result.output
    assert "4 rows, 2 enrolled" in result.output


def test_simulate_json_follows_the_content_rules(env):
    messages = json.loads(run("simulate", "ketamine-consult", "--format", "json").output)
    assert [m["channel"] for m in messages].count("email") == 5 and [m["channel"] for m in messages].count("sms") == 3
    # The journey adds the path taken to each message and its A/B variant (null when none).
    assert set(messages[0]) == {"step", "channel", "offset_seconds", "subject", "text", "html", "branch", "variant"}
    assert messages[-1]["offset_seconds"] <= 14 * 86400
    first_sms = next(m for m in messages if m["channel"] == "sms")
    assert "STOP" in first_sms["text"] and "HELP" in first_sms["text"]
    for message in messages:
        assert "/b/" in message["text"]
        discreet = message["text"] if message["channel"] == "sms" else message["subject"]
        assert not any(term in discreet.lower() for term in CONTENT_RULE_TERMS), discreet
        if message["channel"] == "email":
            assert "988" in message["text"] and "/u/" in message["html"] and "Springfield" in message["text"]
            assert message["html"].count("<style") == 0  # CSS inlined


def test_simulate_text_is_readable(env):
    output = run("simulate", "ketamine-consult").output
    assert "[1] day 0 +00:00  EMAIL  step welcome-email" in output and "segments" in output


def test_templates_check_passes_on_the_shipped_templates(env):
    assert "templates check: ok" in run("templates", "check").output


def test_templates_check_reports_file_and_line(env, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    broken = templates / "email" / "02-stress-brain.html"
    lines = broken.read_text().splitlines()
    lines[4] = lines[4] + " {% if %}"
    broken.write_text("\n".join(lines))
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(templates))
    result = CliRunner().invoke(main, ["templates", "check"])
    assert result.exit_code == 1
    assert "templates/email/02-stress-brain.html:5:" in result.output


def test_templates_check_catches_an_undefined_variable(env, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    sms = templates / "sms" / "02-checkin.txt"
    sms.write_text(sms.read_text() + " {{ frist_name }}")
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(templates))
    result = CliRunner().invoke(main, ["templates", "check"])
    assert result.exit_code == 1 and "frist_name" in result.output and "02-checkin.txt" in result.output


def test_templates_check_enforces_the_content_guard(env, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    sms = templates / "sms" / "02-checkin.txt"
    sms.write_text(sms.read_text() + "\nKetamine helps 95% of people.")
    reminder = templates / "sms" / "03-reminder.txt"
    reminder.write_text(reminder.read_text().replace("{{ booking_link }}", "soon"))
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(templates))
    result = CliRunner().invoke(main, ["templates", "check"])
    assert result.exit_code == 1
    assert "sms/02-checkin.txt:2: [discreet-sms]" in result.output
    assert "sms/02-checkin.txt:2: [approved-claim]" in result.output
    assert "sms/03-reminder.txt:1: [booking-link]" in result.output


# --- issue 12: the content rules with a clinic name that names the drug ------------------------

KETAMINE_CLINIC = {"DRIP_CLINIC_NAME": "Example Ketamine Clinic", "DRIP_CLINIC_SMS_NAME": "Example Wellness"}


def content_rule_problems(messages: list[dict], brand: str) -> list[str]:
    """Every way `drip simulate --format json` output breaks a content rule of SPEC.md."""
    policy = load_policy(ROOT / "policy")
    campaign = load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"]
    problems = []

    def restricted(where: str, text: str) -> None:
        words = [w for _, w, _ in policy.restricted_in(text.split("http")[0] if where == "sms" else text)]
        words += [t for t in CONTENT_RULE_TERMS if t in text.lower() and "http" not in text.lower()]
        if words:
            problems.append(f"{where}: names {words}: {text[:80]!r}")

    first_sms = next(m for m in messages if m["channel"] == "sms")
    for need in (brand, sms_frequency(campaign), "Msg & data rates may apply", "HELP", "STOP"):
        if need not in first_sms["text"]:
            problems.append(f"first sms lacks {need!r}")
    for m in messages:
        if "/b/" not in m["text"]:
            problems.append(f"{m['step']}: no booking link")
        if "free" in m["text"].lower() or "free" in (m["subject"] or "").lower():
            problems.append(f"{m['step']}: calls the consultation free")
        if m["channel"] == "sms":
            for part in m["text"].split():
                if not part.startswith("http"):
                    restricted("sms", part)
            info = sms_info(m["text"])
            if info.segments > 2:
                problems.append(f"{m['step']}: {info.segments} segments ({info.encoding})")
        else:
            restricted("subject", m["subject"])
            # The JSON has no preheader: the text part starts with it (what mail apps preview).
            restricted("plain-text opening", plain_text_opening("", m["text"]))
            if "# " in m["text"]:
                problems.append(f"{m['step']}: markdown heading marks in the plain-text part")
            if not ("988" in m["text"] and "/u/" in m["html"] and "Springfield" in m["text"]):
                problems.append(f"{m['step']}: footer part missing")
    return problems


def test_simulate_json_follows_the_content_rules_with_a_drug_in_the_clinic_name(env, monkeypatch):
    for key, value in KETAMINE_CLINIC.items():
        monkeypatch.setenv(key, value)
    messages = json.loads(run("simulate", "ketamine-consult", "--format", "json").output)
    assert content_rule_problems(messages, "Example Wellness") == []
    assert "Example Ketamine Clinic" in messages[0]["text"]  # the footer names the clinic in full


@pytest.mark.parametrize("first_name", ["Zoë", "Nguyễn", "王", "Christopher-Alexander"])
def test_simulated_messages_follow_the_content_rules_whatever_the_name(env, monkeypatch, first_name):
    for key, value in KETAMINE_CLINIC.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    campaign = load_campaigns(settings.campaigns_dir, settings.templates_dir)["ketamine-consult"]
    messages = [asdict(m) for m in simulate_campaign(settings, campaign, first_name=first_name)]
    assert content_rule_problems(messages, "Example Wellness") == []
    texts = [m["text"] for m in messages if m["channel"] == "sms"]
    # Texts carry the name transliterated to GSM letters (Zoe, Nguyen, Wang), never UCS-2.
    assert all(sms_info(text).encoding == "GSM-7" for text in texts)
    if first_name != "Christopher-Alexander":
        assert not any(first_name in text for text in texts)


@pytest.mark.parametrize(("env_overrides", "named"), [
    ({"DRIP_CLINIC_NAME": "Example Ketamine Clinic"}, ["DRIP_CLINIC_SMS_NAME: required"]),
    ({**KETAMINE_CLINIC, "DRIP_CLINIC_SMS_NAME": "Ketamine Care"}, ["DRIP_CLINIC_SMS_NAME: 'Ketamine Care' names"]),
])
def test_templates_check_and_simulate_refuse_an_indiscreet_brand(env, monkeypatch, env_overrides, named):
    for key, value in env_overrides.items():
        monkeypatch.setenv(key, value)
    check = run("templates", "check", expect=1).output
    simulate = run("simulate", "ketamine-consult", expect=1).output
    for text in named:
        assert text in check and text in simulate


def test_templates_check_reports_a_plain_text_opening_a_first_text_and_a_layout(env, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    how = templates / "email" / "03-how-it-works.html"
    how.write_text(how.read_text().replace("<h1>How the treatment works</h1>", "<h1>How ketamine works</h1>"))
    first = templates / "sms" / "01-welcome.txt"
    first.write_text(first.read_text().replace("{{ sms_frequency }}. Msg & data rates may apply. ", ""))
    layout = templates / "email" / "_layout.html"
    layout.write_text(layout.read_text().replace("<br>{{ clinic_address }}", ""))
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(templates))
    output = run("templates", "check", expect=1).output
    assert "email/03-how-it-works.html (text):1: [discreet-opening] 'ketamine'" in output
    assert "sms/01-welcome.txt:1: [first-sms] the first text message of ketamine-consult does not say how often" in output
    assert "Msg & data rates may apply" in output
    assert "email/_layout.html:1: [email-footer] this layout does not show {{ clinic_address }}" in output


LIVE = {"DRIP_DELIVERY": "providers", "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_FROM_NUMBER": "+13125550100", "SENDGRID_API_KEY": "SG.key", "DRIP_FROM_EMAIL": "care@example.com",
        "DRIP_BOOKING_URL": "http://127.0.0.1:8000/book"}


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"], ["send-due"]])
def test_live_commands_refuse_placeholders_naming_each_variable(env, monkeypatch, command):
    for key in ("DRIP_CLINIC_NAME", "DRIP_CLINIC_ADDRESS", "DRIP_CLINIC_PHONE", "DRIP_PUBLIC_URL"):
        monkeypatch.delenv(key)  # the shipped defaults
    for key, value in LIVE.items():
        monkeypatch.setenv(key, value)
    output = run(*command, expect=1).output
    assert "refusing to start" in output and "Traceback" not in output
    for variable in ("DRIP_PUBLIC_URL", "DRIP_BOOKING_URL", "DRIP_CLINIC_NAME", "DRIP_CLINIC_ADDRESS",
                     "DRIP_CLINIC_PHONE", "DRIP_FROM_EMAIL"):
        assert f"  {variable}: " in output, variable


@pytest.mark.parametrize(("name", "value", "complaint"), [
    ("DRIP_PUBLIC_URL", "https://10.0.0.5", "private"),
    ("DRIP_PUBLIC_URL", "https://localhost:8000", "local"),
    ("DRIP_CLINIC_ADDRESS", "123 Main St, Springfield, IL 62701", "placeholder"),
    ("DRIP_CLINIC_PHONE", "(312) 555-0142", "fictional"),
    ("DRIP_CLINIC_NAME", "Example Wellness", "placeholder"),
    ("DRIP_BOOKING_URL", "https://book.example.com/x", "reserved"),
])
def test_each_placeholder_is_named(env, monkeypatch, name, value, complaint):
    good = {**LIVE, "DRIP_PUBLIC_URL": "https://drip.riverside-wellness.com", "DRIP_FROM_EMAIL": "care@riverside.health",
            "DRIP_BOOKING_URL": "https://riverside.health/book", "DRIP_CLINIC_PHONE": "+1 217 555 2368"}
    for key, val in {**good, name: value}.items():
        monkeypatch.setenv(key, val)
    output = run("send-due", expect=1).output
    problems = [line for line in output.splitlines() if line.startswith("  ")]
    assert len(problems) == 1 and problems[0].startswith(f"  {name}: ") and complaint in problems[0], output


def test_a_sandbox_run_keeps_the_example_values(env, monkeypatch):
    run("init")
    for key, value in {**LIVE, "DRIP_TWILIO_BASE_URL": "http://127.0.0.1:9", "DRIP_SENDGRID_BASE_URL":
                       "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    assert "send-due: 0 claimed" in run("send-due").output
# -- staff authentication from the command line (issue 11) --------------------------------------


@pytest.mark.parametrize("password, named", [("1234567890", "at least 12 characters"),
                                             ("1234qwerasdfzxcv", "common or breached")])
def test_every_cli_way_of_setting_a_password_refuses_short_and_listed_ones(env, password, named):
    from sqlalchemy import create_engine, select

    from patient_drip.models import User

    refused = run("init", "--admin-email", "boss@example.com", "--admin-password", password, expect=1)
    assert named in refused.output and "password" in refused.output
    run("init", "--admin-email", "boss@example.com", "--admin-password", "a long and unusual passphrase")
    assert named in run("users", "add", "desk@example.com", "--role", "staff", "--password", password, expect=1).output
    engine = create_engine(env["DRIP_DATABASE_URL"])
    with engine.connect() as connection:
        before = connection.execute(select(User.password_hash).where(User.email == "boss@example.com")).scalar_one()
    assert named in run("users", "reset-password", "boss@example.com", "--password", password, expect=1).output
    with engine.connect() as connection:
        assert connection.execute(select(User.email)).scalars().all() == ["boss@example.com"]
        after = connection.execute(select(User.password_hash).where(User.email == "boss@example.com")).scalar_one()
    engine.dispose()
    assert after == before


def test_require_mfa_for_a_role_and_reset_a_lost_device(env):
    from sqlalchemy import select

    from patient_drip.accounts.mfa import needs_enrolment, roles_requiring_mfa
    from patient_drip.models import AuditEntry, User
    from patient_drip.runtime import build_runtime
    from patient_drip.settings import load_settings

    run("init", "--admin-email", "boss@example.com", "--admin-password", "a long and unusual passphrase")
    run("users", "add", "desk@example.com", "--role", "staff", "--password", "another unusual passphrase")
    assert "required for staff" in run("users", "require-mfa", "--role", "staff").output
    refused = run("users", "require-mfa", "--role", "admin", "--no", expect=1)
    assert "always required for admins" in refused.output
    rt = build_runtime(load_settings())
    with rt.sessions() as session, session.begin():
        assert roles_requiring_mfa(session) == {"admin", "clinician", "staff"}
        desk = session.scalar(select(User).where(User.email == "desk@example.com"))
        assert needs_enrolment(session, desk)
        desk.totp_secret = "A" * 32  # as if enrolled
    assert "removed" in run("users", "reset-mfa", "desk@example.com").output
    assert "no longer required" in run("users", "require-mfa", "--role", "staff", "--no").output
    with rt.sessions() as session:
        desk = session.scalar(select(User).where(User.email == "desk@example.com"))
        assert desk.totp_secret is None and not needs_enrolment(session, desk)
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("mfa%"))
                                       .order_by(AuditEntry.id)))
    rt.close()
    assert actions == ["mfa_requirement_changed", "mfa_reset", "mfa_requirement_changed"]


def test_simulate_shows_the_timing_version_in_force(env):
    from datetime import datetime, timezone

    from patient_drip.content.campaign_versions import format_delay, save_version
    from patient_drip.runtime import build_runtime
    from patient_drip.settings import load_settings

    assert json.loads(run("simulate", "ketamine-consult", "--format", "json").output)[2]["offset_seconds"] == 2 * 86400
    run("init")
    rt = build_runtime(load_settings(), senders={})
    try:
        campaign = rt.campaign("ketamine-consult")
        delays = {step.id: format_delay(step.delay) for step in campaign.steps} | {"stress-brain-email": "3d"}
        with rt.sessions() as session, session.begin():
            save_version(session, campaign, delays, {s.id for s in campaign.steps} - {"reminder-sms"}, "cli test",
                         "test", datetime.now(timezone.utc))
    finally:
        rt.close()
    messages = json.loads(run("simulate", "ketamine-consult", "--format", "json").output)
    assert {m["step"]: m["offset_seconds"] for m in messages}["stress-brain-email"] == 3 * 86400
    assert "reminder-sms" not in {m["step"] for m in messages}
    assert "(timing version 2)" in run("simulate", "ketamine-consult").output
