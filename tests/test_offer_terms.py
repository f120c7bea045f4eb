"""Offer terms come from the settings: nothing is called free unless the clinic says so, the
consultation's length is a setting, and the content guard refuses a hand-written "free"."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from patient_drip.cli import main
from patient_drip.content.campaign import load_campaigns
from patient_drip.content.checks import check_all
from patient_drip.content.guard import OFFER_TERMS, check_templates_dir, load_policy
from patient_drip.content.rendering import SMS_MAX_SEGMENTS, sms_info
from patient_drip.content.simulate import simulate_campaign
from patient_drip.settings import SettingsError, load_settings
from support.builders import ROOT, make_settings

FREE = re.compile(r"\bfree\b", re.I)


def simulated(tmp_path, **overrides: object):
    settings = make_settings(f"sqlite:///{tmp_path}/drip.db", **overrides)
    campaign = load_campaigns(settings.campaigns_dir, settings.templates_dir)["ketamine-consult"]
    return simulate_campaign(settings, campaign)


def test_by_default_no_message_says_free(tmp_path) -> None:
    for message in simulated(tmp_path):
        for part in (message.subject, message.text, message.html):
            assert not FREE.search(part or ""), (message.step, part)
    assert "a 15-minute consultation" in simulated(tmp_path)[0].text


def test_simulate_json_says_free_only_when_the_setting_does(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for free in ("false", "true"):
        monkeypatch.setenv("DRIP_CONSULTATION_FREE", free)
        result = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--format", "json"])
        assert result.exit_code == 0, result.output
        messages = json.loads(result.output)
        assert bool(FREE.search(result.output)) == (free == "true")
        for message in (m for m in messages if m["channel"] == "sms"):
            assert sms_info(message["text"]).segments <= SMS_MAX_SEGMENTS, message["text"]


def test_a_free_consultation_is_called_free_in_the_welcome_email_and_first_text(tmp_path) -> None:
    messages = simulated(tmp_path, consultation_free=True)
    welcome_email = next(m for m in messages if m.channel == "email")
    first_sms = next(m for m in messages if m.channel == "sms")
    assert "free 15-minute" in welcome_email.text and "free 15-minute" in (welcome_email.html or "")
    assert "free 15-minute" in first_sms.text


def test_the_minutes_setting_changes_the_text(tmp_path) -> None:
    messages = simulated(tmp_path, consultation_minutes=30)
    assert "a 30-minute consultation" in messages[0].text
    assert "It takes 30 minutes." in messages[-1].text
    assert not any("15-minute" in m.text or "15 minutes" in m.text for m in messages)


def test_the_booking_phrase_is_the_button(tmp_path) -> None:
    default = simulated(tmp_path)[0]
    assert ">Book a consultation</a>" in (default.html or "")
    custom = simulated(tmp_path, booking_phrase="Talk to our team")[0]
    assert ">Talk to our team</a>" in (custom.html or "")


def test_templates_check_passes_with_any_allowed_offer(tmp_path) -> None:
    # The texts are checked with the longest offer (free, 120 minutes), so both pass.
    for overrides in ({}, {"consultation_free": True, "consultation_minutes": 120}):
        problems, _summary = check_all(make_settings(f"sqlite:///{tmp_path}/drip.db", **overrides))
        assert problems == []


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"consultation_minutes": 4}, "DRIP_CONSULTATION_MINUTES"),
        ({"consultation_minutes": 121}, "DRIP_CONSULTATION_MINUTES"),
        ({"consultation_free": "maybe"}, "DRIP_CONSULTATION_FREE"),
        ({"booking_phrase": "   "}, "DRIP_BOOKING_PHRASE"),
        ({"booking_phrase": "Book a consultation with our friendly clinical team"}, "DRIP_BOOKING_PHRASE"),
        ({"booking_phrase": "Book at https://clinic.test/b"}, "DRIP_BOOKING_PHRASE"),
        ({"booking_phrase": "Visit www.clinic.test"}, "DRIP_BOOKING_PHRASE"),
        ({"booking_phrase": "Book your FREE call"}, "DRIP_BOOKING_PHRASE"),
    ],
)
def test_bad_offer_settings_name_the_variable(overrides, variable) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(_env_file=None, **overrides)


def test_a_free_booking_phrase_is_allowed_when_the_consultation_is_free() -> None:
    settings = load_settings(_env_file=None, consultation_free=True, booking_phrase="Book your free call")
    assert settings.booking_phrase == "Book your free call"


@pytest.mark.parametrize(
    ("name", "source", "line"),
    [
        ("sms/01.txt", "Hi {{ first_name }}, book your FREE call: {{ booking_link }} Reply STOP, HELP.", 1),
        ("email/_layout.html", "<html><body>\n{% block body %}{% endblock %}\n<p>Free to ask!</p></body></html>", 3),
        ("email/_layout.html", '<html><body>\n<img alt="fr&#101;e call">{% block body %}{% endblock %}</body></html>', 2),
    ],
)
def test_the_guard_flags_a_hand_written_free(tmp_path, name, source, line) -> None:
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_text(source, encoding="utf-8")
    issues = [i for i in check_templates_dir(tmp_path, load_policy()) if i.rule == OFFER_TERMS]
    assert [(i.line, i.file) for i in issues] == [(line, str(tmp_path / name))]
    assert "{{ consultation }}" in issues[0].message and "DRIP_CONSULTATION_FREE" in issues[0].message
    assert str(issues[0]).startswith(f"{tmp_path / name}:{line}: [offer-terms]")


def test_the_guard_allows_the_setting_names_and_comments(tmp_path) -> None:
    source = ("{# never write the word free here #}{% if consultation_free %}{% endif %}"
              "Hi, book {{ consultation }}: {{ booking_link }} Reply STOP, HELP.")
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "01.txt").write_text(source, encoding="utf-8")
    assert [i for i in check_templates_dir(tmp_path, load_policy()) if i.rule == OFFER_TERMS] == []


def test_no_shipped_template_says_free() -> None:
    issues = check_templates_dir(ROOT / "templates", load_policy())
    assert [str(i) for i in issues if i.rule == OFFER_TERMS] == []
