"""The test suite itself: shared fixtures and builders live in `support/`, test modules never import
one another (or conftest), each shared builder is defined once, and a reused test database is as
good as a fresh one."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from patient_drip.models import Base
from patient_drip.runtime import build_runtime
from support.builders import START, add_contact, make_settings
from support.databases import POSTGRES_REACHABLE, Templates

TESTS = Path(__file__).resolve().parent
# Each defined once, in support/: a second copy drifts from the first.
SHARED = ("free_port", "loopback_url", "wait_until", "LiveApp", "make_settings", "sandbox_settings",
          "live_sandbox_runtime", "make_postgres_database", "VirtualClock", "add_contact", "token_for", "runtime_for")
GONE = ("helpers.py", "sandbox_fixture.py", "chaos_support.py")


@cache  # parsed once for all three tests
def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sorted(TESTS.rglob("*.py"))}


def _imported(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_module_imports_a_test_module_or_conftest() -> None:
    offenders = [f"{path.relative_to(TESTS)} imports {name}" for path, tree in _modules().items()
                 for name in _imported(tree) if name.split(".")[0].startswith("test_") or name == "conftest"]
    assert offenders == []


def test_shared_builders_are_defined_once_in_support() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in SHARED:
                where[node.name].append(str(path.relative_to(TESTS)))
    for name in SHARED:
        assert len(where[name]) == 1 and where[name][0].startswith("support/"), (name, where[name])


def test_the_old_helper_modules_are_gone_and_support_modules_say_what_they_own() -> None:
    assert [name for name in GONE if (TESTS / name).exists()] == []
    undocumented = [path.name for path, tree in _modules().items()
                    if path.parent.name == "support" and not ast.get_docstring(tree)]
    assert undocumented == []


@pytest.mark.postgres
def test_a_reused_postgres_database_has_no_rows_restarted_ids_and_the_template_schema() -> None:
    if not POSTGRES_REACHABLE:
        pytest.skip("PostgreSQL not reachable")
    templates = Templates()  # its own template and clones, not the run's
    try:
        with templates.postgres() as first:
            leftover = build_runtime(make_settings(first))
            add_contact(leftover, START)
            add_contact(leftover, START, email="other@example.com", phone=None, consent=("email",))
            # still open on purpose: handing the database back ends its connections
        leftover.close()
        with templates.postgres() as again:
            assert again == first
            engine = create_engine(again)
            with engine.connect() as connection:
                assert [connection.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables] \
                    == [0] * len(Base.metadata.sorted_tables)
            engine.dispose()
            rt = build_runtime(make_settings(again))
            assert add_contact(rt, START) == 1
            rt.close()
            engine = create_engine(again)
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE contact ADD COLUMN stray integer"))
            engine.dispose()
        with templates.postgres() as third:
            assert third != first  # a changed schema is not handed out again
    finally:
        templates.close()
