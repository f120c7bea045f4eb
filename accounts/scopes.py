"""What an API token may do: its scopes, which roles may hold each, and how long a token may live.

Every `/api/v1` route and `/metrics` declares the one scope it needs (`web.deps.api_require`); a token
opens a route only when it carries that scope *and* its owner's role still allows it. The table here
is the single source of both answers, so the Account page, the token service and the route checks
cannot disagree. Imports nothing of ours: `accounts.users` (roles) imports `accounts.api_tokens`, which
imports this, so the role names are plain strings here (a test keeps them equal to `users.Role`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    """One thing a token may be used for (names as in OAuth: `resource:action`)."""

    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    MESSAGES_READ = "messages:read"
    CAMPAIGNS_READ = "campaigns:read"
    STATS_READ = "stats:read"
    METRICS = "metrics"


# What each scope opens, in words for the Account page and the OpenAPI description.
SCOPE_HELP: dict[Scope, str] = {
    Scope.CONTACTS_READ: "search contacts and read one contact with its enrollments (patient data)",
    Scope.CONTACTS_WRITE: "create contacts, record consent, enroll, unsubscribe, mark booked "
                          "(answers include the contact changed)",
    Scope.MESSAGES_READ: "read the messages sent to a contact, bodies included (patient data)",
    Scope.CAMPAIGNS_READ: "list campaigns and their steps (no patient data)",
    Scope.STATS_READ: "the funnel per campaign and step (counts only)",
    Scope.METRICS: "GET /metrics for monitoring (counts only, no patient data)",
}

# Which roles may hold (and use) each scope: the staff UI's role rules. Admins may hold every scope.
_PATIENT_DATA = frozenset({Scope.CONTACTS_READ, Scope.CONTACTS_WRITE, Scope.MESSAGES_READ})
ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    "admin": frozenset(Scope),
    "staff": _PATIENT_DATA | {Scope.CAMPAIGNS_READ, Scope.METRICS},
    "marketing": frozenset({Scope.CAMPAIGNS_READ, Scope.STATS_READ, Scope.METRICS}),
    "clinician": frozenset({Scope.CAMPAIGNS_READ, Scope.METRICS}),
}

# How long a new token lives (days): the Account page offers these, up to DRIP_API_TOKEN_MAX_DAYS.
EXPIRY_CHOICES_DAYS = (7, 30, 90, 180, 365)
DEFAULT_EXPIRY_DAYS = 90


def scopes_for_role(role: str) -> frozenset[Scope]:
    """The scopes a user with `role` may hold; none for a role this table does not know."""
    return ROLE_SCOPES.get(role, frozenset())


def roles_for_scope(scope: Scope) -> tuple[str, ...]:
    """The roles allowed to use `scope`, in the table's order."""
    return tuple(role for role, scopes in ROLE_SCOPES.items() if scope in scopes)


def parse_scopes(text: str) -> frozenset[Scope]:
    """The scopes stored in a token row (space-separated, as OAuth writes them); unknown names are
    dropped, so a scope removed from the code opens nothing."""
    known = {s.value for s in Scope}
    return frozenset(Scope(name) for name in text.split() if name in known)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """How a set of scopes is stored: space-separated, in the enum's order (stable for tests)."""
    chosen = set(scopes)
    return " ".join(s.value for s in Scope if s in chosen)


def expiry_choices(max_days: int) -> tuple[int, ...]:
    """The lifetimes (days) a new token may be given: the usual choices up to `max_days`, and
    `max_days` itself when it is not one of them."""
    choices = [d for d in EXPIRY_CHOICES_DAYS if d <= max_days]
    if max_days not in choices:
        choices.append(max_days)
    return tuple(choices)


def default_expiry(max_days: int) -> int:
    """The lifetime the form starts with: 90 days, or the longest allowed when that is shorter."""
    return DEFAULT_EXPIRY_DAYS if DEFAULT_EXPIRY_DAYS <= max_days else max(expiry_choices(max_days))
