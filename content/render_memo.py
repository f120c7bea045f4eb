"""Email rendering for the dispatcher at the cost of a Jinja render, with byte-identical output.

Rendering one email is about 2 ms, and 70% of it is html2text building the plain-text part
(CSS inlining is most of the rest) — more than the provider call itself. Yet consecutive emails
of one step differ only in the links (tokens carry the message id) and, usually, the first name.

`MemoRenderer.render_email` renders the template's HTML twice with Jinja — once with the real
values and once with *sentinels* in place of the links and the first name — which costs
microseconds. If putting the real values in place of the sentinels turns the second output into
exactly the first (true unless the template branches on, filters or transforms those values), the
two messages are the same text with different words at the same places, and the expensive
pipeline (subject and preheader blocks, CSS inlining, html2text) is done once per distinct
sentinel output and reused with the values substituted.

That reuse is only correct for values every stage passes through unchanged; values outside a
conservative alphabet stay literal (they become part of the memo key, so such a message is
rendered in full once). The first use of every memo entry is checked against a full render, and
one render in `VERIFY_EVERY` after that; a mismatch logs an error, drops the entry for good and
returns the full render. Nothing here changes what a patient receives.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import string
import threading
from collections import OrderedDict
from collections.abc import Mapping

from patient_drip.content.rendering import MAX_OUTPUT_CHARS, ContextValue, RenderedEmail, Renderer

log = logging.getLogger("drip.render")

MEMO_SIZE = 512  # distinct (template, sentinel output) pairs kept
VERIFY_EVERY = 200  # after its first check, one memoized render in this many is checked again

# Values every stage (Jinja autoescape, CSS inliner serialisation, html2text, whitespace folding
# of subjects) leaves exactly as they are. Links: our public URL + an itsdangerous token.
_SAFE_LINK = re.compile(r"https?://[A-Za-z0-9._~:/-]+\Z")
# Names: letters (any script), single inner spaces, hyphens or periods; no HTML or Markdown
# specials, no leading digit or dash (a list marker at the start of a line), no apostrophe
# (autoescape turns it into an entity the inliner turns back).
_SAFE_NAME = re.compile(r"[^\W\d_]+(?:[ .-][^\W\d_]+)*\.?\Z")
_VARYING = ("booking_link", "unsubscribe_link", "first_name")


def _random_letters(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))


class MemoRenderer:
    """Wraps `Renderer.render_email`; thread-safe; one per dispatcher."""

    def __init__(self, *, size: int = MEMO_SIZE, verify_every: int = VERIFY_EVERY, rng: random.Random | None = None) -> None:
        self.size = size
        self.verify_every = verify_every
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._memo: OrderedDict[tuple[str, str], RenderedEmail | None] = OrderedDict()
        self._renderer: Renderer | None = None
        # Per process, so no template can contain them by accident.
        self._name_sentinel = "Zq" + _random_letters(14)
        self._token_sentinel = "zq" + _random_letters(14)
        self.hits = self.misses = self.bypassed = self.mismatches = 0

    def render_email(self, renderer: Renderer, name: str, context: Mapping[str, ContextValue]) -> RenderedEmail:
        """Exactly `renderer.render_email(name, context)` (raising the same `RenderError`s)."""
        with self._lock:
            if renderer is not self._renderer:  # templates were published: start afresh
                self._memo.clear()
                self._renderer = renderer
        pairs = self._sentinels(context)
        if not pairs:
            self.bypassed += 1
            return renderer.render_email(name, context)
        sentinel_context = dict(context)
        for key, (sentinel, _value) in pairs.items():
            sentinel_context[key] = sentinel
        try:
            template = renderer.env.get_template(name)
            real_html = template.render(dict(context))
            sentinel_html = template.render(sentinel_context)
        except Exception:  # the full render reports it properly (file:line: message)
            return renderer.render_email(name, context)
        if len(real_html) > MAX_OUTPUT_CHARS or _substitute(sentinel_html, pairs.values()) != real_html:
            self.bypassed += 1  # the template does more with these values than print them
            return renderer.render_email(name, context)
        key = (name, sentinel_html)
        with self._lock:
            known = key in self._memo
            skeleton = self._memo.get(key)
            if known:
                self._memo.move_to_end(key)
        if known and skeleton is None:
            self.bypassed += 1
            return renderer.render_email(name, context)
        if skeleton is not None:
            result = _substitute_email(skeleton, pairs.values())
            if self.verify_every and self._rng.randrange(self.verify_every) == 0:
                return self._checked(renderer, name, context, key, skeleton, result)
            self.hits += 1
            return result
        self.misses += 1
        skeleton = renderer.render_email(name, sentinel_context)
        return self._checked(renderer, name, context, key, skeleton, _substitute_email(skeleton, pairs.values()))

    def _checked(self, renderer: Renderer, name: str, context: Mapping[str, ContextValue], key: tuple[str, str],
                 skeleton: RenderedEmail, candidate: RenderedEmail) -> RenderedEmail:
        exact = renderer.render_email(name, context)
        keep: RenderedEmail | None = skeleton
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

    def _sentinels(self, context: Mapping[str, ContextValue]) -> dict[str, tuple[str, str]]:
        """variable → (sentinel, real value) for the values that may be substituted."""
        pairs: dict[str, tuple[str, str]] = {}
        for key in _VARYING:
            value = context.get(key, "")
            if not value:
                continue
            if key == "first_name":
                if _SAFE_NAME.match(value):
                    pairs[key] = (self._name_sentinel, value)
            elif _SAFE_LINK.match(value) and "/" in value:
                prefix = value.rsplit("/", 1)[0]
                pairs[key] = (f"{prefix}/{self._token_sentinel}{key[0]}", value)
        return pairs


def _substitute(text: str, pairs: object) -> str:
    for sentinel, value in pairs:  # type: ignore[attr-defined]
        text = text.replace(sentinel, value)
    return text


def _substitute_email(skeleton: RenderedEmail, pairs: object) -> RenderedEmail:
    values = list(pairs)  # type: ignore[call-overload]
    return RenderedEmail(
        subject=_substitute(skeleton.subject, values),
        html=_substitute(skeleton.html, values),
        text=_substitute(skeleton.text, values),
        preheader=_substitute(skeleton.preheader, values),
    )
