"""Names are data, not content: what a first name may be, and the form it takes in a message.

A first name is the one piece of text a stranger can put into a message the clinic sends under its
own name. Pasted in as typed, "URGENT: your card is blocked, verify at https://evil.example/x"
became an SMS from the clinic, and 100 emoji made a 7-segment text. So a name is only ever letters
(any script) separated by single spaces, hyphens or apostrophes, at most `MAX_FIRST_NAME`
characters and `MAX_NAME_WORDS` words: no links, digits, punctuation or markup.

Two uses, one rule (`name_problem`):

- at input (`contacts.fields.check_first_name`): the public form refuses such a name and says why;
- at render (`message_first_name`, called by `content.context.message_context` for every message,
  real or sample): a stored name that breaks the rule (imported, or stored before the rule) is
  dropped and the message renders nameless; for SMS, letters outside the GSM 03.38 alphabet are
  transliterated (Zoë → Zoe, Nguyễn → Nguyen, 王 → Wang) so that one name cannot switch the whole
  text to UCS-2 and double its segments. A name that transliterates to nothing usable (emoji) is
  dropped.

This module imports nothing of ours but `content.gsm` (which imports nothing of ours), so `contacts` may use it and `content` owns it.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

from patient_drip.content.gsm import gsm_septets

MAX_FIRST_NAME = 40
MAX_NAME_WORDS = 5  # "Juan Carlos de la Cruz"; a sentence ("your card is blocked verify now") is not a name

# A letter of any script (Unicode category L*), optionally followed by combining marks (M*: a
# decomposed "é", Vietnamese tone marks); `\w` would also admit digits and "_".
_LETTER = r"(?:[^\W\d_][\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]*)"
_SEPARATOR = r"[ \-'\u2019]"  # space, hyphen, apostrophe (typed or typographic: O’Brien)
_NAME = re.compile(rf"{_LETTER}+(?:{_SEPARATOR}{_LETTER}+)*")
_LINK = re.compile(r"://|www\.|[A-Za-z0-9-]\.[A-Za-z]{2,}")
_DIGITS = re.compile(r"\d")
_MARKUP = re.compile(r"[<>{}\[\]&%$#*_`|\\/=@]")


def _folded(raw: str) -> str:
    """NFC (so "é" typed as e + combining accent counts as one letter) with whitespace folded."""
    return " ".join(unicodedata.normalize("NFC", raw or "").split())


def name_problem(raw: str) -> str | None:
    """Why `raw` cannot be used as a first name in a message, or None when it can.

    The reason is a sentence for the person who typed it ("may not contain a link"); the empty
    name is no problem (messages then greet nobody by name)."""
    name = _folded(raw)
    if not name:
        return None
    if _LINK.search(name):
        return "may not contain a link or web address"
    if _DIGITS.search(name):
        return "may not contain numbers"
    if _MARKUP.search(name):
        return "may not contain symbols or markup such as < > / @ { }"
    if not _NAME.fullmatch(name):
        return "may contain only letters, spaces, hyphens and apostrophes"
    if len(name) > MAX_FIRST_NAME:
        return f"must be at most {MAX_FIRST_NAME} characters"
    if name.count(" ") >= MAX_NAME_WORDS:
        return f"must be at most {MAX_NAME_WORDS} words"
    return None


def clean_first_name(raw: str) -> str:
    """`raw` folded (NFC, single spaces) when it is a usable first name, else "" (nameless)."""
    return _folded(raw) if name_problem(raw) is None else ""


def _gsm_encodable(text: str) -> bool:
    return gsm_septets(text) is not None


def sms_first_name(raw: str) -> str:
    """The first name as it may appear in an SMS: a usable name with every character outside the
    GSM 03.38 alphabet transliterated (characters inside it, such as é, ü or ñ, stay as typed),
    or "" when nothing usable remains (emoji, or a name that breaks the rule)."""
    name = clean_first_name(raw)
    if not name or _gsm_encodable(name):
        return name
    # Character by character: anyascii("Zoë") is "Zoe", but "José" keeps its GSM "é". A run of
    # CJK characters becomes capitalised syllables ("王小明" → "WangXiaoMing").
    parts = [ch if _gsm_encodable(ch) else anyascii(ch) for ch in name]
    transliterated = " ".join("".join(parts).split())
    if transliterated != name and name_problem(transliterated) is not None:
        return ""  # e.g. an emoji becomes ":grinning:"
    return transliterated if _gsm_encodable(transliterated) else ""


def message_first_name(raw: str, channel: str) -> str:
    """The first name as it may appear in a message on `channel` ("sms" or "email")."""
    return sms_first_name(raw) if str(channel) == "sms" else clean_first_name(raw)
