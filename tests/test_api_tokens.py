"""API tokens: every route names its scope, scopes follow the roles, the Account page offers only
what the role allows and the lifetimes the settings allow and lists each token, every entry point
that changes a user revokes their tokens, and migration 0007 gives old tokens their role's power
with an expiry."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text

from patient_drip import db
from patient_drip.accounts.scopes import ROLE_SCOPES, Scope, expiry_choices, roles_for_scope
from patient_drip.accounts.users import Role
from patient_drip.cli import main
from patient_drip.models import ApiToken, AuditEntry
from patient_drip.web.admin.auth import describe_auth
from patient_drip.web.app import create_app
from support.builders import START, VirtualClock
from support.routes import routes_of
from support.staff import add_user, client, make_client, runtime_for, sign_in_as, srt, token_for  # noqa: F401

# The one route that needs a token but no scope: it only says whom the token belongs to.
NO_SCOPE = {("GET", "/api/v1/me")}


def _token_checks(dependant) -> list:  # type: ignore[no-untyped-def]
    """The API-token dependencies (`web.deps.api_require`) anywhere under a route."""
    found = []
    for dep in dependant.dependencies:
        if describe_auth(dep.call) and hasattr(dep.call, "drip_scope"):
            found.append(dep.call)
        found.extend(_token_checks(dep))
    return found


def test_every_token_route_names_the_scope_it_needs(srt):
    app = create_app(srt)
    routes = [(m, p, d) for m, p, d in routes_of(app) if p.startswith("/api/v1/") or p == "/metrics"]
    assert len(routes) >= 11
    missing, scoped = [], {}
    for method, path, dependant in routes:
        checks = _token_checks(dependant) if dependant is not None else []
        scopes = {check.drip_scope for check in checks}
        if len(checks) != 1 or (None in scopes and (method, path) not in NO_SCOPE):
            missing.append(f"{method} {path}")
        else:
            scoped[(method, path)] = scopes.pop()
    assert missing == [], f"routes without exactly one declared scope: {missing}"
    assert scoped[("GET", "/metrics")] == Scope.METRICS
    assert scoped[("GET", "/api/v1/contacts/{contact_id}/messages")] == Scope.MESSAGES_READ
    assert set(scoped.values()) - {None} == set(Scope)  # every scope opens something


def test_the_scope_table_knows_every_role_and_admins_hold_every_scope():
    assert set(ROLE_SCOPES) == {role.value for role in Role}
    assert ROLE_SCOPES["admin"] == frozenset(Scope)
    assert roles_for_scope(Scope.CONTACTS_READ) == ("admin", "staff")
    assert all(Scope.CONTACTS_READ not in ROLE_SCOPES[role] for role in ("marketing", "clinician"))


def test_openapi_lists_the_scopes_and_what_each_opens(client):
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["ApiToken"]["description"]
    for scope in Scope:
        assert f"`{scope.value}`" in scheme and f"| `{scope.value}` |" in schema["info"]["description"]
    assert schema["paths"]["/api/v1/contacts"]["get"]["security"] == [{"ApiToken": ["contacts:read"]}]


@pytest.mark.parametrize(("max_days", "offered", "refused"), [
    (365, (7, 30, 90, 180, 365), 366), (45, (7, 30, 45), 90), (3650, (7, 30, 90, 180, 365, 3650), 400)])
def test_the_lifetimes_offered_stop_at_the_setting(tmp_path, max_days, offered, refused):
    assert expiry_choices(max_days) == offered
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", api_token_max_days=max_days)
    clock = VirtualClock()
    with make_client(rt, clock) as web:
        csrf = sign_in_as(web, rt, add_user(rt, "staff"), clock.now)
        page = web.get("/admin/account").text
        assert tuple(int(d) for d in re.findall(r'<option value="(\d+)"', page)) == offered
        selected = re.search(r'<option value="(\d+)" selected>', page).group(1)
        assert int(selected) == (90 if max_days >= 90 else 45)
        made = web.post("/admin/account/tokens", data={"scopes": "metrics", "days": str(offered[-1]), "csrf_token": csrf})
        assert made.status_code == 200 and 'id="new-token"' in made.text
        too_long = web.post("/admin/account/tokens", data={"scopes": "metrics", "days": str(refused), "csrf_token": csrf})
        assert too_long.status_code == 400 and 'id="new-token"' not in too_long.text
    with rt.sessions() as session:
        row = session.scalar(select(ApiToken))
        assert row.expires_at == clock.now + timedelta(days=offered[-1])
    rt.close()


def test_the_account_page_offers_only_the_roles_scopes_and_lists_each_token(client, srt, clock):
    user = add_user(srt, "marketing")
    csrf = sign_in_as(client, srt, user, clock.now)
    page = client.get("/admin/account").text
    assert re.findall(r'name="scopes" value="([^"]+)"', page) == ["campaigns:read", "stats:read", "metrics"]
    made = client.post("/admin/account/tokens", data={"name": "dashboards", "scopes": ["stats:read", "metrics"],
                                                      "days": "30", "csrf_token": csrf})
    token = re.search(r'id="new-token">([^<]+)<', made.text).group(1)
    assert client.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/v1/campaigns", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    listed = client.get("/admin/account").text
    assert token not in listed  # shown once
    table = listed.split('<table id="tokens">', 1)[1].split("</table>", 1)[0]
    assert "dashboards" in table and "<code>metrics</code> <code>stats:read</code>" in table
    assert "2026-03-02 09:30" in table and "2026-04-01 10:30" in table  # created; expires (Chicago time, DST)
    assert table.count("never") == 0  # it was just used
    clock.advance(timedelta(days=30))
    sign_in_as(client, srt, user, clock.now)
    expired = client.get("/admin/account").text
    assert ">expired<" in expired and "/revoke" not in expired  # nothing left to revoke


@pytest.mark.parametrize("command_args", [["users", "disable"], ["users", "role", "{email}", "marketing"],
                                          ["users", "reset-password", "--password", "a new long passphrase"]])
def test_the_cli_user_changes_revoke_tokens_too(tmp_path, monkeypatch, command_args):
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    add_user(rt, "admin", "boss@clinic.test")
    headers = token_for(rt, "staff", email="desk@clinic.test", now=START)
    monkeypatch.setenv("DRIP_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", rt.settings.secret_key.get_secret_value())  # the server's keys
    monkeypatch.chdir(tmp_path)
    args = [a.format(email="desk@clinic.test") for a in command_args]
    if "{email}" not in " ".join(command_args):
        args.insert(2, "desk@clinic.test")
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with rt.sessions() as session:
        row = session.scalar(select(ApiToken))
        assert row.revoked_at is not None and row.revoked_reason in ("account disabled", "role changed",
                                                                     "password reset by an admin")
        revoked = session.scalar(select(AuditEntry).where(AuditEntry.action == "api_tokens_revoked"))
        assert revoked.detail["count"] == 1 and revoked.detail["user"] == "desk@clinic.test"
    with make_client(rt, VirtualClock()) as web:
        assert web.get("/api/v1/campaigns", headers=headers).status_code == 401
    rt.close()


def test_migration_0007_keeps_old_tokens_at_their_roles_power_with_an_expiry(empty_database_url):
    command.upgrade(db.alembic_config(empty_database_url), "0003")
    engine = create_engine(empty_database_url)
    with engine.begin() as connection:
        for uid, role, disabled in ((1, "staff", False), (2, "marketing", False), (3, "admin", True)):
            connection.execute(text("INSERT INTO staff_user (id, email, name, password_hash, role, disabled, "
                                    "created_at) VALUES (:id, :email, '', 'x', :role, :disabled, :now)"),
                               {"id": uid, "email": f"u{uid}@clinic.test", "role": role, "disabled": disabled,
                                "now": START})
            connection.execute(text("INSERT INTO api_token (user_id, name, token_hash, created_at) "
                                    "VALUES (:id, 'old', :hash, :now)"), {"id": uid, "hash": f"{uid:064d}", "now": START})
    db.upgrade(empty_database_url)
    with engine.connect() as connection:
        rows = {r.user_id: r for r in connection.execute(text(
            "SELECT user_id, scopes, expires_at, revoked_at, revoked_reason FROM api_token"))}
    engine.dispose()
    assert rows[1].scopes == "contacts:read contacts:write messages:read campaigns:read metrics"
    assert rows[2].scopes == "campaigns:read stats:read metrics"
    assert rows[1].revoked_at is None and rows[2].revoked_at is None
    assert rows[3].revoked_at is not None and rows[3].revoked_reason == "account disabled"
    assert all(r.expires_at is not None for r in rows.values())


def test_made_up_scopes_are_refused_on_the_form_not_stored(client, srt, clock):
    csrf = sign_in_as(client, srt, add_user(srt, "admin"), clock.now)
    for scopes in (["contacts:delete"], ["admin", "metrics"], ["x" * 5000], []):
        refused = client.post("/admin/account/tokens", data={"name": "odd", "scopes": scopes, "csrf_token": csrf})
        assert refused.status_code == 400 and 'id="new-token"' not in refused.text, scopes
        assert ("is not a scope" in refused.text) if scopes else ("Choose at least one scope." in refused.text)
        assert "x" * 41 not in refused.text
    with srt.sessions() as session:
        assert session.scalar(select(ApiToken)) is None
