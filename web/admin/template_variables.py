"""What the template editor offers to insert: every variable a message gets
(`content.rendering.TEMPLATE_VARIABLES`), each with a line of plain language, in the order a writer
reaches for them. `tests/test_template_editor.py` fails if a variable has no line here."""

from __future__ import annotations

from dataclasses import dataclass

VARIABLE_HELP: dict[str, str] = {
    "first_name": "the person's first name, or nothing when we have none (write so it reads well either way)",
    "booking_link": "the link to book, which tells us which message it came from",
    "unsubscribe_link": "the link to the person's preferences and unsubscribe page",
    "clinic_name": "the clinic's name (emails)",
    "clinic_sms_name": "the discreet name texts are signed with",
    "clinic_phone": "the clinic's phone number",
    "clinic_address": "the clinic's postal address",
    "consultation": "the offer as running text, e.g. \"a 15-minute consultation\"",
    "consultation_minutes": "how long the consultation is, in minutes",
    "consultation_free": "true when the clinic offers the consultation free (use in {% if %})",
    "booking_phrase": "the clinic's words for booking, e.g. \"book a consultation\"",
    "sms_frequency": "how many texts this campaign sends, e.g. \"Up to 3 msgs over 2 weeks\" (first text)",
    "campaign_name": "the campaign's name",
    "step_id": "this step's id in the campaign",
    "channel": "\"email\" or \"sms\"",
}


@dataclass(frozen=True, slots=True)
class InsertableVariable:
    name: str
    help: str

    @property
    def snippet(self) -> str:
        return "{{ " + self.name + " }}"


def insertable_variables(names: tuple[str, ...]) -> list[InsertableVariable]:
    """`names` (the renderer's variables) in the order of `VARIABLE_HELP`, each with its line."""
    order = {name: index for index, name in enumerate(VARIABLE_HELP)}
    return [InsertableVariable(name, VARIABLE_HELP.get(name, ""))
            for name in sorted(names, key=lambda n: order.get(n, len(order)))]
