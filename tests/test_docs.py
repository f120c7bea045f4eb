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
