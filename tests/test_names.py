"""Names are data, not content: the one name rule (`content.names`), its use at the public form and
in every message, transliteration for SMS, and the nameless fallback over two segments — the same
in a real send and in `drip simulate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from click.testing import CliRunner
from sqlalchemy import select

from patient_drip.cli import main
from patient_drip.content.context import message_context, render_sms_fitted
from patient_drip.content.names import clean_first_name, message_first_name, name_problem, sms_first_name
from patient_drip.content.rendering import Renderer, sms_info
from patient_drip.content.tokens import LinkTokens
from patient_drip.contacts.fields import FieldError, check_first_name
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import Event, EventKind, Message
from patient_drip.runtime import build_runtime
from support.builders import ROOT, START, add_contact, make_settings

PHISHING = "URGENT: your card is blocked, verify at https://evil.example/x"
EMOJI_100 = "😀" * 100

# (typed, reason it is refused or None, as an email shows it, as an SMS shows it)
NAMES = [
    ("Dana", None, "Dana", "Dana"),
    ("  Mary   Jane ", None, "Mary Jane", "Mary Jane"),
    ("Mary-Jane", None, "Mary-Jane", "Mary-Jane"),
    ("O'Brien", None, "O'Brien", "O'Brien"),
    ("O’Brien", None, "O’Brien", "O'Brien"),
    ("Zoë", None, "Zoë", "Zoe"),
    ("Zoe\u0308", None, "Zoë", "Zoe"),  # typed as e + combining diaeresis
    ("Nguyễn", None, "Nguyễn", "Nguyen"),
    ("王", None, "王", "Wang"),
    ("José", None, "José", "José"),  # é is in the GSM alphabet: kept
    ("Ørjan", None, "Ørjan", "Ørjan"),
    ("Juan Carlos de la Cruz", None, "Juan Carlos de la Cruz", "Juan Carlos de la Cruz"),
    ("", None, "", ""),
    (PHISHING, "link", "", ""),
    ("visit evil.example", "link", "", ""),
    ("www.evil", "link", "", ""),
    ("Call 5551234", "numbers", "", ""),
    ("Dana2", "numbers", "", ""),
    ("<b>Dana</b>", "symbols", "", ""),
    ("{{ clinic_name }}", "symbols", "", ""),
    ("Dana@home", "symbols", "", ""),
    ("Dana!", "only letters", "", ""),
    ("J. R.", "only letters", "", ""),
    ("Ali 😀", "only letters", "", ""),
    (EMOJI_100, "only letters", "", ""),
    ("A" * 41, "at most 40 characters", "", ""),
    ("your card is blocked verify now", "at most 5 words", "", ""),
    ("--", "only letters", "", ""),
]


@pytest.mark.parametrize(("typed", "reason", "email", "sms"), NAMES, ids=[repr(n[0][:20]) for n in NAMES])
def test_the_name_rule_and_how_each_channel_shows_a_name(typed, reason, email, sms):
    problem = name_problem(typed)
    assert (problem is None) == (reason is None) and (reason is None or reason in problem), problem
    assert clean_first_name(typed) == message_first_name(typed, "email") == email
    assert sms_first_name(typed) == message_first_name(typed, "sms") == sms
    if sms:
        sms.encode("gsm03.38")  # every SMS name is GSM-7: it cannot switch a text to UCS-2


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet="王小明Nguyễn Zoë😀-'’.:/ ", max_size=60))
def test_whatever_is_stored_an_sms_name_is_short_gsm_letters_or_nothing(stored):
    name = message_first_name(stored, "sms")
    if name:
        name.encode("gsm03.38")
        assert len(name) <= 40 and name_problem(name) is None
    shown = message_first_name(stored, "email")
    assert shown == "" or (len(shown) <= 40 and name_problem(shown) is None)
    assert (shown == "") == (name_problem(stored) is not None or not stored.split())


def test_the_form_refuses_a_name_that_is_not_a_name_and_says_why():
    with pytest.raises(FieldError) as caught:
        check_first_name(PHISHING)
    assert caught.value.field == "first_name" and "link" in caught.value.message
    assert check_first_name(" Zoë ") == "Zoë"


def test_every_message_context_cleans_the_name(settings):
    for channel in ("sms", "email"):
        context = message_context(settings, LinkTokens("k"), first_name=PHISHING, contact_id=1, message_id=1,
                                  campaign_name="c", step_id="s", channel=channel, sms_frequency="Up to 3 msgs over 2 weeks")
        assert context["first_name"] == ""
    context = message_context(settings, LinkTokens("k"), first_name="王", contact_id=1, message_id=1,
                              campaign_name="c", step_id="s", channel="sms", sms_frequency="Up to 3 msgs over 2 weeks")
    assert context["first_name"] == "Wang"


# -- more than two segments: sent nameless, and recorded -------------------------------------------


FILLER = "Thank you for your interest. " * 10  # 290 GSM characters


def test_a_text_too_long_with_the_name_is_rendered_nameless(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "long.txt").write_text("Hi{% if first_name %} {{ first_name }}{% endif %}, " + FILLER)
    renderer = Renderer(tmp_path)
    short = render_sms_fitted(renderer, "sms/long.txt", {"first_name": "Al"})
    assert not short.name_dropped and short.body.startswith("Hi Al,")
    long_name = "Maximiliana Alejandra de la Santisima"
    fitted = render_sms_fitted(renderer, "sms/long.txt", {"first_name": long_name})
    assert fitted.name_dropped and fitted.segments_with_name == 3
    assert fitted.body.startswith("Hi, Thank") and long_name not in fitted.body
    assert sms_info(fitted.body).segments == 2


@pytest.fixture
def long_sms_templates(tmp_path) -> Path:
    """The shipped templates, with filler in the welcome SMS so that a long name takes it over two
    segments while the nameless text still fits."""
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    welcome = folder / "sms" / "01-welcome.txt"
    # Nameless about 295 characters of the 306 two segments hold: "Al" still fits, a long name does not.
    welcome.write_text(welcome.read_text().rstrip() + " " + "Thanks again." * 3)
    return folder


def test_the_dispatcher_sends_nameless_when_the_name_is_too_long_and_records_it(database_url, long_sms_templates):
    rt = build_runtime(make_settings(database_url, templates_dir=long_sms_templates))
    try:
        long_name = "Maximiliana Alejandra de la Santisima"
        short = add_contact(rt, START, first_name="Al", email=None, phone="+13125550111", consent=("sms",))
        long = add_contact(rt, START, first_name=long_name, email=None, phone="+13125550112", consent=("sms",))
        Dispatcher(rt, "w").run_once(START)
        with rt.sessions() as session:
            texts = {m.contact_id: m for m in session.scalars(select(Message).where(Message.channel == "sms"))}
            dropped = session.scalars(select(Event).where(Event.kind == EventKind.SMS_NAME_DROPPED)).all()
        assert texts[short].body_text.startswith("Hi Al,") and sms_info(texts[short].body_text).segments <= 2
        assert texts[long].body_text.startswith("Hi,") and long_name not in texts[long].body_text
        assert sms_info(texts[long].body_text).segments == 2
        assert [(e.contact_id, e.message_id, e.detail["segments_with_name"]) for e in dropped] == [
            (long, texts[long].id, 3)]
    finally:
        rt.close()


def test_the_dispatcher_never_texts_a_stored_phishing_name(rt):
    contact_id = add_contact(rt, START, first_name=PHISHING[:100], email=None, consent=("sms",))  # imported before the rule
    Dispatcher(rt, "w").run_once(START)
    with rt.sessions() as session:
        [text] = session.scalars(select(Message).where(Message.contact_id == contact_id,
                                                       Message.channel == "sms")).all()
    assert text.body_text.startswith("Hi,") and "evil" not in text.body_text and "URGENT" not in text.body_text


# -- drip simulate applies the same rules ------------------------------------------------------------


@pytest.fixture
def simulate_env(monkeypatch, tmp_path):
    for key, value in {"DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'drip.db'}", "DRIP_PUBLIC_URL": "https://clinic.test",
                       "DRIP_CLINIC_NAME": "Riverside Wellness"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", ["Zoë", "Nguyễn", "王", EMOJI_100, PHISHING, "Maximiliana Alejandra de la Santisima"])
def test_simulate_keeps_every_text_within_two_segments_whatever_the_name(simulate_env, name):
    result = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--format", "json", "--first-name", name],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    texts = [m["text"] for m in json.loads(result.output) if m["channel"] == "sms"]
    assert len(texts) == 3
    for text in texts:
        info = sms_info(text)
        assert info.segments <= 2 and info.encoding == "GSM-7", (info, text)
        assert "evil" not in text and "😀" not in text
    if name == "王":
        assert all(text.startswith("Hi Wang,") for text in texts)


def test_simulate_text_format_says_when_a_name_was_left_out(simulate_env, long_sms_templates, monkeypatch):
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(long_sms_templates))
    result = CliRunner().invoke(main, ["simulate", "ketamine-consult", "--first-name",
                                       "Maximiliana Alejandra de la Santisima"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sent without the name, which made it too long" in result.output
