"""The password rule, one place for every way a password is set (CLI, users page, Account page,
emailed reset, `drip init --admin-password`): at least 12 characters, at most 1,000, and not a
common or breached password.

The list (`common_passwords.txt`, package data, 30,000 lower-cased entries, 242 KB) is the
"passwords" frequency list that zxcvbn 4.5.0 (MIT licence, PyPI `zxcvbn`) ships: the most common
passwords of leaked password dumps, most frequent first. It is checked case-insensitively, and also
with the digits and symbols people tack on at either end taken off (`password1234!` is `password`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from patient_drip.contacts.fields import FieldError

MIN_PASSWORD = 12
MAX_PASSWORD = 1000
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "common_passwords.txt"
# What people add to a listed word to pass a length rule: digits and symbols at either end.
_DECORATION = re.compile(r"^[\d\W_]+|[\d\W_]+$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list, loaded once per process."""
    return frozenset(line.strip() for line in COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
                     if line.strip())


def password_problem(password: str) -> str | None:
    """Why `password` may not be used, as a sentence naming the rule; None when it may."""
    if len(password) < MIN_PASSWORD:
        return f"Use at least {MIN_PASSWORD} characters (this has {len(password)})."
    if len(password) > MAX_PASSWORD:
        return f"Use at most {MAX_PASSWORD} characters."
    lowered = password.lower()
    core = _DECORATION.sub("", lowered)
    listed = common_passwords()
    if lowered in listed or (len(core) >= 4 and core in listed) or len(set(lowered)) <= 2:
        return "This password is on a list of common or breached passwords; choose another (a few unrelated words work well)."
    return None


def check_password(password: str, field: str = "password") -> None:
    """Raise `FieldError` on `field` when `password` breaks the rule (see `password_problem`)."""
    problem = password_problem(password)
    if problem is not None:
        raise FieldError(field, problem)
