"""Questions get an answer: a patient's text that is no keyword, opt-out or crisis gets one automatic
acknowledgement per contact per 24 hours (the clinic's hours and phone, "we'll reply within one
business day"; discreet: no treatment named), and stays open in the staff inbox for a person to answer.

Only a contact who receives our texts now is answered (never after a STOP, never before the
number's YES, never a number that is no contact). The acknowledgement is recorded as an event
(`question_acknowledged`), which is also what the once-a-day rule reads.

May import `models` and the other `contacts` rule modules.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.contacts.consent import receives
from patient_drip.contacts.records import add_rows, event_row
from patient_drip.models import Channel, Contact, Event, EventKind

ONCE_PER = timedelta(hours=24)


def acknowledgement_text(brand: str, hours: str, phone: str, language: str = "en") -> str:
    """The automatic answer to a question (plain GSM text, within 2 segments for the settings' limits),
    in the contact's language (Spanish without á í ó ú, which are not GSM-7)."""
    if language == "es":
        return (f"{brand}: Gracias por su mensaje. Nuestro equipo le contesta dentro de 1 jornada laboral "
                f"(horario: {hours}). Para hablar antes, llame al {phone}. Responda ALTO para cancelar.")
    return (f"{brand}: Thanks for your message. Our team will reply within one business day "
            f"(hours: {hours}). To talk sooner, call {phone}. Reply STOP to opt out.")


def acknowledge_question(session: Session, contact: Contact, inbound_id: int, now: datetime) -> bool:
    """Whether to answer reply `inbound_id` of `contact` automatically now: True (and recorded)
    when the contact receives texts and had no acknowledgement in the last 24 hours."""
    if not receives(contact, Channel.SMS):
        return False
    recent = session.scalar(select(Event.id).where(
        Event.contact_id == contact.id, Event.kind == EventKind.QUESTION_ACKNOWLEDGED,
        Event.occurred_at > now - ONCE_PER).limit(1))
    if recent is not None:
        return False
    add_rows(session, [event_row(EventKind.QUESTION_ACKNOWLEDGED, now, contact.id, inbound_id=inbound_id)])
    return True
