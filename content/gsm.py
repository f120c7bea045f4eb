"""GSM 03.38, the 7-bit SMS alphabet: how many septets a text takes, or None when a character is
outside it (then a carrier sends the whole text as UCS-2).

Exactly `len(text.encode("gsm03.38"))` (the `gsm0338` codec), which maps one character at a time
in Python into a growing byte string. The dispatcher asks it of every text and every name in one,
so each distinct character's size is looked up in the codec once and kept.

Imports nothing of ours, so `content.names` (which `contacts` uses) may import it.
"""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

_SIZE: dict[str, int] = {}  # character → septets: 1, 2 (extension table: € [ ] { } …), 0 = not in it
_MAX_KEPT = 65_536  # distinct characters remembered (a text of odd characters cannot grow it forever)


def gsm_septets(text: str) -> int | None:
    """Septets `text` takes in GSM 03.38, or None when it cannot be encoded in it."""
    size = _SIZE
    new = set(text).difference(size)
    if new:
        if len(size) + len(new) > _MAX_KEPT:
            size.clear()
        for character in new:
            try:
                size[character] = len(character.encode("gsm03.38"))
            except UnicodeEncodeError:
                size[character] = 0
    sizes = list(map(size.__getitem__, text))
    return None if 0 in sizes else sum(sizes)
