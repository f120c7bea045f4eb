"""Render message templates safely: Jinja2 sandbox, strict variables, escaped HTML, inlined CSS.

Marketing-edited templates are untrusted input (SPEC decision 5): they run in a
`SandboxedEnvironment`, an undefined variable is an error rather than an empty string, HTML output
is autoescaped, and every render is bounded (`BoundedSandbox`):

- *time*: a render that runs longer than `MAX_RENDER_SECONDS` stops with a `RenderError`. Jinja has
  no `while`, so a template can only run long through loops or calls: every `{% for %}` is
  compiled to iterate through a checkpoint, and every call, attribute lookup, filter and operator
  the sandbox sees checks the clock too (no tracer: a few nanoseconds each). A loop with an
  empty body (`{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}`)
  produces no output to count, but still passes a checkpoint on every iteration.
- *size*: the output is capped at `MAX_OUTPUT_CHARS`, and so is every value a template builds
  (`~`, `+`, `*`, filters, method calls) -- checked *before* the big allocations (repeating a
  string, padding to a width, joining) where Python would otherwise build a gigabyte first.
  Integers given to calls and filters are capped (`MAX_INT_ARGUMENT`), powers and products of
  integers too (`9**9**9` would run for hours).
- *memory*: values that stay alive are bounded too. Each item a template puts into a list, dict
  or set (`append`, `extend`, `insert`, `update`, `setdefault`, `add`, ...; its characters, for
  text) and the length of each `range` it makes count toward `MAX_BUILT_UNITS` per render, so a
  loop of `x.extend(range(100000))` stops after a few rounds ("template uses too much memory")
  instead of filling gigabytes within the time budget.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import css_inline
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
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.sandbox import SandboxedEnvironment, SecurityError, safe_range
from markupsafe import Markup

from patient_drip.content.gsm import gsm_septets

MAX_OUTPUT_CHARS = 500_000  # far above any real email; stops `{% for %}` bombs
# A template variable's value: text, or the offer's number of minutes and whether it is free.
ContextValue = str | int | bool

MAX_RENDER_SECONDS = 2.0  # a real email renders in a few milliseconds
MAX_INT_ARGUMENT = 1_000_000  # no message needs a bigger number; "x".center(10**9) would take 1 GB
MAX_INT_BITS = 10_000  # about 3,000 decimal digits
# Items and characters one render may add to lists/dicts/sets, plus the lengths of its ranges. A
# real message builds none; a few megabytes at most (ints and pointers) when exhausted.
MAX_BUILT_UNITS = 500_000
SMS_MAX_SEGMENTS = 2

# Every variable a template may use; `drip templates check` renders with exactly these.
TEMPLATE_VARIABLES = (
    "first_name",
    "clinic_name",
    "clinic_sms_name",
    "sms_frequency",
    "clinic_phone",
    "clinic_address",
    "consultation_free",
    "consultation_minutes",
    "consultation",
    "booking_phrase",
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
    septets = gsm_septets(body)
    if septets is not None:
        units, encoding, single, multi = septets, "GSM-7", 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        encoding, single, multi = "UCS-2", 70, 67
    segments = 1 if units <= single else -(-units // multi)
    return SmsInfo(encoding=encoding, characters=len(body), units=units, segments=segments)


class RenderBudgetError(SecurityError):
    """A template ran longer than `MAX_RENDER_SECONDS` or built a value larger than allowed."""


_budget = threading.local()


@contextmanager
def render_budget(seconds: float | None = None) -> Iterator[None]:
    """Bound the renders inside this block (on this thread) to `seconds` in all.

    Nested blocks share the outermost deadline: rendering an email's subject, body and included
    templates is one budget."""
    if getattr(_budget, "deadline", None) is not None:
        yield
        return
    deadline = time.monotonic() + (MAX_RENDER_SECONDS if seconds is None else seconds)
    _budget.deadline = deadline
    _budget.built = 0  # units counted by `_spend`, for the whole block as for the time
    try:
        yield
    finally:
        if getattr(_budget, "deadline", None) == deadline:
            _budget.deadline = None
            _budget.built = 0


def _check_time() -> None:
    deadline = getattr(_budget, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise RenderBudgetError(
            f"rendering took longer than {MAX_RENDER_SECONDS:g} s (a loop that never ends, or one far too big?)")


def _spend(units: int, what: str) -> None:
    """Count `units` toward this render's memory budget (`MAX_BUILT_UNITS`); refuse past it."""
    built = getattr(_budget, "built", 0) + units
    _budget.built = built
    if built > MAX_BUILT_UNITS:
        raise RenderBudgetError(
            f"template uses too much memory: {what} takes it past {MAX_BUILT_UNITS:,} items or characters built "
            "in one render (lists and dicts filled in loops, or ranges)")


# The methods that grow a list, dict or set in place (Jinja's sandbox allows them on plain
# containers), and which of their arguments hold what is added: "one" value, the "last"
# argument, a key and default ("pair"), or every argument is a collection of items ("many").
_GROWING_METHODS = {
    list: {"append": "one", "insert": "last", "extend": "many"},
    dict: {"update": "many", "setdefault": "pair"},
    set: {"add": "one", "update": "many"},
}


def _growth(obj: Any, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[int, tuple[Any, ...]]:
    """How many units a growing method call adds, and its arguments (an unsized iterable is read,
    up to the budget, into a list first so that it can be counted)."""
    kind = next((rule.get(method) for base, rule in _GROWING_METHODS.items() if isinstance(obj, base)), None)
    if kind is None:
        return 0, args
    if kind in ("one", "pair"):  # append(x), add(x), setdefault(key, default)
        return 1 + sum(len(a) for a in args if isinstance(a, (str, bytes))), args
    if kind == "last":  # insert(index, x)
        return 1 + (len(args[-1]) if args and isinstance(args[-1], (str, bytes)) else 0), args
    counted = []
    units = _units(kwargs)
    for argument in args:
        if not hasattr(argument, "__len__"):
            left = MAX_BUILT_UNITS - getattr(_budget, "built", 0) + 1
            argument = list(islice(argument, max(left, 0) + 1))
        units += _units(argument)
        counted.append(argument)
    return units, tuple(counted)


def _units(added: Any) -> int:
    """Items plus the characters of the text among them (keys and values, for a mapping)."""
    if isinstance(added, (str, bytes)):
        return len(added)
    values = chain(added.keys(), added.values()) if isinstance(added, Mapping) else added
    return len(added) + sum(len(item) for item in values if isinstance(item, (str, bytes)))


def _counted_range(*args: int) -> range:
    """`range` for templates: Jinja's sandbox caps one range's length; its length also counts
    toward the memory budget (a range feeds `list`, `extend` and loops of appends)."""
    numbers = safe_range(*args)
    _spend(len(numbers), f"range({', '.join(map(str, args))})")
    return numbers


def _too_big(what: str) -> RenderBudgetError:
    return RenderBudgetError(f"{what} would be larger than {MAX_OUTPUT_CHARS:,} characters")


def _weight(value: Any) -> int:
    """Roughly how many characters `value` stands for (a list counts its strings' lengths)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return len(value) + sum(len(item) for item in value if isinstance(item, (str, bytes)))
    return 1


def _check_size(value: Any, what: str = "a value") -> Any:
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict)) and _weight(value) > MAX_OUTPUT_CHARS:
        raise _too_big(what)
    return value


# "%999999999d", "{:>999999999}": a width or precision of seven digits or more.
_HUGE_FORMAT_FIELD = re.compile(r"%[-#0 +]*\d{7,}|%[-#0 +]*\d*\.\d{7,}|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


def _check_format(template: Any) -> None:
    if isinstance(template, str) and _HUGE_FORMAT_FIELD.search(template):
        raise _too_big("a formatted value")


def _check_arguments(values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise RenderBudgetError(f"the number {value} is too large for a template (at most {MAX_INT_ARGUMENT:,})")
        if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict)) and _weight(value) > MAX_OUTPUT_CHARS:
            raise _too_big("an argument")


def _bounded_filter(func: Any) -> Any:
    """A filter that checks the clock and refuses oversized arguments and results. `wraps` keeps
    Jinja's pass_context/pass_environment markers."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        _check_arguments(chain(args, kwargs.values()))
        if getattr(func, "__name__", "") in ("do_format", "format"):
            _check_format(next((a for a in args if isinstance(a, str)), None))
        if getattr(func, "__name__", "") == "do_replace":
            _check_replace(args)
        return _check_size(func(*args, **kwargs), "a filter's result")

    return bounded


def _check_replace(args: tuple[Any, ...]) -> None:
    """`replace` can multiply a string's size (replacing "" inserts between every character)."""
    strings = [a for a in args if isinstance(a, str)]
    if len(strings) >= 3:
        text, old, new = strings[-3:]
        growth = (text.count(old) if old else len(text) + 1) * max(0, len(new) - len(old))
        if len(text) + growth > MAX_OUTPUT_CHARS:
            raise _too_big("the replaced text")


def _bounded_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `{% for %}` iterates through: a clock check per item."""
    for item in iterable:
        _check_time()
        yield item


class _BudgetCodeGenerator(CodeGenerator):
    """Compiles `{% for x in <expr> %}` to `for x in environment.bounded_iter(<expr>)` and every
    `~` concatenation to `environment.checked_size(...)`. (Jinja forbids new node types, so the
    loop's iterable node is marked and wrapped when it is written out.)"""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:  # noqa: N802
        for loop in node.find_all(nodes.For):
            loop.iter.drip_bounded = True  # type: ignore[attr-defined]
        super().visit_Template(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if getattr(node, "drip_bounded", False):
            self.write("environment.bounded_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802
        self.write("environment.checked_size(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BudgetTemplate(Template):
    """Every render of a template -- also by callers that use Jinja's API directly -- is bounded."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        with render_budget():
            return _check_size(super().render(*args, **kwargs), "the output")

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        with render_budget():
            yield from super().generate(*args, **kwargs)


# String methods that can build huge values in one call and that no message template needs.
_UNSAFE_STR_METHODS = frozenset({"translate", "maketrans", "expandtabs", "encode", "format_map"})


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with a time budget and size limits (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})
    code_generator_class = _BudgetCodeGenerator
    template_class = _BudgetTemplate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(func) for name, func in self.filters.items()}
        # lipsum(n=...) runs for as long as it is asked to, in one call the clock cannot interrupt.
        self.globals.pop("lipsum", None)
        self.globals["range"] = _counted_range

    bounded_iter = staticmethod(_bounded_iter)

    @staticmethod
    def checked_size(value: Any) -> Any:
        _check_time()
        return _check_size(value, "joined text")

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNSAFE_STR_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        if isinstance(obj, str) and attribute == "format":
            _check_format(obj)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        _check_time()
        _check_arguments(chain(args, kwargs.values()))
        if getattr(__obj, "__name__", "") == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _check_replace((__obj.__self__, *args))
        if getattr(__obj, "__name__", "") == "join" and isinstance(getattr(__obj, "__self__", None), str) and args:
            items = args[0]
            if isinstance(items, (list, tuple)) and \
                    _weight(items) + len(__obj.__self__) * len(items) > MAX_OUTPUT_CHARS:
                raise _too_big("the joined text")
        owner = getattr(__obj, "__self__", None)
        if owner is not None:
            units, args = _growth(owner, getattr(__obj, "__name__", ""), args, kwargs)
            if units:
                _spend(units, f"{type(owner).__name__}.{__obj.__name__}()")
        result = SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        return _check_size(result, "a call's result")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(times, int) and not isinstance(times, bool) and \
                        isinstance(seq, (str, bytes, list, tuple)) and _weight(seq) * max(times, 0) > MAX_OUTPUT_CHARS:
                    raise _too_big("the repeated value")
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise RenderBudgetError("the product is too large a number for a template")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and \
                    max(1, left.bit_length()) * right > MAX_INT_BITS:
                raise RenderBudgetError("the power is too large a number for a template")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)) and \
                    _weight(left) + _weight(right) > MAX_OUTPUT_CHARS:
                raise _too_big("the sum")
        elif operator == "%":
            _check_format(left)
            if isinstance(right, tuple):
                _check_arguments(right)
            else:
                _check_arguments([right])
        return _check_size(super().call_binop(context, operator, left, right), "a computed value")


class _CappedOutput:
    @staticmethod
    def join(chunks: object, name: str) -> str:
        parts: list[str] = []
        size = 0
        for chunk in chunks:  # type: ignore[attr-defined]
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise RenderError(name, f"output is larger than {MAX_OUTPUT_CHARS:,} characters")
            _check_time()
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
        self.env = BoundedSandbox(
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
            with render_budget():
                return _CappedOutput.join(generate(), name)
        except RenderError:
            raise
        except RenderBudgetError as exc:
            raise RenderError(name, str(exc), _template_line(exc, name)) from None
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

    def render_email(self, name: str, context: Mapping[str, ContextValue]) -> RenderedEmail:
        """Subject, inlined HTML and a plain-text part for an email template (one time budget for
        all three renders)."""
        with render_budget():
            return self._render_email(name, context)

    def _render_email(self, name: str, context: Mapping[str, ContextValue]) -> RenderedEmail:
        template = self._template(name)
        # Rendering the whole email first fills the context's blocks with those the template inherits
        # (a variant that extends another email keeps its subject unless it overrides it).
        page = template.new_context(dict(context))
        html = self._run(name, lambda: template.root_render_func(page))
        blocks = page.blocks
        if "subject" not in blocks:
            raise RenderError(name, "an email template needs {% block subject %}")
        subject = _plain(self._run(name, lambda: blocks["subject"][0](template.new_context(dict(context)))))
        if not subject:
            raise RenderError(name, "the subject block is empty")
        preheader = ""
        if "preheader" in blocks:
            preheader = _plain(self._run(name, lambda: blocks["preheader"][0](template.new_context(dict(context)))))
        text = html_to_text(html, preheader)
        try:
            inlined = css_inline.inline(html)
        except ValueError as exc:
            raise RenderError(name, f"CSS could not be inlined: {exc}") from None
        return RenderedEmail(subject=subject, html=inlined, text=text, preheader=preheader)

    def render_sms(self, name: str, context: Mapping[str, ContextValue]) -> str:
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


_HEADING_MARKS = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.M)


def strip_heading_marks(text: str) -> str:
    """`text` without markdown heading marks ("# How it works" → "How it works")."""
    return _HEADING_MARKS.sub("", text)


def html_to_text(html: str, preheader: str = "") -> str:
    """The plain-text part of an email, from its HTML: the preheader first (mail apps preview the
    start of the text part, and the preheader is the discreet line written for that), then the
    body without markdown heading marks (a "# Title" line would be previewed as is)."""
    converter = _text_converter()
    text = converter.handle(_PREHEADER.sub("", html))
    text = strip_heading_marks(text)
    if preheader.strip():
        text = preheader.strip() + "\n\n" + text.lstrip()
    text = re.sub(r"\[([^\]]+)\]\(<([^>]+)>\)", r"\1: \2", text)  # [Book](<url>) → Book: url
    text = "\n".join(line.rstrip() for line in text.splitlines())  # html2text's "  " hard breaks
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"
