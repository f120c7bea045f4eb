"""Documentation is checked: every setting and every CLI command is in the README."""

from __future__ import annotations

import pytest

from patient_drip.cli import main
from support.builders import ROOT
from patient_drip.settings import Settings, env_name

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field):
    assert f"`{env_name(field)}`" in README or env_name(field) in README, f"{env_name(field)} missing from README"


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_is_documented(command):
    assert f"drip {command}" in README


def test_every_option_has_help():
    for command in main.commands.values():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{command.name} {param.opts} has no help"


ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
_NOT_PACKAGED = {"tests", "bench", "scripts", "migrations", "docs", "build", "dist"}


def _product_modules() -> list[str]:
    """Every module of the package, as a path from the root (`dispatch/queue.py`); a sandbox module
    may be named by its file name alone, in the sandbox row."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in _NOT_PACKAGED or any(part.startswith(".") for part in relative.parts):
            continue
        found.append(relative.as_posix())
    return found


@pytest.mark.parametrize("module", _product_modules())
def test_every_module_is_in_the_architecture_document(module):
    if module.startswith("providers/sandbox/") and module != "providers/sandbox/__init__.py":
        assert f"`{module.rsplit('/', 1)[1]}`" in ARCHITECTURE, f"{module} missing from docs/ARCHITECTURE.md"
        return
    named = module.removesuffix("__init__.py").rstrip("/") or "__init__.py"
    if module.endswith("/__init__.py"):
        named += "/"
    assert f"`{named}" in ARCHITECTURE, f"{module} missing from docs/ARCHITECTURE.md"
