"""First names as a clinic has them: every one different, many outside ASCII.

The benchmark used to draw from 30 names, so almost every email of a step rendered the same and
any per-name cache looked perfect. A clinic's contacts have as many first names as contacts.
`first_name(i)` is a pure function of the index (seeding in chunks, or in several processes, gives
the same people) and different for every index below `CAPACITY`:

- index `i` belongs to family `i % len(FAMILIES)`: plain Latin, Latin with diacritics (Zoë, Søren),
  Vietnamese (Nguyễn, with a space: "Thị Mai"), Chinese (王), right-to-left Arabic and Hebrew,
  Cyrillic and Greek, and Latin with a hyphen or an apostrophe (Ana-Lu, D'Andre);
- within a family, the first few are real names, the rest are built from syllables whose letters
  are fixed-width code points: a number's digits in a fixed radix, so two indices never give the
  same name (families use disjoint alphabets or shapes; `check_distinct` proves it for a range).

Every name passes the product's own rule for names (`content.names.name_problem`), so each one
is really printed in the message (none falls back to nameless).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """Real names first, then syllable names: `onsets` × `vowels` per syllable, `width` syllables."""

    real: tuple[str, ...]
    onsets: str
    vowels: str
    joiner: str = ""  # put between the second and the third syllable ("-", " ", "'")
    capitalise: bool = True

    def name(self, j: int) -> str:
        if j < len(self.real):
            return self.real[j]
        j -= len(self.real)
        radix = len(self.onsets) * len(self.vowels)
        width = 3
        while j >= radix ** width:  # longer names once the shorter ones are used up
            j -= radix ** width
            width += 1
        j = j * _SCRAMBLE % radix ** width  # a bijection: neighbours do not share their first syllables
        syllables = []
        for _ in range(width):
            j, digit = divmod(j, radix)
            onset, vowel = divmod(digit, len(self.vowels))
            syllables.append(self.onsets[onset] + self.vowels[vowel])
        if self.joiner:
            syllables[1] += self.joiner
            if self.capitalise:
                syllables[2] = syllables[2].capitalize()
        word = "".join(syllables)
        return word[0].upper() + word[1:] if self.capitalise else word


FAMILIES: tuple[Family, ...] = (
    Family(("James", "Mary", "Robert", "Patricia", "Jennifer", "Michael", "Linda", "Olivia", "Liam", "Grace"),
           onsets="bdfgklmnprstvz", vowels="aeiou"),
    Family(("Zoë", "José", "Renée", "Søren", "Björn", "Inés", "Łukasz", "Chloé", "Ángel", "Anaïs"),
           onsets="bdklmnrsvz", vowels="éëøåüöáí"),
    Family(("Nguyễn", "Thảo", "Phương", "Hạnh", "Thị Mai", "Văn Đức", "Ngọc Anh", "Quỳnh", "Trâm", "Hương"),
           onsets="đhlmnqtv", vowels="ễảạơưịọủ", joiner=" "),
    Family(("王", "李娜", "张伟", "小明", "美玲", "陈静", "刘洋", "杨帆", "黄磊", "周婷"),
           onsets="", vowels="", capitalise=False),
    Family(("محمد", "فاطمة", "أحمد", "عائشة", "يوسف", "نور", "נועה", "דוד", "מרים", "אבי"),
           onsets="بتجدرسكلمن", vowels="اوي", capitalise=False),
    Family(("Ольга", "Дмитрий", "Анна", "Сергей", "Наталья", "Ελένη", "Γιώργος", "Σοφία", "Νίκος", "Μαρία"),
           onsets="бвгдклмнпрст", vowels="аеиоуя"),
    Family(("D'Andre", "Ana-Maria", "Jean-Luc", "O'Neil", "Mary-Kate", "Shay'la", "Anne-Sophie", "De'Shawn",
            "Marie-Claire", "Ja'Nae"), onsets="bdklmnrst", vowels="aeio", joiner="-"),
)

_SCRAMBLE = 7919  # a prime: coprime with every radix here, so multiplying by it permutes 0..radix**width-1

# Chinese given names are one or two characters after a one-character surname: built from the
# tables below (surname, then characters), not from syllables.
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红梅婷雪琳晨欣怡宇浩然子轩"


def _chinese(j: int) -> str:
    real = FAMILIES[3].real
    if j < len(real):
        return real[j]
    j -= len(real)
    given = len(_GIVEN)
    width = 2  # surname + two characters (王小明): longer than every real one above, so never one of them
    while j >= len(_SURNAMES) * given ** width:
        j -= len(_SURNAMES) * given ** width
        width += 1
    j = j * _SCRAMBLE % (len(_SURNAMES) * given ** width)
    chars = []
    for _ in range(width):
        j, digit = divmod(j, given)
        chars.append(_GIVEN[digit])
    return _SURNAMES[j] + "".join(chars)


def first_name(i: int) -> str:
    """The first name of benchmark contact `i` (0-based); different for every `i`."""
    family, j = i % len(FAMILIES), i // len(FAMILIES)
    if family == 3:
        return _chinese(j)
    return FAMILIES[family].name(j)


def check_distinct(indices: Iterable[int]) -> None:
    """Raise if two of `indices` get the same name, or one breaks the product's rule for names."""
    from patient_drip.content.names import name_problem

    seen: dict[str, int] = {}
    for i in indices:
        name = first_name(i)
        if name in seen:
            raise AssertionError(f"contacts {seen[name]} and {i} are both named {name!r}")
        problem = name_problem(name)
        if problem is not None:
            raise AssertionError(f"contact {i}'s name {name!r} {problem}")
        seen[name] = i
