"""The dispatcher's memoized email rendering is byte-for-byte the full rendering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_drip.content.campaign import load_campaigns
from support.builders import ROOT
from patient_drip.content.render_memo import MemoRenderer
from patient_drip.content.rendering import RenderedEmail, Renderer, RenderError
from patient_drip.content.tokens import LinkTokens

TOKENS = LinkTokens("memo-test-secret")
EMAIL_TEMPLATES = sorted(
    step.template for step in load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"].steps
    if step.channel == "email"
)


def context(first_name: str, contact_id: int, message_id: int, public_url: str = "https://clinic.test") -> dict[str, object]:
    return {
        "first_name": first_name, "clinic_name": "Riverside Wellness", "clinic_sms_name": "Riverside Wellness",
        "sms_frequency": "Up to 3 msgs over 2 weeks", "clinic_phone": "+1 217 555 0100",
        "clinic_address": "12 River Road, Springfield, IL 62701", "consultation_free": False,
        "consultation_minutes": 15, "consultation": "a 15-minute consultation", "booking_phrase": "Book a consultation",
        "booking_link": f"{public_url}/b/{TOKENS.booking(message_id)}",
        "unsubscribe_link": f"{public_url}/u/{TOKENS.unsubscribe(contact_id, message_id)}",
        "campaign_name": "Ketamine consultation follow-up", "step_id": "s", "channel": "email",
    }


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


NAMES = st.one_of(
    st.sampled_from(["", "Alex", "Mary-Jane", "José", "Zoë Ann", "O'Brien", "李", "Dr. Who", "  ", "<b>x</b>",
                     "1. Ann", "- dash", "a_b", "Ann & Bo", "Jr.", "x" * 100]),
    st.text(max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, ids=st.tuples(st.integers(1, 10**9), st.integers(1, 10**12)), template=st.sampled_from(EMAIL_TEMPLATES))
def test_memoized_rendering_equals_the_full_rendering(renderer, name, ids, template):
    memo = MemoRenderer(verify_every=0)
    for contact_id, message_id in (ids, (ids[0] + 1, ids[1] + 7)):  # a miss, then a hit
        ctx = context(name, contact_id, message_id)
        assert memo.render_email(renderer, template, ctx) == renderer.render_email(template, ctx)


def test_consecutive_messages_of_a_step_reuse_the_expensive_part(renderer):
    memo = MemoRenderer(verify_every=0)
    for index in range(50):
        ctx = context(["Alex", "Sam", "Priya"][index % 3], index, 1000 + index)
        assert memo.render_email(renderer, EMAIL_TEMPLATES[0], ctx) == renderer.render_email(EMAIL_TEMPLATES[0], ctx)
    assert memo.misses == 1 and memo.hits == 49 and memo.mismatches == 0


def test_a_template_that_branches_on_the_name_is_rendered_in_full(tmp_path: Path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "email" / "99-branch.html").write_text(
        '{% extends "email/_layout.html" %}{% block subject %}Hello{% endblock %}'
        '{% block body %}<p>{% if first_name == "Bob" %}Hi Bob!{% else %}Hi {{ first_name|upper }}{% endif %}'
        ' {{ booking_link }}</p>{% endblock %}', encoding="utf-8")
    renderer = Renderer(templates)
    memo = MemoRenderer(verify_every=0)
    for name in ("Bob", "Ann", "Bob", "Cy"):
        ctx = context(name, 1, 2)
        assert memo.render_email(renderer, "email/99-branch.html", ctx) == renderer.render_email("email/99-branch.html", ctx)
    assert memo.bypassed >= 2  # the upper-cased name cannot be substituted


def test_a_mismatch_is_caught_and_that_template_is_rendered_in_full_from_then_on(renderer):
    class LengthAware(Renderer):
        """Output that depends on the name's length, not just its text: substitution would be wrong."""

        def render_email(self, name, context):  # type: ignore[no-untyped-def]
            email = super().render_email(name, context)
            return RenderedEmail(email.subject, email.html, email.text + str(len(context["first_name"])),
                                 email.preheader)

    tricky = LengthAware(ROOT / "templates")
    memo = MemoRenderer(verify_every=0)
    for index in range(3):
        ctx = context("Alex", index, 10 + index)
        assert memo.render_email(tricky, EMAIL_TEMPLATES[0], ctx).text.endswith("4")
    assert memo.mismatches == 1 and memo.hits == 0


def test_render_errors_are_the_full_renderers(tmp_path: Path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "email" / "98-broken.html").write_text(
        '{% extends "email/_layout.html" %}{% block subject %}Hi{% endblock %}{% block body %}\n{{ nope }}'
        '{% endblock %}', encoding="utf-8")
    renderer = Renderer(templates)
    with pytest.raises(RenderError) as full:
        renderer.render_email("email/98-broken.html", context("Ann", 1, 2))
    with pytest.raises(RenderError) as memoized:
        MemoRenderer().render_email(renderer, "email/98-broken.html", context("Ann", 1, 2))
    assert str(memoized.value) == str(full.value)


def test_publishing_templates_starts_a_fresh_memo(renderer):
    memo = MemoRenderer(verify_every=0)
    memo.render_email(renderer, EMAIL_TEMPLATES[0], context("Ann", 1, 2))
    memo.render_email(Renderer(ROOT / "templates"), EMAIL_TEMPLATES[0], context("Ann", 1, 3))
    assert memo.misses == 2


# Names as a clinic has them: every one different, in many scripts, right-to-left ones, and the
# characters HTML and Markdown treat specially (those must make the memo render in full).
MANY_NAMES = ["Zoë", "Nguyễn", "王", "王小明", "Thị Mai", "محمد", "נועה", "Ольга", "Ελένη", "Søren", "Ana-Maria",
              "D'Andre", "O’Brien", "Jean-Luc", "Jr.", "<b>&\"'", "Ann & Bo", "a<b", "x\"y", "&amp;", "*Ann*", "_x_",
              "# Bo", "1. Ann", "- Bo", "Ａｎｎ", "İlker", "ſam", "\u202eevil", "Mary  Kate", "", "Ann\nBo", "Al\u00a0Bo"]
SMS_TEMPLATES = sorted(
    step.template for step in load_campaigns(ROOT / "campaigns", ROOT / "templates")["ketamine-consult"].steps
    if step.channel == "sms"
)


@pytest.mark.parametrize("template", EMAIL_TEMPLATES)
def test_each_person_gets_the_full_renderings_bytes_whatever_their_name(renderer, template):
    memo = MemoRenderer(verify_every=0)
    for index, name in enumerate(MANY_NAMES * 2):  # first seen, then memoized
        ctx = context(name, 100 + index, 5000 + index)
        assert memo.render_email(renderer, template, ctx) == renderer.render_email(template, ctx), name
    assert memo.mismatches == 0
    assert memo.hits > len(MANY_NAMES) // 2  # most names are substituted, not rendered


@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_each_person_gets_the_full_rendering_of_a_text_whatever_their_name(renderer, template):
    memo = MemoRenderer(verify_every=0)
    for index, name in enumerate(MANY_NAMES * 2):
        ctx = context(name, 100 + index, 5000 + index) | {"channel": "sms"}
        assert memo.render_sms(renderer, template, ctx) == renderer.render_sms(template, ctx), name
    assert memo.mismatches == 0 and memo.hits > len(MANY_NAMES) // 2


def test_distinct_names_reuse_one_rendering_per_step_without_rendering_the_template(renderer):
    memo = MemoRenderer(verify_every=0)
    names = ["Zoë", "Nguyễn", "王", "محمد", "Ольга", "Søren", "Ana-Maria", "Thị Mai", "Ελένη", "Liam"]
    for index, name in enumerate(names):
        ctx = context(name, index, 1000 + index)
        assert memo.render_email(renderer, EMAIL_TEMPLATES[0], ctx) == renderer.render_email(EMAIL_TEMPLATES[0], ctx)
    assert (memo.misses, memo.hits) == (1, len(names) - 1)


@pytest.mark.parametrize("body", [
    "{% filter upper %}Hi {{ first_name }}{% endfilter %}",
    "{% set greeting %}Hi {{ first_name }}{% endset %}{{ greeting|lower }}",
    "{% macro hi(n) %}Hi {{ n }}{% endmacro %}{{ hi(first_name)|upper }}",
    "{% if first_name|length > 3 %}long{% endif %} {{ first_name }}",
    "{{ first_name ~ '!' }}",
    "{% if not first_name %}nobody{% endif %}{{ first_name }}",
    "{{ ['a', 'b']|random }} {{ first_name }}",
])
def test_a_template_that_does_more_than_print_the_name_is_never_substituted_blindly(tmp_path: Path, body: str):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "email" / "97-odd.html").write_text(
        '{% extends "email/_layout.html" %}{% block subject %}Hello{% endblock %}'
        f'{{% block body %}}<p>{body}</p>{{% endblock %}}', encoding="utf-8")
    renderer = Renderer(templates)
    memo = MemoRenderer(verify_every=0)
    from patient_drip.content.template_shape import prints_only

    assert not prints_only(renderer.env, "email/97-odd.html", ("first_name",))
    for index, name in enumerate(["Bo", "Annabel", "Bo", "Zoë"]):
        ctx = context(name, index, 10 + index)
        if "random" in body:  # the random part differs between any two renders: compare the rest
            continue
        assert memo.render_email(renderer, "email/97-odd.html", ctx) == renderer.render_email("email/97-odd.html", ctx)


def test_the_shipped_templates_only_print_the_per_person_values(renderer):
    from patient_drip.content.template_shape import prints_only

    for template in EMAIL_TEMPLATES + SMS_TEMPLATES:
        assert prints_only(renderer.env, template, ("first_name", "booking_link", "unsubscribe_link")), template
