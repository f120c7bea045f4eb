"""The languages messages and pages are written in, and where a template's translation lives.

English templates are at their plain path (`email/01-welcome.html`); the Spanish one of the same step
is the same path under `es/` (`es/email/01-welcome.html`). Each is a template of its own: its own
versions and its own clinician approval (`content.template_store`), checked by the same rules in its
own language (`content.guard`). Imports nothing of ours.
"""

from __future__ import annotations

from typing import Final

DEFAULT_LANGUAGE: Final = "en"
LANGUAGES: Final[tuple[str, ...]] = ("en", "es")
LANGUAGE_NAMES: Final[dict[str, str]] = {"en": "English", "es": "Español"}


def is_language(value: str) -> bool:
    return value in LANGUAGES


def template_in_language(template: str, language: str) -> str:
    """The path of `template` (an English path such as `email/01-welcome.html`) in `language`."""
    if language == DEFAULT_LANGUAGE:
        return template
    return f"{language}/{template}"


def language_of_template(name: str) -> str:
    """The language a template path is written in: its first folder when that names a language."""
    head, _, rest = name.partition("/")
    return head if rest and head in LANGUAGES and head != DEFAULT_LANGUAGE else DEFAULT_LANGUAGE


def english_template(name: str) -> str:
    """The English path of a template path in any language (`es/sms/01-welcome.txt` → `sms/01-welcome.txt`)."""
    language = language_of_template(name)
    return name if language == DEFAULT_LANGUAGE else name[len(language) + 1:]
