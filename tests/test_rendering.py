"""Rendering: sandboxed, strict, escaped, bounded; SMS segments counted like a carrier."""

from __future__ import annotations


import gsm0338  # noqa: F401  (registers the "gsm03.38" codec the test compares with)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.builders import ROOT
from patient_drip.content.languages import english_template
from patient_drip.content.rendering import RenderError, Renderer, html_to_text, sms_info

CTX = {"first_name": "<b>Eve</b>", "clinic_name": "Riverside", "clinic_sms_name": "Riverside",
       "sms_frequency": "Up to 3 msgs over 2 weeks", "clinic_phone": "+1 217 555 0100",
       "clinic_address": "12 River Road", "consultation_free": False, "consultation_minutes": 15,
       "consultation": "a 15-minute consultation", "booking_phrase": "Book a consultation", "booking_link": "https://clinic.test/b/x", "unsubscribe_link": "https://clinic.test/u/y",
       "campaign_name": "Demo", "step_id": "one", "channel": "email"}


def renderer_with(source: str, name: str = "email/t.html") -> Renderer:
    return Renderer(ROOT / "templates", overrides={name: source})


@pytest.mark.parametrize("name", sorted(str(p.relative_to(ROOT / "templates")) for p in (ROOT / "templates").rglob("*")
                                        if p.is_file() and not p.name.startswith("_")))
def test_every_shipped_template_renders_for_a_sample_contact(name):
    renderer = Renderer(ROOT / "templates")
    if english_template(name).startswith("email/"):  # es/email/… too
        email = renderer.render_email(name, CTX)
        assert email.subject and "&lt;b&gt;Eve&lt;/b&gt;" in email.html  # names are escaped
        assert "988" in email.text and "https://clinic.test/u/y" in email.html and "<style" not in email.html
        assert "https://clinic.test/b/x" in email.text
    else:
        body = renderer.render_sms(name, {**CTX, "first_name": "Eve", "channel": "sms"})
        assert "https://clinic.test/b/x" in body and sms_info(body).segments <= 2


def test_undefined_variable_is_an_error_with_a_line():
    renderer = renderer_with("{% extends 'email/_layout.html' %}{% block subject %}Hi{% endblock %}"
                             "{% block body %}\n\n{{ frist_name }}{% endblock %}")
    with pytest.raises(RenderError, match="frist_name"):
        renderer.render_email("email/t.html", CTX)


def test_syntax_error_names_file_and_line():
    renderer = renderer_with("line one\n{% if %}\n", "sms/t.txt")
    with pytest.raises(RenderError) as caught:
        renderer.render_sms("sms/t.txt", CTX)
    assert str(caught.value).startswith("sms/t.txt:2:")


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ clinic_name.__class__.__base__ }}",
])
def test_sandbox_refuses_python_internals(attack):
    with pytest.raises(RenderError):
        renderer_with(attack, "sms/t.txt").render_sms("sms/t.txt", CTX)


def test_runaway_output_is_bounded():
    source = "{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}"
    with pytest.raises(RenderError, match="larger than"):
        renderer_with(source, "sms/t.txt").render_sms("sms/t.txt", CTX)


@pytest.mark.parametrize(("body", "encoding", "segments"), [
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 306, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("[" * 80, "GSM-7", 1),  # extension characters count twice
    ("[" * 81, "GSM-7", 2),
    ("a" * 69 + "\u2019", "UCS-2", 1),  # one curly quote switches the whole message
    ("a" * 70 + "\u2019", "UCS-2", 2),
    ("a\u00a0b", "UCS-2", 1),  # non-breaking space is not GSM-7
])
def test_sms_segments(body, encoding, segments):
    info = sms_info(body)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_text_part_keeps_links_readable_and_drops_the_preheader():
    html = '<span class="preheader">hidden preview</span><p>Hello</p><p><a href="https://x.test/b/1">Book now</a></p>'
    text = html_to_text(html)
    assert "hidden preview" not in text and "Book now: https://x.test/b/1" in text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60) | st.text(alphabet="€[]{}|~^\\ \nabcÄéñ@£$¥èùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ`’", max_size=60))
def test_gsm_septets_are_the_codecs_own_count(text: str):
    from patient_drip.content.gsm import gsm_septets

    try:
        expected: int | None = len(text.encode("gsm03.38"))
    except UnicodeEncodeError:
        expected = None
    assert gsm_septets(text) == expected
