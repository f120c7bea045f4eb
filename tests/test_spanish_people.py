"""Spanish for the people side: the form in the browser's language (or `?lang=es`), the language and
interest stored through the intake rules (a known person's change waits for confirmation), the
Spanish consent wording recorded as shown, Spanish SMS keywords handled like the English ones with
answers in the contact's language, and staff setting language and interest (edit page, API, CSV)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from patient_drip.contacts.acknowledge import acknowledgement_text
from patient_drip.contacts.auto_replies import (crisis_reply, help_reply, request_confirmed_reply, restarted_reply,
                                                stopped_reply)
from patient_drip.contacts.consent import load_wording
from patient_drip.contacts.double_opt_in import confirmation_text, confirmed_reply
from patient_drip.contacts.edit import ContactEditErrors, parse_edit
from patient_drip.contacts.import_rows import validate_row
from patient_drip.contacts.column_mapping import field_for
from patient_drip.contacts.intake import change_confirmation_text
from patient_drip.contacts.replies import ReplyKind, classify_reply
from patient_drip.content.discretion import sms_issues
from patient_drip.content.guard import load_policy
from patient_drip.content.rendering import sms_info
from patient_drip.models import Channel, ConsentRecord, Contact, PendingChange, SmsConfirmation
from patient_drip.runtime import build_runtime
from patient_drip.settings import SMS_NAME_MAX_CHARS
from patient_drip.web import i18n
from patient_drip.web.app import create_app
from support.builders import ROOT, add_contact, contact, form_errors, make_settings

TOKEN = "twilio-test-token"
PHONE = "+13125550142"
FORM = {"first_name": "Lucía", "last_name": "Reyes", "email": "lucia@example.com", "phone": "(312) 555-0188",
        "consent_email": "yes", "consent_sms": "yes", "preferred_channel": "sms"}


@pytest.fixture
def rt(database_url):
    runtime = build_runtime(make_settings(database_url, twilio_auth_token=TOKEN))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt, clock):
    with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as test_client:
        yield test_client


def sms_in(client, body: str, sid: str, sender: str = PHONE) -> str:
    """Post an inbound text through the signed webhook; the automatic answer ("" when none)."""
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TOKEN).compute_signature("https://clinic.test/webhooks/twilio/sms", params)
    response = client.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    text = response.text
    return html.unescape(text.split("<Message>")[1].split("</Message>")[0]) if "<Message>" in text else ""


def set_language(rt, contact_id: int, language: str) -> None:
    with rt.sessions() as session, session.begin():
        session.get(Contact, contact_id).language = language


def the_contact(rt, email: str) -> Contact:
    with rt.sessions() as session:
        return session.scalar(select(Contact).where(Contact.email == email))


# -- the form ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["es-MX,es;q=0.9,en;q=0.8", "es", "fr-FR, es-419;q=0.7"])
def test_a_spanish_speaking_browser_gets_the_form_in_spanish(client, header):
    page = client.get("/consult", headers={"Accept-Language": header}).text
    assert '<html lang="es">' in page and "Solicite su consulta" in page and "Trastorno bipolar" in page
    assert load_wording(ROOT / "policy").wording(Channel.SMS, language="es").text in page
    assert 'name="language" value="es" checked' in page


@pytest.mark.parametrize("header", [None, "en-US,en;q=0.9", "es;q=0, en", "de"])
def test_other_browsers_get_the_form_in_english(client, header):
    page = client.get("/consult", headers={"Accept-Language": header} if header else {}).text
    assert '<html lang="en">' in page and "Request your free 15-minute consultation" in page
    assert "What would you like to learn about?" in page and 'name="language" value="en" checked' in page


def test_lang_es_on_the_link_selects_spanish_whatever_the_browser_says(client):
    page = client.get("/consult?lang=es", headers={"Accept-Language": "en-US"}).text
    assert '<html lang="es">' in page and "Solicitar mi consulta" in page


def test_every_text_of_the_public_pages_has_a_spanish_translation():
    from babel.messages.extract import extract_from_dir

    missing = [message for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT / "web" / "templates"), method_map=[("*.html", "jinja2")])
        if isinstance(message, str) and not i18n.has_translation("es", message)]
    assert not missing, missing


def test_a_spanish_submission_stores_language_interest_and_the_spanish_wording_it_showed(client, rt):
    response = client.post("/api/consultations?lang=es", data={**FORM, "language": "es", "interest": "bipolar",
                                                                "wording_language": "es"})
    assert response.status_code == 200 and "Gracias" in response.text and '<html lang="es">' in response.text
    person = the_contact(rt, "lucia@example.com")
    assert (person.language, person.interest) == ("es", "bipolar")
    wording = load_wording(ROOT / "policy")
    with rt.sessions() as session:
        email = session.scalar(select(ConsentRecord).where(ConsentRecord.contact_id == person.id))
        confirmation = session.scalar(select(SmsConfirmation))
    spanish_email = wording.wording(Channel.EMAIL, language="es")
    assert (email.wording_version, email.wording_text) == ("email-es-v1", spanish_email.text)
    # The number's one "Reply YES" text is the Spanish one, and it remembers the Spanish SMS wording ticked.
    assert confirmation.wording_version == "sms-confirm-es-v2" and "Responda SI" in confirmation.text
    assert confirmation.form_wording_version == "sms-es-v2"


def test_the_spanish_yes_confirms_texts_with_the_spanish_text_as_wording_and_answers_in_spanish(client, rt):
    client.post("/api/consultations", json={**FORM, "language": "es", "wording_language": "es"})
    answer = sms_in(client, "Sí", "SM-si", sender="+13125550188")
    assert answer.startswith(rt.settings.sms_brand) and "Gracias" in answer and "ALTO" in answer
    with rt.sessions() as session:
        granted = session.scalar(select(ConsentRecord).where(ConsentRecord.channel == "sms"))
    assert granted.wording_version == "sms-confirm-es-v2"
    assert granted.wording_text == confirmation_text(ROOT / "policy", rt.settings.sms_brand, "es").text


def test_a_json_request_without_a_language_gets_the_browsers(client, rt):
    client.post("/api/consultations", json=FORM, headers={"Accept-Language": "es-US"})
    assert the_contact(rt, "lucia@example.com").language == "es"


def test_spanish_validation_errors_name_every_field_in_spanish(client):
    page = client.post("/api/consultations?lang=es", data={"email": "lucia@", "phone": "12345", "interest": "cats",
                                                            "wording_language": "es"}).text
    assert "Por favor, corrija estas 4 cosas" in page
    for label in ("Nombre", "Correo electrónico", "Teléfono celular", "¿Sobre qué le gustaría informarse?"):
        assert f"{label}</a>:" in page
    assert "Por favor, díganos su nombre." in page and "Por favor, revise el correo electrónico." in page
    errors = form_errors(client.post("/api/consultations", json={"first_name": "Ana", "email": "ana@example.com",
                                                                 "language": "fr", "wording_language": "es"}))
    assert errors == {"language": "Por favor, elija inglés o español."}


def test_a_known_persons_language_from_the_public_form_waits_for_confirmation(client, rt, clock):
    known = add_contact(rt, clock.now, email="lucia@example.com", phone=None, consent=("email",), campaign=None)
    response = client.post("/api/consultations?lang=es", data={**FORM, "phone": "", "consent_sms": "",
                                                                "language": "es", "interest": "depression",
                                                                "wording_language": "es"})
    assert "Gracias" in response.text  # the same page as for anyone
    assert (contact(rt, known).language, contact(rt, known).interest) == ("en", "")  # nothing changed yet
    with rt.sessions() as session:
        pending = session.scalar(select(PendingChange).where(PendingChange.contact_id == known))
    assert pending.confirm_by == "email"
    token = rt.tokens.confirmation(pending.id)
    page = client.get(f"/confirm/{token}").text
    assert "Confirme su solicitud" in page and "escribirle en español" in page
    done = client.post(f"/confirm/{token}").text
    assert "quedó confirmado" in done and "idioma actualizado" in done
    assert (contact(rt, known).language, contact(rt, known).interest) == ("es", "depression")


def test_the_preference_page_speaks_the_contacts_language_and_records_its_wording(client, rt, clock):
    person = add_contact(rt, clock.now, consent=("sms",), campaign=None)
    set_language(rt, person, "es")
    url = f"/u/{rt.tokens.unsubscribe(person)}"
    page = client.get(url).text
    assert "Sus preferencias de mensajes" in page and "Recibir correos" in page
    spanish = load_wording(ROOT / "policy").wording(Channel.EMAIL, language="es")
    assert spanish.text in page
    done = client.post(url, data={"action": "start_email", "wording_version": spanish.version}).text
    assert "Recibirá nuestros correos." in done
    with rt.sessions() as session:
        record = session.scalar(select(ConsentRecord).where(ConsentRecord.channel == "email"))
    assert (record.wording_version, record.wording_text) == (spanish.version, spanish.text)


# -- keywords and automatic replies ---------------------------------------------------------------------


@pytest.mark.parametrize("word", ["ALTO", "parar", "Cancelar", "DETENER", "baja", "Fin", " ¡ALTO! ", "PARÁR"])
def test_spanish_stop_keywords_opt_out_like_stop_and_confirm_in_spanish(client, rt, clock, word):
    person = add_contact(rt, clock.now)
    set_language(rt, person, "es")
    answer = sms_in(client, word, "SM-stop")
    assert contact(rt, person).sms_consent is False and contact(rt, person).email_consent is True
    with rt.sessions() as session:
        withdrawn = session.scalar(select(ConsentRecord).where(ConsentRecord.action == "withdrawn"))
    assert (withdrawn.channel, withdrawn.method) == ("sms", "sms_keyword")
    assert answer == stopped_reply(rt.settings.sms_brand, "es") and "COMENZAR" in answer


@pytest.mark.parametrize("body", ["fin de semana me queda mejor", "¿baja la dosis?", "cancelar la cita del lunes",
                                  "si puedo ir el martes"])
def test_spanish_keywords_inside_a_sentence_are_messages_for_staff(client, rt, clock, body):
    person = add_contact(rt, clock.now)
    set_language(rt, person, "es")
    assert classify_reply(body).kind == ReplyKind.OTHER
    answer = sms_in(client, body, "SM-sentence")
    assert contact(rt, person).sms_consent is True
    assert answer == acknowledgement_text(rt.settings.sms_brand, rt.settings.clinic_hours, rt.settings.clinic_phone, "es")


def test_ayuda_answers_in_spanish_and_help_in_the_contacts_language(client, rt, clock):
    person = add_contact(rt, clock.now)
    assert sms_in(client, "HELP", "SM-h1") == help_reply(rt.settings.sms_brand, rt.settings.clinic_phone, "en")
    set_language(rt, person, "es")
    assert sms_in(client, "Ayuda", "SM-h2") == help_reply(rt.settings.sms_brand, rt.settings.clinic_phone, "es")
    assert sms_in(client, "HELP", "SM-h3") == help_reply(rt.settings.sms_brand, rt.settings.clinic_phone, "es")


def test_a_number_we_do_not_know_is_answered_in_its_keywords_language(client, rt):
    stranger = "+13125550199"
    assert "ayuda" in sms_in(client, "AYUDA", "SM-u1", sender=stranger)
    assert "for help" in sms_in(client, "HELP", "SM-u2", sender=stranger)
    assert sms_in(client, "ALTO", "SM-u3", sender=stranger) == stopped_reply(rt.settings.sms_brand, "es")


def test_comenzar_after_alto_restarts_texts_and_says_so_in_spanish(client, rt, clock):
    person = add_contact(rt, clock.now)
    set_language(rt, person, "es")
    sms_in(client, "ALTO", "SM-a")
    assert contact(rt, person).sms_consent is False
    assert sms_in(client, "Comenzar", "SM-b") == restarted_reply(rt.settings.sms_brand, "es")
    assert contact(rt, person).sms_consent is True


def test_english_keywords_and_answers_are_unchanged(client, rt, clock):
    person = add_contact(rt, clock.now)
    assert sms_in(client, "STOP", "SM-e1") == ""  # Twilio answers STOP itself
    assert contact(rt, person).sms_consent is False
    assert sms_in(client, "please stop texting me", "SM-e2") == ""  # already stopped: confirmed once only


BRAND = "B" * SMS_NAME_MAX_CHARS


@pytest.mark.parametrize("text", [
    confirmation_text(ROOT / "policy", BRAND, "es").text,
    confirmed_reply(ROOT / "policy", BRAND, "es"),
    help_reply(BRAND, "(312) 555-0100", "es"),
    stopped_reply(BRAND, "es"),
    restarted_reply(BRAND, "es"),
    request_confirmed_reply(BRAND, "es"),
    acknowledgement_text(BRAND, "L" * 40, "(312) 555-0100", "es"),
    change_confirmation_text(BRAND, 72, "es"),
    crisis_reply(BRAND, "(312) 555-0100", True, "es"),
], ids=["opt-in", "confirmed", "help", "stopped", "restarted", "request", "ack", "change", "crisis"])
def test_spanish_texts_are_gsm7_within_two_segments_and_discreet(text):
    info = sms_info(text)
    assert info.encoding == "GSM-7", text
    assert info.segments <= 2, (info, text)
    assert not sms_issues("reply", text, policy=load_policy(ROOT / "policy")), text


# -- staff -----------------------------------------------------------------------------------------------


def test_staff_edit_checks_language_and_interest_with_every_other_field():
    with pytest.raises(ContactEditErrors) as caught:
        parse_edit({"first_name": "Ana", "email": "ana@", "timezone": "America/Chicago", "language": "klingon",
                    "interest": "cats"})
    assert set(caught.value.errors) == {"email", "language", "interest"}
    values = parse_edit({"first_name": "Ana", "email": "ana@example.com", "timezone": "America/Chicago",
                         "language": "Español", "interest": "Not sure"})
    assert (values["language"], values["interest"]) == ("es", "unsure")
    assert "language" not in parse_edit({"first_name": "Ana", "email": "ana@example.com",
                                         "timezone": "America/Chicago"})  # not sent: left as it is


@pytest.mark.parametrize(("header", "field"), [("Idioma", "language"), ("Preferred language", "language"),
                                               ("Language", "language"), ("Interés", "interest")])
def test_import_understands_language_and_interest_headers(header, field):
    assert field_for(header) == field


def test_an_import_row_with_a_bad_language_names_the_field():
    row = validate_row(7, {"email": "ana@example.com", "language": "francés"}, "America/Chicago")
    assert (row.line, row.field) == (7, "language")
    good = validate_row(8, {"email": "ana@example.com", "language": "es", "interest": "depresión"}, "America/Chicago")
    assert (good.language, good.interest) == ("es", "depression")


def test_the_api_sets_and_shows_language_and_interest(rt, clock):
    from support.staff import token_for

    with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as web:
        headers = token_for(rt, "staff", now=clock.now)
        created = web.post("/api/v1/contacts", headers=headers, json={
            "first_name": "Ana", "email": "ana@example.com", "language": "es", "interest": "bipolar",
            "consent": ["email"]})
        assert created.status_code == 201, created.text
        body = created.json()["contact"]
        assert (body["language"], body["interest"]) == ("es", "bipolar")
        refused = web.post("/api/v1/contacts", headers=headers, json={"email": "bo@example.com", "language": "fr"})
        assert refused.status_code == 422 and "language" in refused.text
    with rt.sessions() as session:
        record = session.scalar(select(ConsentRecord))
    assert record.wording_version == "email-es-v1"


def test_the_wheel_ships_the_catalogs():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"locale/*/LC_MESSAGES/*.po"' in pyproject
    assert sorted(p.name for p in (ROOT / "web" / "locale" / "es" / "LC_MESSAGES").glob("*.po")) == \
        ["code.po", "messages.po"]
    assert Path(i18n.LOCALE_DIR).is_dir()
