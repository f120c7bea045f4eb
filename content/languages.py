"""The languages messages and pages are written in, and where a template's translation lives.

English templates are at their plain path (`email/01-welcome.html`); the Spanish one of the same step
is the same path under `es/` (`es/email/01-welcome.html`). Each is a template of its own: its own
versions and its own clinician approval (`content.template_store`), checked by the same rules in its
own language (`content.guard`). Imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

DEFAULT_LANGUAGE: Final = "en"
LANGUAGES: Final[tuple[str, ...]] = ("en", "es")
LANGUAGE_NAMES: Final[dict[str, str]] = {"en": "English", "es": "Español"}


def is_language(value: str) -> bool:
    return value in LANGUAGES


def template_in_language(template: str, language: str) -> str:
    """The path of `template` (an English path such as `email/01-welcome.html`, or one already in
    some language) in `language`."""
    english = english_template(template)
    if language == DEFAULT_LANGUAGE:
        return english
    return f"{language}/{english}"


def language_of_template(name: str) -> str:
    """The language a template path is written in: its first folder when that names a language."""
    head, _, rest = name.partition("/")
    return head if rest and head in LANGUAGES and head != DEFAULT_LANGUAGE else DEFAULT_LANGUAGE


def english_template(name: str) -> str:
    """The English path of a template path in any language (`es/sms/01-welcome.txt` → `sms/01-welcome.txt`)."""
    language = language_of_template(name)
    return name if language == DEFAULT_LANGUAGE else name[len(language) + 1:]


def policy_file_name(file_name: str, language: str) -> str:
    """The name of a policy file's version in `language`: the English file is the plain name
    (`medical_terms.txt`), another language's sits beside it with the language before the suffix
    (`medical_terms.es.txt`)."""
    if language == DEFAULT_LANGUAGE:
        return file_name
    stem, dot, suffix = file_name.rpartition(".")
    return f"{stem}.{language}.{suffix}" if dot else f"{file_name}.{language}"


# Spanish spelling is often typed without its accents ("depresion", "animo"): a word list written
# either way matches both. Only for the words of a language other than English.
_ACCENT_CLASSES: Final[dict[str, str]] = {"a": "[aá]", "e": "[eéë]", "i": "[ií]", "o": "[oó]", "u": "[uúü]",
                                          "n": "[nñ]", "á": "[aá]", "é": "[eé]", "í": "[ií]", "ó": "[oó]",
                                          "ú": "[uúü]", "ü": "[uúü]", "ñ": "[nñ]"}


def accent_insensitive(escaped: str) -> str:
    """`escaped` (a word already passed through `re.escape`) with every vowel and n matching its
    accented forms too, case-insensitively with the rest of the pattern."""
    out: list[str] = []
    escaping = False
    for character in escaped:
        if escaping or character == "\\":
            out.append(character)
            escaping = not escaping and character == "\\"
            continue
        out.append(_ACCENT_CLASSES.get(character.lower(), character))
    return "".join(out)


def missing_translations(templates_dir: Path, english_names: Iterable[str], language: str = "es") -> list[str]:
    """The English template paths in `english_names` (e.g. a campaign's steps) that have no
    version in `language` under `templates_dir`, in the order given, each once."""
    if language == DEFAULT_LANGUAGE:
        return []
    missing: list[str] = []
    for name in english_names:
        if name not in missing and not (templates_dir / template_in_language(name, language)).is_file():
            missing.append(name)
    return missing


def orphan_translations(templates_dir: Path) -> list[str]:
    """Template paths under a language folder (`es/email/…`) whose English original does not
    exist: a translation of nothing, which no step can send."""
    orphans: list[str] = []
    for language in LANGUAGES:
        folder = templates_dir / language
        if language == DEFAULT_LANGUAGE or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                name = path.relative_to(templates_dir).as_posix()
                if not (templates_dir / english_template(name)).is_file():
                    orphans.append(name)
    return orphans
