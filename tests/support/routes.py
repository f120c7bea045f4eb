"""The app's routes as tests enumerate them: the public allow-list, and sample values for path
parameters, so a test can call every route the app serves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, routing

PUBLIC = (
    re.compile(r"^/healthz$"),
    re.compile(r"^/favicon.ico$"),
    re.compile(r"^/consult$"),
    re.compile(r"^/api/consultations$"),
    re.compile(r"^/u/\{token\}$"),
    re.compile(r"^/b/\{token\}$"),
    re.compile(r"^/confirm/\{token\}$"),
    re.compile(r"^/webhooks/.*"),
    re.compile(r"^/static$"),
    re.compile(r"^/book-placeholder$"),
    re.compile(r"^/admin/login$"),
    # The sign-in steps before a session exists: the second factor and the emailed password reset.
    re.compile(r"^/admin/login/(code|forgot|reset)$"),
    re.compile(r"^/openapi\.json$"),
)
SAMPLE_PARAMS = {"name": "email/01-welcome.html", "campaign_id": "ketamine-consult", "step_id": "welcome-email",
                 "channel": "email"}


def is_public(path: str) -> bool:
    """Whether the route template `path` is on the public allow-list."""
    return any(pattern.match(path) for pattern in PUBLIC)


def concrete(path: str) -> str:
    """`path` with each {parameter} replaced by a sample value (ids are 1)."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return SAMPLE_PARAMS.get(name, "1" if name.endswith("_id") else "x")

    return re.sub(r"\{([^}]+)\}", value, path)


def routes_of(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, dependant or None) of every route, included routers flattened."""
    contexts = routing.iter_route_contexts(app.routes) if hasattr(routing, "iter_route_contexts") else app.routes
    for route in contexts:
        path = route.path
        methods = getattr(route, "methods", None) or {"GET"}  # a Mount (static files) has none
        dependant = getattr(route, "dependant", None)
        for method in sorted(methods):
            yield method, path, dependant
