"""Campaign files: the default loads; every kind of mistake names the file, field and problem."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from patient_drip.content.campaign import CampaignError, load_campaigns, parse_campaign, parse_delay
from support.builders import ROOT

GOOD = """
id: demo
name: Demo
steps:
  - {id: one, delay: 0m, channel: email, template: email/01-welcome.html}
  - {id: two, delay: 1d 12h, channel: sms, template: sms/01-welcome.txt}
"""


def test_default_campaign_loads_with_eight_main_messages_over_two_weeks():
    campaigns = load_campaigns(ROOT / "campaigns", ROOT / "templates")
    campaign = campaigns["ketamine-consult"]
    main = [s for s in campaign.message_steps if not s.id.startswith(("help-", "rebook-", "welcome-depression",
                                                                        "welcome-bipolar"))]
    assert len(main) == 8  # 5 emails and 3 texts on the main path; the rest are its branches
    assert campaign.steps[0].delay == timedelta(0)
    assert max(step.delay for step in campaign.steps) <= timedelta(days=14)
    assert campaign.send_window.start.hour == 9 and campaign.send_window.end.hour == 20
    assert campaign.frequency_cap_per_day == 2


@pytest.mark.parametrize(("text", "expected"), [
    ("0", timedelta(0)), ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("3d", timedelta(days=3)),
    ("1d 12h", timedelta(days=1, hours=12)), (90, timedelta(seconds=90)),
])
def test_delays(text, expected):
    assert parse_delay(text) == expected


@pytest.mark.parametrize("text", ["soon", "3 weeks", "-1d", "1x"])
def test_bad_delays_explain_the_format(text):
    with pytest.raises(ValueError, match="write e.g."):
        parse_delay(text)


@pytest.mark.parametrize(("change", "field", "problem"), [
    (("id: demo", "id: Demo Campaign"), "id", "lowercase"),
    (("channel: sms", "channel: fax"), "steps[1] (two).channel", "not a channel"),
    (("delay: 1d 12h", "delay: tomorrow"), "steps[1] (two).delay", "not a delay"),
    (("template: sms/01-welcome.txt", "template: sms/missing.txt"), "steps[1] (two).template", "does not exist"),
    (("template: sms/01-welcome.txt", "template: email/01-welcome.html"), "steps[1] (two).template", "must be under sms/"),
    (("id: two", "id: one"), "steps[1].id", "duplicate"),
    (("name: Demo", "name: Demo\ncolour: blue"), "colour", "unknown field"),
])
def test_mistakes_name_file_field_and_problem(change, field, problem):
    text = GOOD.replace(*change)
    with pytest.raises(CampaignError) as caught:
        parse_campaign(text, "campaigns/demo.yaml", ROOT / "templates")
    assert caught.value.file == "campaigns/demo.yaml"
    assert caught.value.field_path == field
    assert problem in caught.value.problem


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(CampaignError, match=r"campaigns/demo.yaml:\d+: not valid YAML"):
        parse_campaign("id: demo\nsteps: [\n", "campaigns/demo.yaml")


def test_window_must_open_before_it_closes():
    text = GOOD.replace("name: Demo", "name: Demo\nsend_window: {start: '20:00', end: '09:00'}")
    with pytest.raises(CampaignError, match="start must be before end"):
        parse_campaign(text, "x.yaml")


def test_duplicate_campaign_ids_across_files(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(CampaignError, match="already defined"):
        load_campaigns(tmp_path, ROOT / "templates")
