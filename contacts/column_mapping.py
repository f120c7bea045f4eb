"""Which field each column of an import file holds: the names we understand, the names people's
spreadsheets use for them ("Email Address", "Mobile", "Given name"…), and a file's header rewritten
to ours once staff have chosen.

Pure: no database, no other module of ours. `contacts.import_rows.read_rows` reads every header
through `field_for`, so the command line understands the same names as the browser.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator, Sequence

KNOWN_COLUMNS = ("first_name", "last_name", "email", "phone", "timezone", "consent_email", "consent_sms", "source",
                 "language", "interest")
FIELD_LABELS = {
    "first_name": "First name", "last_name": "Last name", "email": "Email", "phone": "Phone",
    "timezone": "Time zone", "consent_email": "Agreed to emails (yes/no)", "consent_sms": "Agreed to texts (yes/no)",
    "source": "Source", "language": "Language (en/es)", "interest": "Interest (depression/bipolar/unsure)",
}
IGNORE = ""  # a column staff chose not to import

# Written as they are normalised (`_normalise`): lower case, words joined by "_".
_ALIASES: dict[str, tuple[str, ...]] = {
    "first_name": ("first", "firstname", "first_name", "given_name", "givenname", "forename", "name_first",
                   "nombre", "preferred_name"),
    "last_name": ("last", "lastname", "last_name", "surname", "family_name", "familyname", "name_last", "apellido",
                  "apellidos"),
    "email": ("email", "e_mail", "email_address", "e_mail_address", "emailaddress", "mail", "email_id",
              "correo", "correo_electronico", "primary_email"),
    "phone": ("phone", "phone_number", "phonenumber", "mobile", "mobile_phone", "mobile_number", "cell",
              "cell_phone", "cellphone", "telephone", "tel", "sms", "sms_number", "telefono", "celular",
              "primary_phone"),
    "timezone": ("timezone", "time_zone", "tz", "zone"),
    "consent_email": ("consent_email", "email_consent", "email_opt_in", "opt_in_email", "email_optin",
                      "agreed_to_emails", "email_ok", "subscribed_email"),
    "consent_sms": ("consent_sms", "sms_consent", "sms_opt_in", "opt_in_sms", "sms_optin", "text_consent",
                    "consent_text", "agreed_to_texts", "texts_ok", "sms_ok"),
    "source": ("source", "lead_source", "how_heard", "referral_source", "origin", "channel_source"),
    "language": ("language", "lang", "preferred_language", "language_preference", "idioma", "idioma_preferido",
                 "lengua", "locale"),
    "interest": ("interest", "interests", "interested_in", "area_of_interest", "topic", "condition", "interes",
                 "tema"),
}
_BY_ALIAS = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_SEPARATORS = re.compile(r"[\s\-_./:]+")


class MappingError(ValueError):
    """The chosen columns cannot be imported; `problems` says each reason in words."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _normalise(name: str) -> str:
    # Accents folded ("Interés" = "interes"): Spanish headers are written both ways.
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", name.strip().lower().lstrip("\ufeff"))
                     if not unicodedata.combining(ch))
    return _SEPARATORS.sub("_", folded).strip("_")


def field_for(name: str) -> str | None:
    """Our field for a column named `name` in a file, or None when we do not recognise it."""
    return _BY_ALIAS.get(_normalise(name))


def suggest(header: Sequence[str]) -> list[str]:
    """For each column, the field it most likely holds (`IGNORE` when none, or when an earlier
    column already holds that field)."""
    taken: set[str] = set()
    chosen = []
    for name in header:
        field = field_for(name)
        if field is None or field in taken:
            chosen.append(IGNORE)
        else:
            taken.add(field)
            chosen.append(field)
    return chosen


def check(header: Sequence[str], chosen: Sequence[str]) -> None:
    """Raise `MappingError` listing every problem with a choice: a field chosen for two columns, a
    field we do not know, neither an email nor a phone column."""
    problems = []
    if len(chosen) != len(header):
        problems.append(f"choose a field (or “do not import”) for each of the {len(header)} columns")
    for field in sorted(set(chosen) - {IGNORE} - set(KNOWN_COLUMNS)):
        problems.append(f"“{field}” is not a field we import")
    for field in KNOWN_COLUMNS:
        columns = [header[i] for i, value in enumerate(chosen) if value == field and i < len(header)]
        if len(columns) > 1:
            problems.append(f"{FIELD_LABELS[field]} is chosen for {len(columns)} columns "
                            f"({', '.join(repr(c) for c in columns)}): keep one")
    if "email" not in chosen and "phone" not in chosen:
        problems.append("choose the column with the email address or the phone number: every row needs one")
    if problems:
        raise MappingError(problems)


def remap(text: str, chosen: Sequence[str]) -> str:
    """`text` (a whole CSV file) with its first record replaced by our field names for the chosen
    columns; a column not imported gets a name nothing reads. The rows are left byte for byte."""
    consumed = 0
    source = io.StringIO(text, newline="")

    def lines() -> Iterator[str]:
        nonlocal consumed
        for line in source:  # the reader takes exactly the lines of the first record, no more
            consumed += len(line)
            yield line

    next(csv.reader(lines()), None)
    names = [field or f"not_imported_{i + 1}" for i, field in enumerate(chosen)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(names)
    return out.getvalue() + text[consumed:]
