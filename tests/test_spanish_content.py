"""Spanish content (issue 13): every shipped template has a Spanish version under templates/es/,
checked by the same rules in Spanish (absolute wording, new claims against the Spanish claims
library only, discretion, the first text's carrier wording), with its own versions and its own
clinician approval; the English results are unchanged."""

from __future__ import annotations

from dataclasses import replace

import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from patient_drip.content.absolutes import load_absolute_rules
from patient_drip.content.campaign import load_campaigns
from patient_drip.content.checks import check_all, sample_context
from patient_drip.content.claim_library import add_claim, library_from_file, load_library
from patient_drip.content.claims import check_claims, load_medical_terms
from patient_drip.content.first_sms import first_sms_problems, sms_frequency
from patient_drip.content.guard import check_template_source, load_policy
from patient_drip.content.languages import (
    english_template,
    language_of_template,
    missing_translations,
    orphan_translations,
    template_in_language,
)
from patient_drip.content.rendering import RenderedEmail, Renderer
from patient_drip.content.send_rules import hold_reasons
from patient_drip.content.template_store import approve, published, save_draft
from patient_drip.models import ClaimRecord, TemplateStatus, TemplateVersion
from patient_drip.providers.types import Channel
from support.builders import ROOT, make_settings
from support.staff import add_user, client, sign_in_as, srt  # noqa: F401 (fixtures)

POLICY = ROOT / "policy"
TEMPLATES = ROOT / "templates"
CAMPAIGN = load_campaigns(ROOT / "campaigns", TEMPLATES)["ketamine-consult"]
SPANISH = sorted(p.relative_to(TEMPLATES).as_posix() for p in (TEMPLATES / "es").rglob("*") if p.is_file())
ENGLISH = sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*")
                 if p.is_file() and language_of_template(p.relative_to(TEMPLATES).as_posix()) == "en")
ES = load_policy(POLICY, "es")
EN = load_policy(POLICY)


def _spanish(channel: str, **text: str):  # type: ignore[no-untyped-def]
    return check_claims(channel, library=library_from_file(POLICY, "es"), terms=load_medical_terms(POLICY, "es"),
                        absolutes=load_absolute_rules(POLICY, "es"), **text)


def _step(name: str):  # type: ignore[no-untyped-def]
    """The step that sends `name` (an A/B variant's template: the step of the variant), as sent."""
    english = english_template(name)
    for step in CAMPAIGN.message_steps:
        if english == step.template or any(v.template == english for v in step.variants):
            return replace(step, template=english)
    raise AssertionError(f"no step sends {name}")


# --- the templates ---------------------------------------------------------------------------


def test_every_english_template_has_its_spanish_version_and_no_more():
    assert [template_in_language(name, "es") for name in ENGLISH] == SPANISH
    assert missing_translations(TEMPLATES, [step.template for step in CAMPAIGN.message_steps]) == []
    assert orphan_translations(TEMPLATES) == []


@pytest.mark.parametrize("name", [n for n in SPANISH if not Path(n).name.startswith("_")])
def test_every_spanish_template_renders_and_passes_every_send_rule(name):
    settings = make_settings("sqlite:///unused.db")
    step = _step(name)
    renderer = Renderer(TEMPLATES)
    context = sample_context(settings, step.id, str(step.channel), CAMPAIGN.name, campaign=CAMPAIGN,
                             longest_offer=step.channel == Channel.SMS, language="es")
    rendered: RenderedEmail | str
    if step.channel == Channel.EMAIL:
        rendered = renderer.render_email(name, context)
        assert 'lang="es"' in rendered.html and "988" in rendered.text and "Darse de baja" in rendered.html
    else:
        rendered = renderer.render_sms(name, context)
        assert "ALTO" in rendered
        if "{{ consultation }}" in (TEMPLATES / english_template(name)).read_text(encoding="utf-8"):
            assert "una consulta" in rendered
    reasons = hold_reasons(rendered, campaign=CAMPAIGN, step=step, values=context, settings=settings, policy=EN,
                           language="es")
    assert reasons == []


def test_templates_check_passes_both_languages_and_names_a_translation_of_nothing(tmp_path):
    assert check_all(make_settings("sqlite:///unused.db"))[0] == []
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    (tmp_path / "templates" / "es" / "sms" / "09-extra.txt").write_text("Hola {{ booking_link }}", encoding="utf-8")
    problems, _ = check_all(make_settings("sqlite:///unused.db", templates_dir=tmp_path / "templates"))
    assert any("es/sms/09-extra.txt" in p and "[translation]" in p and "sms/09-extra.txt" in p for p in problems)


def test_a_missing_spanish_template_is_named(tmp_path):
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    (tmp_path / "templates" / "es" / "sms" / "02-checkin.txt").unlink()
    steps = [step.template for step in CAMPAIGN.message_steps]
    assert missing_translations(tmp_path / "templates", steps) == ["sms/02-checkin.txt"]


# --- the claims guard in Spanish -------------------------------------------------------------


@pytest.mark.parametrize("sentence", [
    "La ketamina cura la depresión.",
    "Los resultados están garantizados.",
    "Es un tratamiento sin efectos secundarios.",
    "Funciona en el 100 % de los casos.",
    "La ketamina está aprobada por la FDA para la depresión.",
    "Ofrece un alivio permanente.",
    "Su eficacia está comprobada.",
    "Es seguro para todos.",
    "Los resultados son milagrosos.",
])
def test_absolute_wording_is_refused_in_spanish(sentence):
    finding = _spanish("sms", text=sentence).findings[0]
    assert finding.status == "refused" and "is not allowed" in finding.message


def test_the_spanish_cure_is_not_caught_by_the_english_rules_alone():
    english = check_claims("sms", library=library_from_file(POLICY), terms=load_medical_terms(POLICY),
                           absolutes=load_absolute_rules(POLICY), text="La ketamina cura la depresión.")
    assert [f.status for f in english.findings] == []  # why the language has to reach the check
    assert [f.status for f in _spanish("sms", text="La ketamina cura la depresión.").findings] == ["refused"]


def test_negated_spanish_safety_language_is_not_refused_but_needs_the_library():
    assert [f.status for f in _spanish("sms", text="La ketamina no es una cura.").findings] == ["new"]


def test_an_unapproved_spanish_medical_sentence_is_a_new_claim():
    findings = _spanish("sms", text="La ketamina ayuda a la mayoría de las personas a sentirse mejor en una semana.")
    assert [f.status for f in findings.findings] == ["new"]


def test_a_spanish_message_is_checked_against_spanish_claims_only():
    approved_in_english = "Ketamine can work within days of starting treatment."
    assert [f.status for f in _spanish("sms", text=approved_in_english).findings] == ["new"]
    approved_in_spanish = "La ketamina puede funcionar a los pocos días de comenzar el tratamiento."
    assert [f.status for f in _spanish("sms", text=approved_in_spanish).findings] == ["approved"]


def test_templates_check_reports_spanish_absolute_and_new_claims_with_file_and_line(tmp_path):
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    path = tmp_path / "templates" / "es" / "email" / "01-welcome.html"
    source = path.read_text(encoding="utf-8").replace("Empecemos por lo básico.", "Empecemos por lo básico. La ketamina "
                                                      "cura la depresión. La ketamina ayuda a casi todos.")
    path.write_text(source, encoding="utf-8")
    problems, _ = check_all(make_settings("sqlite:///unused.db", templates_dir=tmp_path / "templates"))
    mine = [p for p in problems if "es/email/01-welcome.html:8:" in p]
    assert any("[absolute-claim]" in p and "cura" in p for p in mine)
    assert any("[new-claim]" in p and "La ketamina ayuda a casi todos." in p for p in mine)


def test_a_spanish_number_must_be_an_approved_one():
    source = (TEMPLATES / "es" / "email" / "04-results.html").read_text(encoding="utf-8")
    issues = check_template_source("es/email/04-results.html", source.replace("60-80 %", "90 %"),
                                   channel=Channel.EMAIL, policy=ES, templates_dir=TEMPLATES)
    assert any(i.rule == "approved-claim" and "90 %" in i.message for i in issues)


def test_a_spanish_template_may_not_call_the_consultation_free():
    source = (TEMPLATES / "es" / "sms" / "03-reminder.txt").read_text(encoding="utf-8")
    issues = check_template_source("es/sms/03-reminder.txt", source.replace("cuando", "gratis cuando"),
                                   channel=Channel.SMS, policy=ES, templates_dir=TEMPLATES)
    assert [i.rule for i in issues] == ["offer-terms"]


# --- discretion and the first text -----------------------------------------------------------


@pytest.mark.parametrize("words", ["sobre la ketamina", "para la depresión", "para la depresion",
                                   "del trastorno bipolar", "con antidepresivos", "about ketamine"])
def test_a_spanish_text_that_names_a_drug_or_diagnosis_is_refused(words):
    settings = make_settings("sqlite:///unused.db")
    step = _step("es/sms/02-checkin.txt")
    context = sample_context(settings, step.id, "sms", CAMPAIGN.name, campaign=CAMPAIGN, language="es")
    source = (TEMPLATES / "es" / "sms" / "02-checkin.txt").read_text(encoding="utf-8")
    edited = source.replace("para resolverlas", f"{words} para resolverlas")
    assert any(i.rule == "discreet-sms" for i in check_template_source("es/sms/02-checkin.txt", edited,
                                                                       channel=Channel.SMS, policy=ES))
    body = Renderer(TEMPLATES, overrides={"es/sms/02-checkin.txt": edited}).render_sms("es/sms/02-checkin.txt",
                                                                                        context)
    reasons = hold_reasons(body, campaign=CAMPAIGN, step=step, values=context, settings=settings, policy=EN,
                           language="es")
    assert any(r.startswith("[discreet-sms] es/sms/02-checkin.txt") for r in reasons)


def test_a_spanish_subject_that_names_the_drug_is_refused():
    source = (TEMPLATES / "es" / "email" / "01-welcome.html").read_text(encoding="utf-8")
    edited = source.replace("Su solicitud de consulta", "Su consulta sobre la ketamina")
    issues = check_template_source("es/email/01-welcome.html", edited, channel=Channel.EMAIL, policy=ES,
                                   templates_dir=TEMPLATES)
    assert [i.rule for i in issues] == ["discreet-subject"]


def _first_text(source: str) -> str:
    settings = make_settings("sqlite:///unused.db")
    context = sample_context(settings, "welcome-sms", "sms", CAMPAIGN.name, campaign=CAMPAIGN, language="es")
    return Renderer(TEMPLATES, overrides={"es/sms/01-welcome.txt": source}).render_sms("es/sms/01-welcome.txt",
                                                                                         context)


def test_the_spanish_first_text_without_alto_or_stop_is_refused():
    source = (TEMPLATES / "es" / "sms" / "01-welcome.txt").read_text(encoding="utf-8")
    brand = "Riverside Wellness"
    assert first_sms_problems(_first_text(source), CAMPAIGN, brand, language="es") == []
    without = _first_text(source.replace(", ALTO o STOP para cancelar", ""))
    assert first_sms_problems(without, CAMPAIGN, brand, language="es") == [
        "the first text message of ketamine-consult does not say how to opt out (ALTO or STOP)"]
    stop_only = _first_text(source.replace("ALTO o STOP", "STOP"))
    assert first_sms_problems(stop_only, CAMPAIGN, brand, language="es") == []
    no_rates = _first_text(source.replace("Pueden aplicarse tarifas de mensajes y datos. ", ""))
    assert any("Pueden aplicarse tarifas" in p for p in first_sms_problems(no_rates, CAMPAIGN, brand, language="es"))
    settings = make_settings("sqlite:///unused.db")
    step = _step("es/sms/01-welcome.txt")
    context = sample_context(settings, step.id, "sms", CAMPAIGN.name, campaign=CAMPAIGN, language="es")
    assert "[first-sms]" in " ".join(hold_reasons(without, campaign=CAMPAIGN, step=step, values=context,
                                                  settings=settings, policy=EN, language="es"))


def test_the_spanish_frequency_and_offer_are_worded_in_spanish():
    assert sms_frequency(CAMPAIGN, "es") == "Hasta 5 mensajes en 2 semanas"  # 3 main, 1 help, 1 rebook
    settings = make_settings("sqlite:///unused.db", consultation_free=True)
    context = sample_context(settings, "s", "email", "c", language="es")
    assert context["consultation"] == "una consulta gratuita de 15 minutos"
    assert context["booking_phrase"] == "Reserve una consulta"


# --- the English results are unchanged -------------------------------------------------------


def test_the_english_rules_are_unchanged():
    assert EN.language == "en" and EN.in_language("en") is EN and EN.in_language("es") is ES
    assert sms_frequency(CAMPAIGN) == "Up to 5 msgs over 2 weeks"
    source = (TEMPLATES / "sms" / "01-welcome.txt").read_text(encoding="utf-8")
    settings = make_settings("sqlite:///unused.db")
    context = sample_context(settings, "welcome-sms", "sms", CAMPAIGN.name, campaign=CAMPAIGN)
    body = Renderer(TEMPLATES).render_sms("sms/01-welcome.txt", context)
    assert first_sms_problems(body, CAMPAIGN, "Riverside Wellness") == []
    # ALTO is not the English opt-out word
    alto = Renderer(TEMPLATES, overrides={"sms/01-welcome.txt": source.replace("STOP", "ALTO")}).render_sms(
        "sms/01-welcome.txt", context)
    assert first_sms_problems(alto, CAMPAIGN, "Riverside Wellness") == [
        "the first text message of ketamine-consult does not say how to opt out (STOP)"]
    assert context["consultation"] == "a 15-minute consultation" and context["booking_phrase"] == "Book a consultation"


# --- the template store: a Spanish template is a template of its own ------------------------


def test_spanish_templates_are_published_on_init_with_their_own_versions(srt):  # noqa: F811
    with srt.sessions() as session:
        live = published(session, "es/email/01-welcome.html")
        assert live is not None and live.version == 1 and "Gracias por comunicarse" in live.source
        assert published(session, "email/01-welcome.html").source != live.source
        # the safety paragraph waits for a clinician in Spanish too
        pending = session.scalars(select(TemplateVersion).where(TemplateVersion.name == "es/email/03-how-it-works.html",
                                                                TemplateVersion.status == TemplateStatus.DRAFT)).all()
        assert [v.version for v in pending] == [2] and "Antes de decidir" in pending[0].source
        assert "Antes de decidir" not in published(session, "es/email/03-how-it-works.html").source


def test_an_english_approval_does_not_publish_the_spanish_template(srt, clock):  # noqa: F811
    english, spanish = "sms/03-reminder.txt", "es/sms/03-reminder.txt"
    with srt.sessions() as session, session.begin():
        for name, extra in ((english, "See you soon."), (spanish, "Hasta pronto.")):
            source = published(session, name).source
            save_draft(session, name, source.replace("{{ booking_link }}", f"{extra} {{{{ booking_link }}}}"),
                       clock.now, "marketing@clinic.test")
        approve(session, session.scalar(select(TemplateVersion).where(TemplateVersion.name == english,
                                                                      TemplateVersion.version == 2)),
                clock.now, "dr.kim@clinic.test", clinician=True)
    with srt.sessions() as session:
        assert "See you soon." in published(session, english).source
        assert published(session, spanish).version == 1 and "Hasta pronto." not in published(session, spanish).source
        draft = session.scalar(select(TemplateVersion).where(TemplateVersion.name == spanish,
                                                             TemplateVersion.version == 2))
        assert draft.status == TemplateStatus.DRAFT


def test_a_spanish_draft_needs_spanish_claims_and_its_own_approval(client, srt, clock):  # noqa: F811
    name = "es/email/05-consultation.html"
    new = "La ketamina ayuda a casi todos en una semana."
    marketing = sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    with srt.sessions() as session:
        source = published(session, name).source
    edited = source.replace("Esperamos saber de usted.", f"Esperamos saber de usted. {new}")
    saved = client.post(f"/admin/templates/edit/{name}", data={"source": edited, "note": "edit", "action": "save",
                                                              "csrf_token": marketing})
    assert saved.status_code == 303, saved.text
    doctor = sign_in_as(client, srt, add_user(srt, "clinician", "dr.kim@clinic.test"), clock.now)
    review = client.get(f"/admin/templates/review/{name}?v=2").text
    assert f'<mark class="claim-new">{new}</mark>' in review and 'name="language" value="es"' in review
    assert client.post(f"/admin/templates/approve/{name}", data={"version": 2, "csrf_token": doctor}).status_code == 409
    added = client.post("/admin/claims", data={"text": new, "source_kind": "citation", "language": "es",
                                               "source": "A study the clinician cites (journal, 2024)",
                                               "note": "translation of a new English claim", "csrf_token": doctor})
    assert added.status_code == 303, added.text
    assert client.post(f"/admin/templates/approve/{name}", data={"version": 2, "csrf_token": doctor}).status_code == 303
    with srt.sessions() as session:
        assert new in published(session, name).source
        assert published(session, "email/05-consultation.html").version == 1
        assert any(c.text == new for c in load_library(session, "es").claims)
        assert not any(c.text == new for c in load_library(session, "en").claims)
    page = client.get("/admin/claims").text
    assert "Español" in page and 'name="language"' in page


def test_the_spanish_claims_are_seeded_as_translations_of_english_ones(srt, clock):  # noqa: F811
    with srt.sessions() as session, session.begin():
        spanish = session.scalars(select(ClaimRecord).where(ClaimRecord.language == "es")).all()
        english_keys = {c.claim_key for c in session.scalars(select(ClaimRecord).where(ClaimRecord.language == "en"))}
        assert len(spanish) == len(library_from_file(POLICY, "es").claims) > 70
        assert all(c.note.startswith("translation of ") and c.note.removeprefix("translation of ") in english_keys
                   for c in spanish)
        row = add_claim(session, "Otro texto sobre el tratamiento.", "clinic_page", "", clock.now, "dr@clinic.test",
                        clinician=True, language="es")
        assert row.language == "es"
