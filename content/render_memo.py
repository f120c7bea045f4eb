"""The dispatcher's rendering at the cost of a few string replacements, with byte-identical output.

Rendering one email is about 2 ms, most of it html2text building the plain-text part and CSS
inlining — more than the provider call itself. Yet the emails of one step differ only in the
person's first name and links (tokens carry the message id), and so do its texts.

`MemoRenderer` renders a step once with *placeholders* in place of the first name and the links
(the per-process random letters below), keeps that output, and for each person puts the person's
values where the placeholders are. That is exactly the template's own output when:

- the template only prints those variables (or tests them for truth), deterministically:
  `content.template_shape.prints_only`, decided once per template from its syntax tree;
- every later stage passes the values through unchanged: autoescape, the CSS inliner's
  serialisation, html2text, the whitespace folding of subjects and texts. So only values in a
  conservative alphabet are put in: letters of any script with single inner spaces, hyphens or
  periods for names; our public URL and a signed token for links. A message with any other value
  (an apostrophe, say) is rendered in full;
- everything else in the context is the same as when the placeholder output was made (it is part
  of the memo's key: a published template starts a new memo, a settings change a new entry).

A template that does more with the values falls back to the previous, slower check: the template
is rendered with the real values and with placeholders (microseconds, no inlining), and the memo is
used only when substitution turns one into the other.

The first use of every memo entry is checked against a full render, and one use in `VERIFY_EVERY`
after that; a mismatch logs an error, drops the entry for good and returns the full render.
Nothing here changes what a patient receives (tests/test_dispatch_render_memo.py compares them for
names in many scripts, right-to-left ones and HTML specials).
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from patient_drip.content.rendering import MAX_OUTPUT_CHARS, ContextValue, RenderedEmail, Renderer
from patient_drip.content.template_shape import prints_only

log = logging.getLogger("drip.render")

MEMO_SIZE = 512  # distinct (template, other values) entries kept
VERIFY_EVERY = 200  # after its first check, one memoized render in this many is checked again

# Values every stage (Jinja autoescape, CSS inliner serialisation, html2text, whitespace folding
# of subjects) leaves exactly as they are. Links: our public URL + an itsdangerous token.
_SAFE_LINK = re.compile(r"https?://[A-Za-z0-9._~:/-]+\Z")
# Names: letters (any script), single inner spaces, hyphens or periods; no HTML or Markdown
# specials, no leading digit or dash (a list marker at the start of a line), no apostrophe
# (autoescape turns it into an entity the inliner turns back).
_SAFE_NAME = re.compile(r"[^\W\d_]+(?:[ .-][^\W\d_]+)*\.?\Z")
VARYING = ("booking_link", "unsubscribe_link", "first_name")

Output = TypeVar("Output", RenderedEmail, str)
_Key = tuple[Hashable, ...]


def _random_letters(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))


class MemoRenderer:
    """Wraps `Renderer.render_email` and `Renderer.render_sms`; thread-safe; one per dispatcher."""

    def __init__(self, *, size: int = MEMO_SIZE, verify_every: int = VERIFY_EVERY, rng: random.Random | None = None) -> None:
        self.size = size
        self.verify_every = verify_every
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._memo: OrderedDict[_Key, RenderedEmail | str | None] = OrderedDict()
        self._shapes: dict[str, bool] = {}  # template → prints_only(VARYING)
        self._renderer: Renderer | None = None
        # Per process, so no template can contain them by accident.
        self._name_sentinel = "Zq" + _random_letters(14)
        self._token_sentinel = "zq" + _random_letters(14)
        self.hits = self.misses = self.bypassed = self.mismatches = 0

    def render_email(self, renderer: Renderer, name: str, context: Mapping[str, ContextValue]) -> RenderedEmail:
        """Exactly `renderer.render_email(name, context)` (raising the same `RenderError`s)."""
        return self._render(renderer, "email", name, context, renderer.render_email, _substitute_email)

    def render_sms(self, renderer: Renderer, name: str, context: Mapping[str, ContextValue]) -> str:
        """Exactly `renderer.render_sms(name, context)` (raising the same `RenderError`s)."""
        return self._render(renderer, "sms", name, context, renderer.render_sms, _substitute)

    def _render(self, renderer: Renderer, kind: str, name: str, context: Mapping[str, ContextValue],
                full: Callable[[str, Mapping[str, ContextValue]], Output],
                substitute: Callable[[Output, list[tuple[str, str]]], Output]) -> Output:
        with self._lock:
            if renderer is not self._renderer:  # templates were published: start afresh
                self._memo.clear()
                self._shapes.clear()
                self._renderer = renderer
        pairs = self._sentinels(context)
        if pairs is None or not pairs:
            self.bypassed += 1  # a value that a later stage could change: render it as it is
            return full(name, context)
        sentinel_context = dict(context)
        for key, (sentinel, _value) in pairs.items():
            sentinel_context[key] = sentinel
        values = list(pairs.values())
        if self._prints_only(renderer, name):
            # The output is a function of the other values: they are the key, no render needed.
            key: _Key = (kind, name, frozenset(pairs), *((k, type(v), v) for k, v in sorted(
                (item for item in context.items() if item[0] not in pairs), key=lambda item: item[0])))
        else:
            try:
                template = renderer.env.get_template(name)
                real_text = template.render(dict(context))
                sentinel_text = template.render(sentinel_context)
            except Exception:  # the full render reports it properly (file:line: message)
                return full(name, context)
            if len(real_text) > MAX_OUTPUT_CHARS or _substitute(sentinel_text, values) != real_text:
                self.bypassed += 1  # the template does more with these values than print them
                return full(name, context)
            key = (kind, name, sentinel_text)
        with self._lock:
            known = key in self._memo
            skeleton = self._memo.get(key)
            if known:
                self._memo.move_to_end(key)
        if known and skeleton is None:
            self.bypassed += 1
            return full(name, context)
        if skeleton is not None:
            result = substitute(skeleton, values)  # type: ignore[arg-type]
            if self.verify_every and self._rng.randrange(self.verify_every) == 0:
                return self._checked(full, name, context, key, skeleton, result)  # type: ignore[arg-type]
            self.hits += 1
            return result
        self.misses += 1
        skeleton = full(name, sentinel_context)
        return self._checked(full, name, context, key, skeleton, substitute(skeleton, values))

    def _prints_only(self, renderer: Renderer, name: str) -> bool:
        shape = self._shapes.get(name)
        if shape is None:
            shape = self._shapes[name] = prints_only(renderer.env, name, VARYING)
        return shape

    def _checked(self, full: Callable[[str, Mapping[str, ContextValue]], Output], name: str,
                 context: Mapping[str, ContextValue], key: _Key, skeleton: Output, candidate: Output) -> Output:
        exact = full(name, context)
        keep: RenderedEmail | str | None = skeleton
        if candidate != exact:
            self.mismatches += 1
            keep = None
            log.error("template %s: memoized rendering differs from a full render; rendering it in full from now on",
                      name)
        with self._lock:
            self._memo[key] = keep
            self._memo.move_to_end(key)
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return exact

    def _sentinels(self, context: Mapping[str, ContextValue]) -> dict[str, tuple[str, str]] | None:
        """variable → (sentinel, real value) for the values that may be substituted; None when a
        non-empty value may not be (the message is rendered in full)."""
        pairs: dict[str, tuple[str, str]] = {}
        for key in VARYING:
            value = context.get(key, "")
            if not value:
                continue
            if not isinstance(value, str):
                return None
            if key == "first_name":
                if not _SAFE_NAME.match(value):
                    return None
                pairs[key] = (self._name_sentinel, value)
            elif _SAFE_LINK.match(value) and "/" in value:
                prefix = value.rsplit("/", 1)[0]
                pairs[key] = (f"{prefix}/{self._token_sentinel}{key[0]}", value)
            else:
                return None
        return pairs


def _substitute(text: str, pairs: list[tuple[str, str]]) -> str:
    for sentinel, value in pairs:
        text = text.replace(sentinel, value)
    return text


def _substitute_email(skeleton: RenderedEmail, pairs: list[tuple[str, str]]) -> RenderedEmail:
    return RenderedEmail(
        subject=_substitute(skeleton.subject, pairs),
        html=_substitute(skeleton.html, pairs),
        text=_substitute(skeleton.text, pairs),
        preheader=_substitute(skeleton.preheader, pairs),
    )
