"""Content rules enforced where messages are made: the send path (held, not sent, seen through the
sandbox), the template editor over HTTP, and the rule functions themselves."""

from __future__ import annotations

from dataclasses import replace

import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from patient_drip.content.campaign import load_campaigns
from patient_drip.content.discretion import brand_problems, email_issues, plain_text_opening, sms_issues
from patient_drip.content.first_sms import first_sms_problems, sms_frequency
from patient_drip.content.guard import load_policy
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Enrollment, Event, MessageStatus
from patient_drip.runtime import build_runtime
from patient_drip.web.admin.contact_actions import timeline
from support.builders import ROOT, add_contact, make_settings, messages_for, sandbox_settings
from support.staff import add_user, sign_in_as

POLICY = load_policy(ROOT / "policy")
CAMPAIGN = load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"]


# --- the send path: held, not sent -----------------------------------------------------------


def test_a_clinic_name_with_the_drug_is_held_not_sent_and_the_sequence_goes_on(database_url, sandbox, clock):
    # No DRIP_CLINIC_SMS_NAME (the start-up check is bypassed: a runtime built directly), so the
    # texts would say "Sunrise Ketamine Clinic" and the sender name would be it too.
    sandbox.configure(twilio_status_callbacks=False)
    rt = build_runtime(sandbox_settings(database_url, sandbox, clinic_name="Sunrise Ketamine Clinic",
                                        from_email="care@clinic.test"))
    try:
        contact_id = add_contact(rt, clock.now)
        summary = Dispatcher(rt, "w").run_once(clock.now)
        assert summary.outcomes == Counter({"held": 2})
        assert sandbox.messages() == []  # nothing reached a provider
        email, sms = messages_for(rt, contact_id)
        assert email.status == sms.status == MessageStatus.HELD and email.attempts == sms.attempts == 0
        assert "[discreet-sender]" in (email.last_error or "") and "[discreet-opening]" in (email.last_error or "")
        assert "[discreet-sms]" in (sms.last_error or "")
        with rt.sessions() as session:
            entries = timeline(session, contact_id)
            held_events = session.scalars(select(Event).where(Event.kind == "message_held")).all()
            enrollment = session.scalars(select(Enrollment)).one()
        assert len(held_events) == 2 and all("held:" in e.detail["reason"] for e in held_events)
        assert [e.status for e in entries if e.kind == "message"] == ["held", "held"]
        assert sum(e.title.startswith("Message held") for e in entries) == 2
        # The sequence goes on: the next step (day 2) is due at its own time, nothing is retried.
        assert rt.campaign("ketamine-consult").steps[enrollment.step_index].id == "check-day-2"
        assert enrollment.next_due_at is not None
        assert (enrollment.next_due_at - clock.now).days >= 1
        assert Dispatcher(rt, "w").run_once(clock.now).outcomes == Counter()
    finally:
        rt.close()


def test_with_a_discreet_sms_name_the_same_clinic_sends_and_texts_use_it(database_url, sandbox, clock):
    sandbox.configure(twilio_status_callbacks=False)
    rt = build_runtime(sandbox_settings(database_url, sandbox, clinic_name="Sunrise Ketamine Clinic",
                                        clinic_sms_name="Sunrise Wellness", from_email="care@clinic.test"))
    try:
        add_contact(rt, clock.now)
        assert Dispatcher(rt, "w").run_once(clock.now).outcomes == Counter({"sent": 2})
        received = {m["provider"]: m for m in sandbox.messages()}
        text = received["twilio"]["text"]
        assert "Sunrise Wellness" in text and "ketamine" not in text.lower()
        assert "Up to 5 msgs over 2 weeks" in text and "Msg & data rates may apply" in text
        assert received["sendgrid"]["from_name"] == "Sunrise Wellness"
        assert "ketamine" not in received["sendgrid"]["subject"].lower()
    finally:
        rt.close()


def test_an_email_whose_layout_lost_the_unsubscribe_link_is_held(database_url, sandbox, clock, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    layout = templates / "email" / "_layout.html"
    source = layout.read_text()
    unsubscribe = '<p><a href="{{ unsubscribe_link }}">Unsubscribe or change how we contact you</a></p>'
    assert unsubscribe in source
    layout.write_text(source.replace(unsubscribe, ""))
    sandbox.configure(twilio_status_callbacks=False)
    rt = build_runtime(sandbox_settings(database_url, sandbox, templates_dir=templates))
    try:
        contact_id = add_contact(rt, clock.now, phone=None, consent=("email",))
        # (no phone: the text step is skipped)
        assert Dispatcher(rt, "w").run_once(clock.now).outcomes == Counter({"held": 1, "skipped": 1})
        assert sandbox.messages() == []
        message, skipped = messages_for(rt, contact_id)
        assert skipped.status == "skipped" and message.status == "held" and "[email-footer]" in (message.last_error or "")
        assert "unsubscribe_link" in (message.last_error or "")
    finally:
        rt.close()


# --- the editor over HTTP --------------------------------------------------------------------


@pytest.mark.parametrize(("removed", "said"), [
    ('<p><a href="{{ unsubscribe_link }}">Unsubscribe or change how we contact you</a></p>', "unsubscribe_link"),
    ("<br>{{ clinic_address }}", "clinic_address"),
    ("If you are in crisis or thinking about suicide, call or text 988 (Suicide &amp; Crisis Lifeline), any time. ",
     "988"),
])
def test_the_editor_refuses_a_layout_without_its_footer(client, srt, clock, removed, said):
    layout = (ROOT / "templates" / "email" / "_layout.html").read_text()
    assert removed in layout
    csrf = sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    preview = client.post("/admin/templates/preview/email/_layout.html", headers={"X-CSRF-Token": csrf},
                          json={"source": layout.replace(removed, "")}).json()
    assert not preview["ok"]
    assert any(p["rule"] == "email-footer" and said in p["message"] and "this layout" in p["message"]
               for p in preview["problems"]), preview["problems"]
    saved = client.post("/admin/templates/edit/email/_layout.html",
                        data={"source": layout.replace(removed, ""), "note": "shorter footer", "action": "save",
                              "csrf_token": csrf, "first_name": "Alex"})
    assert saved.status_code == 422 and "Not saved" in saved.text and said in saved.text


def test_the_editor_refuses_a_first_text_without_frequency_and_rates(client, srt, clock):
    csrf = sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    preview = client.post("/admin/templates/preview/sms/01-welcome.txt", headers={"X-CSRF-Token": csrf},
                          json={"source": "Hi {{ first_name }}, {{ clinic_sms_name }}: {{ booking_link }} "
                                          "Reply HELP for help, STOP to opt out."}).json()
    messages = [p["message"] for p in preview["problems"] if p["rule"] == "sms-first"]
    assert not preview["ok"] and any("Up to 5 msgs over 2 weeks" in m for m in messages)
    assert any("Msg & data rates may apply" in m for m in messages)


def test_the_editor_refuses_an_email_whose_plain_text_opens_with_the_drug(client, srt, clock):
    source = (ROOT / "templates" / "email" / "03-how-it-works.html").read_text()
    csrf = sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    preview = client.post("/admin/templates/preview/email/03-how-it-works.html", headers={"X-CSRF-Token": csrf},
                          json={"source": source.replace("<h1>How the treatment works</h1>",
                                                         "<h1>How ketamine works</h1>")}).json()
    assert not preview["ok"]
    assert [p["rule"] for p in preview["problems"]] == ["discreet-opening"]


# --- the rules themselves --------------------------------------------------------------------


def test_the_plain_text_opening_is_the_preheader_then_the_body_without_heading_marks():
    text = "Discreet line.\n\n# How ketamine works\n\nHi Ana,\n"
    assert plain_text_opening("Discreet line.", text) == "Discreet line. How ketamine works Hi Ana,"
    assert plain_text_opening("", "x" * 300) == "x" * 200
    issues = email_issues("e", subject="Hello", preheader="Discreet line.", text=text, policy=POLICY)
    assert [i.rule for i in issues] == ["discreet-opening"]
    late = "Discreet line.\n\n" + "word " * 50 + "ketamine\n"
    assert email_issues("e", subject="Hello", preheader="Discreet line.", text=late, policy=POLICY) == []


def test_links_are_not_read_as_words():
    # A signed token is random text; "OCD" inside one is no diagnosis.
    assert sms_issues("s", "Book: https://clinic.test/b/Mg.OCD-x3 Reply STOP", policy=POLICY) == []
    assert [i.rule for i in sms_issues("s", "Ketamine: https://clinic.test/b/x", policy=POLICY)] == ["discreet-sms"]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"clinic_name": "Sunrise Ketamine Clinic"}, ["DRIP_CLINIC_SMS_NAME: required because"]),
    ({"clinic_name": "Sunrise Ketamine Clinic", "clinic_sms_name": "Sunrise Ketamine"},
     ["DRIP_CLINIC_SMS_NAME: 'Sunrise Ketamine' names 'Ketamine'"]),
    ({"clinic_name": "Sunrise Ketamine Clinic", "clinic_sms_name": "Sunrise Wellness",
      "from_email": "Sunrise Ketamine <care@sunrise.health>"}, ["DRIP_FROM_EMAIL: the sender name"]),
    ({"clinic_name": "Sunrise Ketamine Clinic", "clinic_sms_name": "Sunrise Wellness"}, []),
    ({"clinic_name": "Riverside Wellness"}, []),
])
def test_brand_problems_name_the_variable(overrides, expected):
    problems = brand_problems(make_settings("sqlite:///unused.db", **overrides), POLICY)
    assert len(problems) == len(expected) and all(p.startswith(e) for p, e in zip(problems, expected)), problems


def test_the_frequency_is_computed_from_the_campaign():
    assert sms_frequency(CAMPAIGN) == "Up to 5 msgs over 2 weeks"
    # 3 on the main path, 1 "anything we can help with?" (once, whichever day), 1 on the rebook path.
    first_two = [replace(CAMPAIGN.steps[CAMPAIGN.step_index(i)], next=None) for i in ("welcome-email", "welcome-sms")]
    one = CAMPAIGN.__class__(id="x", name="x", description="", steps=tuple(first_two))
    assert sms_frequency(one) == "Up to 1 msg over 1 week"


def test_a_first_text_missing_each_part_is_told_what():
    good = ("Hi Ana, this is Sunrise Wellness. Book: https://c.test/b/x Up to 5 msgs over 2 weeks. "
            "Msg & data rates may apply. Reply HELP for help, STOP to opt out.")
    assert first_sms_problems(good, CAMPAIGN, "Sunrise Wellness") == []
    for part, said in [("Sunrise Wellness", "name the clinic"), ("Up to 5 msgs over 2 weeks", "how often"),
                       ("Msg & data rates may apply", "Msg & data"), ("HELP", "HELP"), ("STOP", "STOP")]:
        problems = first_sms_problems(good.replace(part, ""), CAMPAIGN, "Sunrise Wellness")
        assert len(problems) == 1 and said in problems[0], (part, problems)
    assert "segments" in first_sms_problems(good + " x" * 200, CAMPAIGN, "Sunrise Wellness")[0]


def test_shipped_templates_stay_clean_with_the_clinic_name_in_every_slot(tmp_path: Path):
    from patient_drip.content.checks import check_all

    settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", clinic_name="Example Ketamine Clinic",
                             clinic_sms_name="Example Wellness")
    problems, _ = check_all(settings)
    assert problems == []


def test_the_editor_refuses_a_layout_whose_header_names_the_clinic_in_full(client, srt, clock):
    # With "… Ketamine Clinic" as the clinic name, a header of {{ clinic_name }} opens every email's
    # plain-text part with the drug's name.
    srt.settings = srt.settings.model_copy(update={"clinic_name": "Sunrise Ketamine Clinic",
                                                   "clinic_sms_name": "Sunrise Wellness"})
    layout = (ROOT / "templates" / "email" / "_layout.html").read_text()
    header = '<td class="header">{{ clinic_sms_name }}</td>'
    assert header in layout
    csrf = sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    preview = client.post("/admin/templates/preview/email/_layout.html", headers={"X-CSRF-Token": csrf},
                          json={"source": layout.replace(header, '<td class="header">{{ clinic_name }}</td>')}).json()
    assert not preview["ok"] and [p["rule"] for p in preview["problems"]] == ["discreet-opening"]
    unchanged = client.post("/admin/templates/preview/email/_layout.html", headers={"X-CSRF-Token": csrf},
                            json={"source": layout}).json()
    assert unchanged["ok"], unchanged["problems"]
