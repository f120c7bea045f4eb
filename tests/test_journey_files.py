"""Journey files: the default journey's shape, and every kind of journey mistake named with the file,
the step and the problem — all of them at once, and nothing half-valid loaded. Also `drip simulate`
with personas and the persona options, and the most texts a journey can send."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from patient_drip.cli import main
from patient_drip.content.campaign import CampaignError, CampaignErrors, load_campaigns, parse_campaign
from patient_drip.content.first_sms import sms_frequency
from patient_drip.content.journey import Facts, choose, edges, text_plan, wait_state
from patient_drip.content.journey_types import StepKind
from support.builders import ROOT

JOURNEY = """
id: demo
name: Demo
languages: [en]
steps:
  - id: pick
    branch:
      - {if: {interest: bipolar}, goto: b}
    otherwise: a
  - {id: a, delay: 0m, channel: email, template: email/01-welcome.html, next: wait}
  - {id: b, delay: 0m, channel: email, template: email/01-welcome-bipolar.html}
  - id: wait
    wait: {for: clicked, timeout: 2d}
    on_event: done
  - id: c
    delay: 2d
    channel: sms
    template: sms/02-checkin.txt
    variants:
      - {id: a, weight: 50}
      - {id: b, weight: 50, delay: 3d}
  - {id: done, exit: completed}
"""


def parse(text: str, templates: Path = ROOT / "templates"):
    return parse_campaign(text, "campaigns/demo.yaml", templates)


def test_the_default_journey_branches_waits_exits_and_speaks_two_languages():
    campaign = load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"]
    kinds = {step.kind for step in campaign.steps}
    assert kinds == {StepKind.MESSAGE, StepKind.BRANCH, StepKind.WAIT, StepKind.EXIT}
    assert campaign.languages == ("en", "es") and campaign.pause_on_reply and campaign.on_cancel == "rebook-sms"
    assert campaign.reentry.allowed and campaign.reentry.after == timedelta(days=30)
    assert campaign.holdout.percent == 0  # off until the clinic chooses (we suggest 10)
    day2 = campaign.steps[campaign.step_index("stress-brain-email")]
    assert [(v.id, v.weight) for v in day2.variants] == [("a", 50), ("b", 50)]
    assert {"clicked-not-booked", "replied", "cancelled", "holdout", "spanish"} <= set(campaign.personas)
    # The first text states the most texts one person can get: 3 main, 1 help, 1 rebook.
    assert sms_frequency(campaign) == "Up to 5 msgs over 2 weeks"
    assert sms_frequency(campaign, "es") == "Hasta 5 mensajes en 2 semanas"


def test_a_linear_campaign_of_before_is_still_valid_and_linear():
    campaign = parse("""
id: old
steps:
  - {id: one, delay: 0m, channel: email, template: email/01-welcome.html}
  - {id: two, delay: 2d, channel: sms, template: sms/01-welcome.txt}
""")
    assert campaign.is_linear and campaign.languages == ("en",) and not campaign.pause_on_reply
    assert [edge.target for edge in edges(campaign, 0)] == [1] and edges(campaign, 1)[0].target is None


def test_branches_and_waits_decide_from_the_facts():
    campaign = parse(JOURNEY)
    from datetime import UTC, datetime
    now = datetime(2026, 1, 5, tzinfo=UTC)
    assert choose(campaign, 0, Facts(interest="bipolar"), now).target == campaign.step_index("b")
    assert choose(campaign, 0, Facts(interest="depression"), now).target == campaign.step_index("a")
    wait = campaign.step_index("wait")
    waiting = wait_state(campaign, wait, Facts(), now, now + timedelta(days=1))
    assert not waiting.over and waiting.until == now + timedelta(days=2)
    clicked = wait_state(campaign, wait, Facts(events={"clicked": (now + timedelta(hours=5),)}), now,
                         now + timedelta(hours=6))
    assert clicked.over and clicked.target == campaign.step_index("done")
    timed_out = wait_state(campaign, wait, Facts(), now, now + timedelta(days=2))
    assert timed_out.over and timed_out.target == campaign.step_index("c")


@pytest.mark.parametrize(("change", "field", "problem"), [
    # a step nothing leads to
    (("{id: done, exit: completed}", "{id: done, exit: completed}\n  - {id: lost, channel: sms, template: sms/03-reminder.txt, next: done}"),
     "steps[6] (lost).id", "cannot be reached"),
    # a loop with no wait in it
    (("template: email/01-welcome.html, next: wait}", "template: email/01-welcome.html, next: pick}"),
     "steps[1] (a).next", "loops without a wait"),
    # a branch on something we do not know
    (("{interest: bipolar}", "{star_sign: leo}"), "steps[0] (pick).branch[0].if.star_sign", "unknown attribute"),
    (("{interest: bipolar}", "{interest: anxiety}"), "steps[0] (pick).branch[0].if.interest", "not a interest"),
    # weights that do not add up
    (("{id: b, weight: 50, delay: 3d}", "{id: b, weight: 40, delay: 3d}"), "steps[4] (c).variants", "add up to 90"),
    # a goto to nowhere
    (("goto: b}", "goto: nowhere}"), "steps[0] (pick).branch[0].goto", "there is no step 'nowhere'"),
    # a wait for something we cannot see
    (("{for: clicked", "{for: prayed"), "steps[3] (wait).wait.for", "cannot be waited for"),
])
def test_journey_mistakes_name_file_step_and_problem(change, field, problem):
    text = JOURNEY.replace(*change)
    assert text != JOURNEY
    with pytest.raises(CampaignError) as caught:
        parse(text)
    assert caught.value.file == "campaigns/demo.yaml"
    assert caught.value.field_path == field, str(caught.value)
    assert problem in caught.value.problem
    assert caught.value.line is not None  # the editor can jump to it


def test_every_journey_problem_is_reported_at_once():
    text = JOURNEY.replace("goto: b}", "goto: nowhere}").replace("weight: 50, delay", "weight: 10, delay")
    with pytest.raises(CampaignErrors) as caught:
        parse(text)
    assert [p.field_path for p in caught.value.problems] == ["steps[0] (pick).branch[0].goto", "steps[4] (c).variants"]
    assert str(caught.value).count("campaigns/demo.yaml") == 2


def test_a_missing_spanish_template_is_named_with_its_step(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "es" / "sms" / "02-checkin.txt").unlink()
    with pytest.raises(CampaignError) as caught:
        parse(JOURNEY.replace("languages: [en]", "languages: [en, es]"), templates)
    assert caught.value.field_path == "steps[4] (c).template"
    assert "no es one: es/sms/02-checkin.txt does not exist" in caught.value.problem


def test_drip_templates_check_names_a_bad_journey_and_loads_nothing(tmp_path, monkeypatch):
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "demo.yaml").write_text(JOURNEY.replace("{interest: bipolar}", "{mood: blue}"), encoding="utf-8")
    monkeypatch.setenv("DRIP_CAMPAIGNS_DIR", str(campaigns))
    monkeypatch.setenv("DRIP_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(main, ["templates", "check"])
    assert result.exit_code == 1
    assert "demo.yaml" in result.output and "(pick).branch[0].if.mood" in result.output
    assert "unknown attribute" in result.output


def test_the_most_texts_counts_one_path_not_every_branch():
    campaign = load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"]
    plan = text_plan(campaign)
    assert plan.most == 5 and plan.first_at == timedelta(0) and plan.last_at == timedelta(days=10)


@pytest.mark.parametrize(("persona", "expected_steps", "expected_notes"), [
    ("clicked-not-booked", ["welcome-depression-email", "welcome-sms", "help-sms-2", "stress-brain-email",
                            "checkin-sms", "how-it-works-email", "results-email", "reminder-sms", "consult-email"],
     ["exit: completed"]),
    ("cancelled", ["welcome-email", "welcome-sms", "stress-brain-email", "rebook-sms", "rebook-email"],
     ["booked: the journey ends", "booking cancelled: the rebook path starts", "exit: rebook-finished"]),
    ("holdout", ["welcome-email", "welcome-sms"], ["holdout: the rest of the journey is not sent"]),
    ("replied", ["welcome-email", "welcome-sms", "stress-brain-email", "checkin-sms", "how-it-works-email",
                 "results-email", "reminder-sms", "consult-email"],
     ["replied with a question: the journey pauses; a staff task opens", "staff resumed the journey"]),
])
def test_simulate_walks_a_persona_through_the_journey(tmp_path, monkeypatch, persona, expected_steps, expected_notes):
    monkeypatch.setenv("DRIP_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(main, ["simulate", "ketamine-consult", "--persona", persona, "--format", "json"])
    assert out.exit_code == 0, out.output
    messages = json.loads(out.output)
    assert [m["step"] for m in messages] == expected_steps
    assert all({"branch", "variant"} <= set(m) for m in messages)
    text = runner.invoke(main, ["simulate", "ketamine-consult", "--persona", persona]).output
    for note in expected_notes:
        assert note in text


def test_simulate_takes_the_persona_inline_and_in_spanish(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIP_DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--events", "clicked@6d", "--interest", "bipolar",
                                    "--language", "es", "--format", "json"])
    assert out.exit_code == 0, out.output
    messages = json.loads(out.output)
    assert messages[0]["step"] == "welcome-bipolar-email" and messages[0]["branch"] == "choose-welcome: interest=bipolar"
    assert messages[0]["subject"] == "Su solicitud de consulta"
    help_text = next(m for m in messages if m["step"] == "help-sms-8")
    assert help_text["offset_seconds"] == 8 * 86400 and "ALTO" in help_text["text"]
    assert next(m for m in messages if m["step"] == "stress-brain-email")["variant"] in ("a", "b")


def test_simulate_refuses_an_unknown_persona_or_event_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIP_DATA_DIR", str(tmp_path))
    unknown = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--persona", "nobody"])
    assert unknown.exit_code == 1 and "known personas: bipolar" in unknown.output
    bad = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--events", "danced@1d"])
    assert bad.exit_code == 1 and "'danced' is not an event" in bad.output
