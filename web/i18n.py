"""The language of the public pages (form, thank-you, confirmation, preference and not-found pages)
and their translations. Imports only `content.languages`.

Choice: gettext catalogs, read with Babel, rather than dictionaries in code. Page texts stay in the
templates, in English, marked with `_()` / `{% trans %}` (Jinja2's i18n extension); the Spanish is
in `web/locale/es/LC_MESSAGES/messages.po`, the file format translators and their tools know
(`make messages` extracts new texts with `pybabel extract`, `pybabel update` merges them). The `.po`
file is compiled in memory when first used (Babel's `read_po` + `write_mo`), so nothing has to be
built before a wheel or a checkout works: the wheel ships the `.po` file as package data. An
untranslated text shows in English, never as an error.

Which language a page is in (`page_language`): `?lang=` on the URL (links from Spanish ads), else
the form's own `language` field (a re-shown form), else the browser's `Accept-Language` header
negotiated against `LANGUAGES` with Babel (`es-MX` → `es`), else English. Pages about a known
person (preferences) use the language on file.

The Jinja2 callables read the language from the page's context (`language`), so one template
environment serves every request at once without swapping translations per request.
"""

from __future__ import annotations

import gettext as gettext_module
import re
from datetime import datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from babel.core import UnknownLocaleError, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from patient_drip.content.languages import DEFAULT_LANGUAGE, LANGUAGE_NAMES, LANGUAGES

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
# A tag as RFC 9110 allows in Accept-Language: letters, digits and hyphens ("es-419", "zh-Hant-TW").
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
MAX_HEADER = 500


# `messages.po`: the templates' texts (`make messages` keeps it in step); `code.po`: what the Python
# code says, kept by hand (pybabel would call those entries obsolete). One catalog at run time.
CATALOGS = ("messages", "code")


def _compiled(path: Path, language: str) -> Translations:
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out: an unreviewed translation shows in English
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> gettext_module.NullTranslations:
    """The compiled catalogs of `language`, merged (English: none, texts are written in English)."""
    paths = [LOCALE_DIR / language / "LC_MESSAGES" / f"{name}.po" for name in CATALOGS]
    paths = [path for path in paths if path.is_file()]
    if language == DEFAULT_LANGUAGE or not paths:
        return gettext_module.NullTranslations()
    merged = _compiled(paths[0], language)
    for path in paths[1:]:
        merged.merge(_compiled(path, language))
    return merged


def gettext(language: str, message: str) -> str:
    """`message` (English, as written in the code or template) in `language`."""
    return translations(language).gettext(message)


def has_translation(language: str, message: str) -> bool:
    """Whether the catalog of `language` translates `message` (English always does)."""
    return language == DEFAULT_LANGUAGE or translations(language).gettext(message) != message


def accepted_languages(header: str | None) -> list[str]:
    """The tags of an `Accept-Language` header, most wanted first (q-values; equal ones keep their
    order; q=0 means "not this"), as Babel writes them (`es_MX`). Malformed parts are skipped."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "")[:MAX_HEADER].split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not _TAG.fullmatch(tag):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            weighted.append((-quality, index, tag.replace("-", "_")))
    return [tag for _q, _i, tag in sorted(weighted)]


def negotiate(header: str | None) -> str:
    """The language of `LANGUAGES` the browser prefers (`Accept-Language`), else English."""
    found = negotiate_locale(accepted_languages(header), list(LANGUAGES))
    return found if found in LANGUAGES else DEFAULT_LANGUAGE


def page_language(*, query: str | None = None, form: str | None = None, accept_language: str | None = None) -> str:
    """A public page's language: `?lang=`, else the form's `language` field, else `Accept-Language`."""
    for given in (query, form):
        code = (given or "").strip().lower()[:5].split("-")[0].split("_")[0]
        if code in LANGUAGES:
            return code
    return negotiate(accept_language)


def local_when(moment: datetime, language: str) -> str:
    """"09:00 on Monday 4 May" / "09:00 el lunes 4 de mayo": a local time for the thank-you page."""
    if language == DEFAULT_LANGUAGE:
        return f"{moment:%H:%M} on {moment:%A} {moment.day} {moment:%B}"
    try:
        return format_datetime(moment, "HH:mm 'el' EEEE d 'de' MMMM", locale=language)
    except UnknownLocaleError:  # pragma: no cover - every language of LANGUAGES is a Babel locale
        return f"{moment:%H:%M} {moment:%Y-%m-%d}"


@pass_context
def _context_gettext(context: Context, message: str) -> str:
    return gettext(str(context.get("language") or DEFAULT_LANGUAGE), message)


@pass_context
def _context_ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return translations(str(context.get("language") or DEFAULT_LANGUAGE)).ngettext(singular, plural, n)


def install(env: Environment) -> None:
    """Give `env` the i18n extension, translating into each page's `language` (its context)."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(_context_gettext, _context_ngettext, newstyle=True)  # type: ignore[attr-defined]


def language_choices() -> list[tuple[str, str]]:
    """(code, name in its own language) for the form's language choice."""
    return [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES]


__all__ = ["accepted_languages", "gettext", "has_translation", "install", "language_choices",
                      "local_when", "negotiate", "page_language", "translations"]
