"""Render message templates safely: Jinja2 sandbox, strict variables, escaped HTML, inlined CSS.

Marketing-edited templates are untrusted input (SPEC decision 5): they run in a
`SandboxedEnvironment`, an undefined variable is an error rather than an empty string, HTML output
is autoescaped, and output size is capped so a runaway loop cannot exhaust memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import css_inline
import gsm0338  # noqa: F401  (registers the "gsm03.38" codec used by sms_info)
import html2text
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markupsafe import Markup

MAX_OUTPUT_CHARS = 500_000  # far above any real email; stops `{% for %}` bombs
SMS_MAX_SEGMENTS = 2

# Every variable a template may use; `drip templates check` renders with exactly these.
TEMPLATE_VARIABLES = (
    "first_name",
    "clinic_name",
    "clinic_phone",
    "clinic_address",
    "booking_link",
    "unsubscribe_link",
    "campaign_name",
    "step_id",
    "channel",
)

_PREHEADER = re.compile(r"<(span|div)[^>]*class=\"[^\"]*preheader[^\"]*\"[^>]*>.*?</\1>", re.S | re.I)
_WHITESPACE = re.compile(r"\s+")


class RenderError(Exception):
    """A template cannot be rendered. `str()` is `file:line: message` when the line is known."""

    def __init__(self, name: str, message: str, line: int | None = None) -> None:
        self.name, self.message, self.line = name, message, line
        super().__init__(f"{name}:{line}: {message}" if line else f"{name}: {message}")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    preheader: str


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """How a carrier will bill an SMS body."""

    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    units: int  # septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2
    segments: int


def sms_info(body: str) -> SmsInfo:
    """Encoding and segment count. One non-GSM character (a curly quote, an emoji, a non-breaking
    space) switches the whole message to UCS-2, which cuts a segment from 160 to 70 characters."""
    try:
        units = len(body.encode("gsm03.38"))
        encoding, single, multi = "GSM-7", 160, 153
    except UnicodeEncodeError:
        units = len(body.encode("utf-16-le")) // 2
        encoding, single, multi = "UCS-2", 70, 67
    segments = 1 if units <= single else -(-units // multi)
    return SmsInfo(encoding=encoding, characters=len(body), units=units, segments=segments)


class _CappedOutput:
    @staticmethod
    def join(chunks: object, name: str) -> str:
        parts: list[str] = []
        size = 0
        for chunk in chunks:  # type: ignore[attr-defined]
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise RenderError(name, f"output is larger than {MAX_OUTPUT_CHARS:,} characters")
            parts.append(chunk)
        return "".join(parts)


def _autoescape(name: str | None) -> bool:
    return bool(name and name.endswith((".html", ".htm")))


class Renderer:
    """Renders the templates in a folder, optionally overridden by stored versions by name."""

    def __init__(self, templates_dir: Path, overrides: Mapping[str, str] | None = None) -> None:
        loaders: list[BaseLoader] = []
        if overrides:
            loaders.append(DictLoader(dict(overrides)))
        loaders.append(FileSystemLoader(str(templates_dir)))
        self.templates_dir = templates_dir
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )

    def _template(self, name: str):  # type: ignore[no-untyped-def]
        try:
            return self.env.get_template(name)
        except TemplateSyntaxError as exc:
            raise RenderError(exc.name or name, exc.message or str(exc), exc.lineno) from None
        except TemplateNotFound as exc:
            raise RenderError(name, f"template {exc.name!r} not found") from None

    def _run(self, name: str, generate) -> str:  # type: ignore[no-untyped-def]
        try:
            return _CappedOutput.join(generate(), name)
        except RenderError:
            raise
        except UndefinedError as exc:
            raise RenderError(name, f"{exc.message}; available variables: {', '.join(TEMPLATE_VARIABLES)}", _template_line(exc, name)) from None
        except SecurityError as exc:
            raise RenderError(name, f"not allowed in a template: {exc}") from None
        except TemplateSyntaxError as exc:
            raise RenderError(exc.name or name, exc.message or str(exc), exc.lineno) from None
        except TemplateError as exc:
            raise RenderError(name, str(exc), _template_line(exc, name)) from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            raise RenderError(name, f"{type(exc).__name__}: {exc}", _template_line(exc, name)) from None

    def render_email(self, name: str, context: Mapping[str, str]) -> RenderedEmail:
        """Subject, inlined HTML and a plain-text part for an email template."""
        template = self._template(name)
        if "subject" not in template.blocks:
            raise RenderError(name, "an email template needs {% block subject %}")
        ctx = template.new_context(dict(context))
        subject = _plain(self._run(name, lambda: template.blocks["subject"](ctx)))
        if not subject:
            raise RenderError(name, "the subject block is empty")
        preheader = ""
        if "preheader" in template.blocks:
            preheader = _plain(self._run(name, lambda: template.blocks["preheader"](template.new_context(dict(context)))))
        html = self._run(name, lambda: template.generate(dict(context)))
        text = html_to_text(html)
        try:
            inlined = css_inline.inline(html)
        except ValueError as exc:
            raise RenderError(name, f"CSS could not be inlined: {exc}") from None
        return RenderedEmail(subject=subject, html=inlined, text=text, preheader=preheader)

    def render_sms(self, name: str, context: Mapping[str, str]) -> str:
        template = self._template(name)
        body = self._run(name, lambda: template.generate(dict(context)))
        return _WHITESPACE.sub(" ", body).strip()


def _plain(rendered: str) -> str:
    """Autoescaped block output back to plain text, on one line (for subjects and preheaders)."""
    return _WHITESPACE.sub(" ", Markup(rendered).unescape()).strip()


def _template_line(exc: BaseException, name: str) -> int | None:
    """The template line a runtime error happened on, from Jinja's rewritten traceback."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename and (filename.endswith(name) or filename == "<template>"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _text_converter() -> html2text.HTML2Text:
    # A new converter each time: HTML2Text keeps parse state and is not safe to share across threads.
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wraps: mail clients wrap, and wrapped URLs break
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.inline_links = True
    converter.protect_links = True
    converter.use_automatic_links = True
    converter.ignore_tables = True
    return converter


def html_to_text(html: str) -> str:
    """The plain-text part of an email, from its HTML (preheader removed: it is inbox-only)."""
    converter = _text_converter()
    text = converter.handle(_PREHEADER.sub("", html))
    text = re.sub(r"\[([^\]]+)\]\(<([^>]+)>\)", r"\1: \2", text)  # [Book](<url>) → Book: url
    text = "\n".join(line.rstrip() for line in text.splitlines())  # html2text's "  " hard breaks
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"
