"""The `drip` commands, through click's CliRunner with settings from the environment."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from patient_drip.cli import main
from support.builders import ROOT

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
    assert set(messages[0]) == {"step", "channel", "offset_seconds", "subject", "text", "html"}
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
