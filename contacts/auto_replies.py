"""The automatic answers to a patient's text (HELP, a stop, a restart, a confirmed request, a possible
crisis), in English and Spanish, and which language a number is answered in.

Language (`reply_language`): a contact's own (`contact.language`, from the form, staff or an import);
a number that is no contact is answered in the language of its keyword (AYUDA, ALTO… in Spanish),
anything else in English. A single language, not both at once: a bilingual text would need about
twice the segments, and a number we do not know has told us nothing but the word it sent.

Every text is plain GSM-7 — Spanish included: é ñ ¿ ¡ ü are in GSM 03.38, á í ó ú are not and
would turn the whole text into UCS-2 (70 characters a segment instead of 160), so the Spanish is
worded without them ("SI", "jornada laboral") — fits in 2 segments for the settings' limits, and
is discreet: no diagnosis or drug is named (a text shows on the lock screen). Tests check all three.

The double opt-in texts live in `policy/consent_wording.yaml` (they are consent wording, versioned);
the question acknowledgement in `contacts.acknowledge`; the known-number change request in
`contacts.intake`. Imports only `content.languages`.
"""

from __future__ import annotations

from patient_drip.content.languages import DEFAULT_LANGUAGE


def reply_language(contact_language: str | None, keyword_language: str | None) -> str:
    """The language to answer in: the contact's when the number is a contact, else the keyword's
    (`contacts.replies.keyword_language`), else English."""
    return contact_language or keyword_language or DEFAULT_LANGUAGE


def help_reply(brand: str, phone: str, language: str) -> str:
    """The answer to HELP / AYUDA: who we are, the clinic's phone, how to stop, rates."""
    if language == "es":
        return (f"{brand}: para ayuda llame al {phone}. Responda ALTO para cancelar. "
                f"Pueden aplicarse tarifas de msjs y datos.")
    return f"{brand}: for help call {phone}. Reply STOP to opt out. Msg & data rates may apply."


def stopped_reply(brand: str, language: str) -> str:
    """The one confirmation of an opt-out we answer ourselves (a free-text opt-out, or a Spanish
    keyword, which the carrier and Twilio do not act on): no more texts, and how to come back."""
    if language == "es":
        return f"{brand}: ya no le enviaremos mensajes de texto. Responda COMENZAR para volver a recibirlos."
    return f"{brand}: you will get no more texts from us. Reply START to opt back in."


def restarted_reply(brand: str, language: str) -> str:
    """The answer to a Spanish START keyword (COMENZAR, INICIAR) that restarted texts: Twilio answers
    the English START itself, never these."""
    if language == "es":
        return (f"{brand}: listo, volvemos a enviarle mensajes de texto. Pueden aplicarse tarifas de msjs "
                f"y datos. AYUDA para ayuda, ALTO para cancelar.")
    return (f"{brand}: you will get our texts again. Msg & data rates may apply. "
            f"Reply HELP for help, STOP to opt out.")


def request_confirmed_reply(brand: str, language: str) -> str:
    """The answer to a YES / SI that confirmed a held request (`contacts.intake.confirm_change_by_text`)."""
    if language == "es":
        return f"{brand}: gracias, confirmamos su solicitud. Responda ALTO para cancelar."
    return f"{brand}: thank you, your request is confirmed. Reply STOP to opt out."


def crisis_reply(clinic_name: str, clinic_phone: str, stopped: bool, language: str) -> str:
    """The automatic answer to a possible crisis: 988 first (in Spanish: press 2, or text AYUDA to
    988, the Lifeline's Spanish service), then the clinic; says so when texting was stopped."""
    if language == "es":
        reply = (f"Si piensa en quitarse la vida o se encuentra en crisis, llame al 988 y marque 2, o mande "
                 f"AYUDA por texto al 988 (24/7). En una emergencia llame al 911. {clinic_name}: {clinic_phone}. "
                 f"Nuestro equipo va a ver su mensaje.")
        return reply + (" Ya no le enviaremos textos automatizados." if stopped else "")
    reply = (f"If you are thinking about suicide or are in crisis, call or text 988 now "
             f"(Suicide & Crisis Lifeline, 24/7). In an emergency call 911. "
             f"{clinic_name}: {clinic_phone}. Our team will see your message.")
    return reply + (" We have stopped our automated texts." if stopped else "")
