"""The law on texting, by the number's presumed state: the window is the strictest of the campaign's
and the law's (federal 8:00-21:00; Florida, Oklahoma, Maryland 8:00-20:00 and at most three texts in a
rolling 24 hours), the timeline says why a text waited, and `templates check` refuses a campaign whose
window leaves no legal time for texts (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from patient_drip.content.campaign import SendWindow
from patient_drip.content.checks import check_all
from patient_drip.content.texting_rules import (
    RULES_FILE,
    TextingRulesError,
    parse_texting_rules,
    text_window,
    texting_rules,
)
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Event, EventKind, MessageStatus
from patient_drip.runtime import build_runtime
from patient_drip.web.admin.contact_actions import timeline
from support.builders import add_contact, make_settings, messages_for, run_until_done

NEW_YORK = ZoneInfo("America/New_York")
FLORIDA = "+13055550123"  # Miami
NEW_YORK_CITY = "+12125550123"
MARYLAND = "+14105550123"
OKLAHOMA = "+19185550123"
CHICAGO = "+13125550123"


def _local(moment: datetime) -> datetime:
    return moment.astimezone(NEW_YORK)


def _campaign(folder: Path, *, window: str, sms_steps: int, gap: str, cap: int = 10) -> Path:
    start, end = window.split("-")
    # Step n is due n × gap after enrollment.
    amount, unit = int(gap[:-1]), gap[-1]
    # The first text of a sequence must carry brand, frequency and HELP/STOP (content.first_sms).
    steps = "\n".join(f"  - {{id: text-{n}, delay: {n * amount}{unit}, channel: sms, "
                      f"template: sms/{'01-welcome' if n == 0 else '02-checkin'}.txt}}" for n in range(sms_steps))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "texts.yaml").write_text(f"""\
id: texts
name: Texts
description: texts only, to test the texting law
send_window: {{start: "{start}", end: "{end}", email: false, spread_minutes: 0}}
frequency_cap_per_day: {cap}
steps:
{steps}
""", encoding="utf-8")
    return folder


@pytest.fixture
def texting_rt(database_url, tmp_path):
    def build(**campaign: object):
        runtime = build_runtime(make_settings(database_url, campaigns_dir=_campaign(tmp_path / "campaigns", **campaign)))
        built.append(runtime)
        return runtime
    built: list = []
    yield build
    for runtime in built:
        runtime.close()


# -- the rules as data ------------------------------------------------------------------------------


@pytest.mark.parametrize(("phone", "rule"), [
    (FLORIDA, "florida"), ("+17275550100", "florida"), (OKLAHOMA, "oklahoma"), ("+14055550100", "oklahoma"),
    (MARYLAND, "maryland"), ("+13015550100", "maryland"), ("+12065550100", "washington"),
    (CHICAGO, "federal"), (NEW_YORK_CITY, "federal"), ("+442071838750", "federal"), (None, "federal"),
])
def test_the_rule_follows_the_area_code(phone, rule):
    assert texting_rules().for_number(phone).id == rule


def test_every_state_rule_is_at_least_as_strict_as_the_federal_one():
    rules = texting_rules()
    assert (rules.baseline.start, rules.baseline.end) == (time(8), time(21))
    for rule in rules.all()[1:]:
        assert rule.start >= rules.baseline.start and rule.end <= rules.baseline.end, rule.id
    for state in ("florida", "oklahoma", "maryland"):
        rule = next(r for r in rules.all() if r.id == state)
        assert (rule.start, rule.end, rule.max_per_24h) == (time(8), time(20), 3)
        assert "§" in rule.source


def test_a_state_rule_can_never_loosen_the_federal_window():
    data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    data["states"][0]["window"] = "06:00-23:00"
    loose = parse_texting_rules(data)
    assert (loose.for_number(FLORIDA).start, loose.for_number(FLORIDA).end) == (time(8), time(21))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["baseline"].update(window="9-5"), "baseline.window: expected HH:MM-HH:MM"),
    (lambda d: d["baseline"].update(window="20:00-08:00"), "the start must be before the end"),
    (lambda d: d["states"][0].update(max_per_24h=0), "states[0].max_per_24h"),
    (lambda d: d["states"][1]["area_codes"].append(305), "305 is listed twice"),
    (lambda d: d["states"][0]["area_codes"].append("1234"), "'1234' is not an area code"),
])
def test_a_malformed_rules_file_names_the_entry(change, message):
    data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    change(data)
    with pytest.raises(TextingRulesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_texting_rules(data)


def test_the_text_window_is_the_strictest_of_campaign_and_law():
    rule = texting_rules().for_number(FLORIDA)
    assert (text_window(SendWindow(time(7), time(22)), rule).start, text_window(SendWindow(time(7), time(22)), rule).end) \
        == (time(8), time(20))
    narrow = text_window(SendWindow(time(10), time(17)), rule)
    assert (narrow.start, narrow.end) == (time(10), time(17))


# -- the dispatcher ---------------------------------------------------------------------------------


def test_florida_number_waits_until_8am_while_new_york_number_is_texted_at_8_30pm(texting_rt, clock):
    rt = texting_rt(window="07:00-22:00", sms_steps=1, gap="1h")
    evening = clock.set(datetime(2026, 6, 1, 20, 30, tzinfo=NEW_YORK).astimezone(ZoneInfo("UTC")))
    miami = add_contact(rt, evening, email=None, phone=FLORIDA, consent=("sms",), campaign="texts",
                        timezone="America/New_York")
    manhattan = add_contact(rt, evening, email=None, phone=NEW_YORK_CITY, consent=("sms",), campaign="texts",
                            timezone="America/New_York")
    Dispatcher(rt, "w").run_once(evening)
    assert [m.status for m in messages_for(rt, manhattan)] == [MessageStatus.SENT]
    assert messages_for(rt, miami) == []
    run_until_done(rt, clock)
    sent = messages_for(rt, miami)[0].sent_at
    assert (_local(sent).date(), _local(sent).hour) == (datetime(2026, 6, 2).date(), 8)
    with rt.sessions() as session:
        reasons = [e.detail["reason"] for e in session.scalars(
            select(Event).where(Event.contact_id == miami, Event.kind == EventKind.MESSAGE_DEFERRED))]
        assert len(reasons) == 1 and reasons[0].startswith("Florida Telephone Solicitation Act (Fla. Stat. § 501.059(8))")
        entry = next(e for e in timeline(session, miami) if e.title.startswith("Message waits"))
        assert "Tue 2 Jun 08:00 (America/New_York)" in entry.detail and "Florida" in entry.detail


def test_after_9pm_nobody_is_texted_whatever_the_campaign_window(texting_rt, clock):
    rt = texting_rt(window="00:00-24:00", sms_steps=1, gap="1h")
    late = clock.set(datetime(2026, 6, 1, 21, 15, tzinfo=NEW_YORK).astimezone(ZoneInfo("UTC")))
    contact = add_contact(rt, late, email=None, phone=NEW_YORK_CITY, consent=("sms",), campaign="texts",
                          timezone="America/New_York")
    run_until_done(rt, clock)
    sent = _local(messages_for(rt, contact)[0].sent_at)
    assert (sent.day, sent.hour, sent.minute) == (2, 8, 0)
    with rt.sessions() as session:
        event = session.scalar(select(Event).where(Event.kind == EventKind.MESSAGE_DEFERRED))
        assert event.detail["reason"].startswith("US federal quiet hours (TCPA) (47 CFR § 64.1200(c)(1))")


@pytest.mark.parametrize("phone", [FLORIDA, OKLAHOMA, MARYLAND])
def test_at_most_three_texts_in_a_rolling_24_hours_under_state_law(texting_rt, clock, phone):
    rt = texting_rt(window="08:00-20:00", sms_steps=5, gap="1h")
    morning = clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=NEW_YORK).astimezone(ZoneInfo("UTC")))
    contact = add_contact(rt, morning, email=None, phone=phone, consent=("sms",), campaign="texts",
                          timezone="America/New_York")
    run_until_done(rt, clock)
    sent = [_local(m.sent_at) for m in messages_for(rt, contact)]
    # Due at 9, 10, 11, 12 and 13 o'clock: the fourth waits until the first is 24 hours old, the
    # fifth until the second is.
    assert [(t.day, t.hour, t.minute) for t in sent] == [(1, 9, 0), (1, 10, 0), (1, 11, 0), (2, 9, 0), (2, 10, 0)]
    for index in range(len(sent) - 3):
        assert sent[index + 3] - sent[index] > timedelta(hours=24)
    with rt.sessions() as session:
        reasons = [e.detail["reason"] for e in session.scalars(
            select(Event).where(Event.contact_id == contact, Event.kind == EventKind.MESSAGE_DEFERRED))]
    assert reasons and all("at most 3 in 24 hours" in reason for reason in reasons)


def test_no_daily_count_for_numbers_outside_those_states(texting_rt, clock):
    rt = texting_rt(window="08:00-20:00", sms_steps=5, gap="1h")
    morning = clock.set(datetime(2026, 6, 1, 9, 0, tzinfo=NEW_YORK).astimezone(ZoneInfo("UTC")))
    contact = add_contact(rt, morning, email=None, phone=NEW_YORK_CITY, consent=("sms",), campaign="texts",
                          timezone="America/New_York")
    run_until_done(rt, clock)
    assert {_local(m.sent_at).day for m in messages_for(rt, contact)} == {1}


# -- templates check --------------------------------------------------------------------------------


def test_templates_check_refuses_a_window_with_no_legal_time_for_texts(database_url, tmp_path):
    settings = make_settings(database_url, campaigns_dir=_campaign(tmp_path / "c", window="21:00-23:30", sms_steps=1,
                                                                   gap="1h"))
    problems, _summary = check_all(settings)
    assert any("send_window 21:00-23:30 leaves no time for texts under US federal quiet hours" in p for p in problems)
    fine = make_settings(database_url, campaigns_dir=_campaign(tmp_path / "d", window="09:00-19:00", sms_steps=1,
                                                               gap="1h"))
    assert not any("leaves no time" in p for p in check_all(fine)[0])


def test_a_text_step_for_someone_without_a_number_does_not_wait_for_a_texting_window():
    """It is skipped when due; waiting for the morning would hold every step after it too."""
    from patient_drip.content.campaign import load_campaigns
    from patient_drip.content.windows import schedule_step

    root = Path(__file__).resolve().parent.parent
    campaign = load_campaigns(root / "campaigns", root / "templates")["ketamine-consult"]
    index = next(i for i, step in enumerate(campaign.steps) if step.channel == "sms")
    late = datetime(2026, 6, 1, 23, 30, tzinfo=ZoneInfo("America/Chicago")).astimezone(ZoneInfo("UTC"))
    planned = late + campaign.steps[index].delay
    assert schedule_step(campaign, index, late, "America/Chicago", 7, phone=None).due == planned
    waits = schedule_step(campaign, index, late, "America/Chicago", 7, phone=CHICAGO)
    assert waits.due > planned and waits.moved_because
