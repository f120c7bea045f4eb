"""Schemathesis against our own `/openapi.json`, in-process over ASGI: every documented operation
(the staff API under /api/v1 with an admin's API token, and the public endpoints) gets generated
valid and invalid requests. None may answer 5xx; the API's answers must match what the schema
documents (status codes, content types, response bodies).

(Schemathesis' lazy pytest loader, `from_fixture`, does not work with pytest 9, so operations are
enumerated from the schema here and driven through Hypothesis directly.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from support.chaos import record_figures
from support.builders import START, UNLIMITED_INTAKE, VirtualClock, add_contact
from support.staff import runtime_for, token_for
from patient_drip.web.app import create_app

pytestmark = pytest.mark.slow

API_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SENT: dict[str, int] = {}
EXAMPLES = 30


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[schemathesis.BaseSchema, dict[str, str]]]:
    path: Path = tmp_path_factory.mktemp("openapi") / "drip.db"
    rt = runtime_for(f"sqlite:///{path}", twilio_auth_token="fuzz-token", booking_webhook_secret="fuzz-secret",
                     **UNLIMITED_INTAKE)
    add_contact(rt, START)  # contact 1, so that /contacts/{id} finds someone now and then
    headers = token_for(rt, "admin")
    app = create_app(rt, clock=VirtualClock())
    yield schemathesis.openapi.from_asgi("/openapi.json", app), headers
    rt.close()
    record_figures("openapi_fuzz", {"requests": sum(SENT.values()), "operations": len(SENT), "server_errors": 0})


def operations(schema: schemathesis.BaseSchema, prefix: str) -> list:  # type: ignore[type-arg]
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path.startswith(prefix)]


def fuzz(op, mode: GenerationMode, headers: dict[str, str] | None, checks: list) -> None:  # type: ignore[no-untyped-def,type-arg]
    """One Hypothesis run for one operation."""
    name = f"{op.method.upper()} {op.path}"

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        SENT[name] = SENT.get(name, 0) + 1
        case.call_and_validate(headers=headers, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation's schema can be broken (e.g. a free-form string in the path):
        # there is no invalid request to generate, which is fine.
        assert mode == GenerationMode.NEGATIVE, name


def can_be_wrong(op) -> bool:  # type: ignore[no-untyped-def]
    """Negative cases need something to get wrong: a body, a path or query parameter."""
    return bool(len(op.body) or len(op.path_parameters) or len(op.query))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_staff_api_never_answers_5xx_and_answers_as_documented(api, mode):
    schema, headers = api
    ops = operations(schema, "/api/v1/")
    assert len(ops) >= 8
    for op in ops:
        if mode == GenerationMode.POSITIVE:
            fuzz(op, mode, headers, API_CHECKS)
        elif can_be_wrong(op):
            fuzz(op, mode, headers, [not_a_server_error, content_type_conformance])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_public_endpoints_never_answer_5xx(api, mode):
    # Public endpoints read their bodies themselves (form or JSON, the providers' formats), so the
    # schema says little about them: the check is "no 5xx, whatever comes".
    schema, _headers = api
    ops = [op for op in operations(schema, "/") if not op.path.startswith("/api/v1/")]
    assert len(ops) >= 8
    for op in ops:
        if mode == GenerationMode.POSITIVE or can_be_wrong(op):
            fuzz(op, mode, None, [not_a_server_error])
