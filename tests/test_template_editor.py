"""The template editor's page without a browser: it loads the vendored editor from our own origin
(files present, licence kept, shipped in the wheel's package data), and offers every template variable
to insert, each with a line of help."""

from __future__ import annotations

import tomllib

from patient_drip.content.rendering import TEMPLATE_VARIABLES
from patient_drip.web.admin.template_variables import VARIABLE_HELP
from support.builders import ROOT
from support.staff import add_user, sign_in_as

VENDOR = ROOT / "web" / "static" / "vendor" / "codemirror"


def test_every_variable_has_help_and_nothing_else_does():
    assert set(VARIABLE_HELP) == set(TEMPLATE_VARIABLES)
    assert all(len(line) > 10 for line in VARIABLE_HELP.values())


def test_the_editor_page_loads_the_vendored_editor_and_lists_the_variables(client, srt, clock):
    sign_in_as(client, srt, add_user(srt, "marketing"), clock.now)
    page = client.get("/admin/templates/edit/sms/01-welcome.txt")
    assert page.status_code == 200
    for script in ("codemirror.js", "overlay.js", "htmlmixed.js"):
        assert f'<script src="/static/vendor/codemirror/{script}" defer></script>' in page.text
        assert client.get(f"/static/vendor/codemirror/{script}").status_code == 200
    assert 'data-language="text"' in page.text
    for name in TEMPLATE_VARIABLES:
        assert f'data-insert="{{{{ {name} }}}}"' in page.text, name
    assert "seed page" not in page.text and "approved_claims.yaml" not in page.text
    email = client.get("/admin/templates/edit/email/01-welcome.html")
    assert 'data-language="html"' in email.text


def test_the_vendored_files_keep_their_licence_and_ship_in_the_wheel():
    assert "Permission is hereby granted" in (VENDOR / "LICENSE").read_text()
    assert "5.65.21" in (VENDOR / "VERSION.txt").read_text()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "static/vendor/codemirror/*" in package_data["patient_drip.web"]
