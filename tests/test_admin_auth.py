"""Staff sign-in: argon2 passwords, signed session cookies, CSRF, throttling, sign-out, expiry.
(The users, clients and runtimes these tests use are built by `support.staff`.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from patient_drip.web.admin.auth import SESSION_COOKIE, issue_session
from patient_drip.models import AuditEntry, User
from patient_drip.accounts.users import Role
from patient_drip.web.app import create_app
from support.staff import PASSWORD, add_user, login_form_token, runtime_for, sign_in_as


# -- sign-in ------------------------------------------------------------------------------------


def _login(client: TestClient, email: str, password: str, **extra: str):  # type: ignore[no-untyped-def]
    client.cookies.clear()
    token = login_form_token(client)
    return client.post("/admin/login", data={"email": email, "password": password, "csrf_token": token, **extra})


def test_private_page_redirects_to_login_with_the_page_to_return_to(client):
    response = client.get("/admin/contacts?q=rey")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fcontacts%3Fq%3Drey"


def test_login_page_has_labelled_fields_and_only_local_assets(client):
    page = client.get("/admin/login")
    assert page.status_code == 200
    assert '<label for="f-email">' in page.text and '<label for="f-password">' in page.text
    assert re.findall(r'(?:src|href)="(https?:)?//', page.text) == []
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_sign_in_sets_a_hardened_session_cookie_and_lands_on_the_dashboard(client, srt):
    add_user(srt, "staff")
    response = _login(client, "Staff@Clinic.test", PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    cookie = next(value for name, value in response.headers.multi_items()
                  if name == "set-cookie" and value.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie and "Path=/admin" in cookie
    dashboard = client.get("/admin")
    assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
    with srt.sessions() as session:
        assert session.scalar(select(AuditEntry.action).where(AuditEntry.actor == "staff@clinic.test")) == "signed_in"


def test_session_cookie_is_not_secure_when_the_public_url_is_plain_http(tmp_path, clock):
    rt = runtime_for(f"sqlite:///{tmp_path / 'h.db'}", public_url="http://127.0.0.1:8000")
    add_user(rt, "staff")
    with TestClient(create_app(rt, clock=clock), base_url="http://127.0.0.1:8000", follow_redirects=False) as client:
        response = _login(client, "staff@clinic.test", PASSWORD)
        cookie = response.headers["set-cookie"]
        assert response.status_code == 303 and "Secure" not in cookie and "HttpOnly" in cookie
    rt.close()


def test_wrong_password_and_unknown_email_get_the_same_answer(client, srt):
    add_user(srt, "staff")
    wrong = _login(client, "staff@clinic.test", "not the password")
    unknown = _login(client, "nobody@clinic.test", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Email or password is not right." in wrong.text and "Email or password is not right." in unknown.text
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")


def test_login_without_its_form_token_is_refused(client, srt):
    add_user(srt, "staff")
    client.get("/admin/login")
    response = client.post("/admin/login", data={"email": "staff@clinic.test", "password": PASSWORD,
                                                 "csrf_token": "forged"})
    assert response.status_code == 403 and SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_disabled_user_cannot_sign_in(client, srt):
    add_user(srt, "staff", disabled=True)
    response = _login(client, "staff@clinic.test", PASSWORD)
    assert response.status_code == 401 and "disabled" in response.text


def test_after_five_failures_sign_in_is_throttled_even_with_the_right_password(client, srt, clock):
    add_user(srt, "staff")
    for _ in range(5):
        assert _login(client, "staff@clinic.test", "guess guess guess").status_code == 401
    throttled = _login(client, "staff@clinic.test", PASSWORD)
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
    assert int(throttled.headers["retry-after"]) > 0
    clock.advance(timedelta(minutes=16))
    assert _login(client, "staff@clinic.test", PASSWORD).status_code == 303


def test_throttle_is_per_account_so_colleagues_on_the_same_network_can_still_sign_in(client, srt):
    add_user(srt, "staff")
    add_user(srt, "marketing")
    for _ in range(5):
        _login(client, "staff@clinic.test", "guess guess guess")
    assert _login(client, "marketing@clinic.test", PASSWORD).status_code == 303


def test_next_parameter_cannot_send_people_to_another_site(client, srt):
    add_user(srt, "staff")
    for target in ("https://evil.example/", "//evil.example/admin", "/\\evil.example"):
        response = _login(client, "staff@clinic.test", PASSWORD, next=target)
        assert response.headers["location"] == "/admin"
    assert _login(client, "staff@clinic.test", PASSWORD, next="/admin/replies").headers["location"] == "/admin/replies"


# -- sessions -----------------------------------------------------------------------------------


def test_sign_out_ends_the_session_even_for_a_copied_cookie(client, srt, clock):
    user = add_user(srt, "staff")
    csrf = sign_in_as(client, srt, user, clock.now)
    copied = client.cookies.get(SESSION_COOKIE)
    response = client.post("/admin/logout", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"] == "/admin/login?done=signed_out"
    client.cookies.set(SESSION_COOKIE, copied, domain="clinic.test", path="/admin")
    assert client.get("/admin").status_code == 303


def test_sign_out_needs_the_csrf_token(client, srt, clock):
    user = add_user(srt, "staff")
    sign_in_as(client, srt, user, clock.now)
    assert client.post("/admin/logout", data={}).status_code == 403
    assert client.get("/admin").status_code == 200


def test_session_ends_twelve_hours_after_sign_in_however_active(client, srt, clock):
    user = add_user(srt, "staff")
    sign_in_as(client, srt, user, clock.now)
    for _ in range(35):  # a request every 20 minutes: never idle, for 11 h 40 min
        clock.advance(timedelta(minutes=20))
        assert client.get("/admin").status_code == 200
    clock.advance(timedelta(minutes=19))
    assert client.get("/admin").status_code == 200
    clock.advance(timedelta(minutes=2))
    assert client.get("/admin").status_code == 303


def test_session_ends_after_thirty_idle_minutes_on_the_server(client, srt, clock):
    user = add_user(srt, "staff")
    sign_in_as(client, srt, user, clock.now)
    clock.advance(timedelta(minutes=29))
    assert client.get("/admin").status_code == 200  # use moves the idle clock on
    clock.advance(timedelta(minutes=29))
    assert client.get("/admin").status_code == 200
    clock.advance(timedelta(minutes=30))
    assert client.get("/admin").status_code == 303


def test_disabling_a_user_ends_their_session_at_once(client, srt, clock):
    user = add_user(srt, "staff")
    sign_in_as(client, srt, user, clock.now)
    with srt.sessions() as session, session.begin():
        session.get(User, user.id).disabled = True
    assert client.get("/admin").status_code == 303


def test_a_changed_role_applies_on_the_next_request(client, srt, clock):
    user = add_user(srt, "staff")
    sign_in_as(client, srt, user, clock.now)
    assert client.get("/admin/contacts").status_code == 200
    with srt.sessions() as session, session.begin():
        session.get(User, user.id).role = Role.MARKETING
    assert client.get("/admin/contacts").status_code == 403


@pytest.mark.parametrize("tamper", ["", "garbage", "x" * 2000])
def test_a_forged_or_tampered_cookie_is_ignored(client, srt, clock, tamper):
    user = add_user(srt, "admin")
    sign_in_as(client, srt, user, clock.now)
    value = client.cookies.get(SESSION_COOKIE)
    forged = tamper or (value[:-3] + ("aaa" if not value.endswith("aaa") else "bbb"))
    client.cookies.set(SESSION_COOKIE, forged, domain="clinic.test", path="/admin")
    assert client.get("/admin").status_code == 303


def test_a_cookie_signed_with_another_installations_key_is_ignored(tmp_path, client, srt, clock):
    other = runtime_for(f"sqlite:///{tmp_path / 'other.db'}", secret_key="another-installation-key")
    user = add_user(srt, "admin")
    add_user(other, "admin")
    with other.sessions() as session:
        value = issue_session(other, session, session.get(User, user.id), clock.now)
    client.cookies.set(SESSION_COOKIE, value, domain="clinic.test", path="/admin")
    assert client.get("/admin").status_code == 303
    other.close()


# -- CSRF ---------------------------------------------------------------------------------------


def test_state_changing_form_without_csrf_token_is_refused_and_changes_nothing(client, srt, clock):
    user = add_user(srt, "admin")
    sign_in_as(client, srt, user, clock.now)
    response = client.post("/admin/account/tokens", data={"name": "sneaky"})
    assert response.status_code == 403 and "expired or did not come from this site" in response.text
    response = client.post("/admin/account/tokens", data={"name": "sneaky", "csrf_token": "wrong"})
    assert response.status_code == 403
    with srt.sessions() as session:
        from patient_drip.models import ApiToken

        assert session.scalar(select(ApiToken.id)) is None


def test_csrf_token_is_accepted_from_the_header_for_scripts(client, srt, clock):
    user = add_user(srt, "admin")
    csrf = sign_in_as(client, srt, user, clock.now)
    response = client.post("/admin/account/tokens", data={"name": "ok", "scopes": "metrics"},
                           headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and "drip_" in response.text


def test_csrf_token_of_one_session_does_not_work_in_another(client, srt, clock):
    first = add_user(srt, "admin")
    second = add_user(srt, "staff")
    old_token = sign_in_as(client, srt, first, clock.now)
    sign_in_as(client, srt, second, clock.now)
    assert client.post("/admin/account/tokens", data={"name": "x", "csrf_token": old_token}).status_code == 403


# -- the second step and the network a guess is counted under ----------------------------------


def test_the_second_step_is_void_once_the_users_sessions_were_ended(client, srt, clock):
    from patient_drip.accounts.users import reset_password
    from support.staff import totp_code

    admin = add_user(srt, "admin")
    first = _login(client, "admin@clinic.test", PASSWORD)
    assert first.status_code == 303 and first.headers["location"].startswith("/admin/login/code")
    token = login_form_token(client)
    with srt.sessions() as session, session.begin():  # meanwhile an administrator resets the password
        reset_password(session, session.get(User, admin.id), clock.now, "other-admin", "a fresh long passphrase")
    late = client.post("/admin/login/code", data={"code": totp_code(srt, admin.id, clock.now), "csrf_token": token})
    assert late.status_code == 401 and "start again" in late.text
    assert SESSION_COOKIE not in late.headers.get("set-cookie", "")


@pytest.mark.parametrize("address, network", [
    ("203.0.113.77", "203.0.113.0/24"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4-mapped: counted with its IPv4 neighbours
    ("unknown", "unknown"),
])
def test_guesses_are_counted_per_ipv4_24_and_ipv6_64(address, network):
    from patient_drip.accounts.throttle import network_of

    assert network_of(address) == network


@pytest.mark.parametrize("path", ["/admin/login", "/admin/login/forgot"])
def test_a_form_token_with_non_ascii_characters_is_refused_not_a_crash(client, path):
    login_form_token(client)  # the cookie half of the double-submit token
    answer = client.post(path, data={"csrf_token": "é", "email": "a@clinic.test", "password": "x"})
    assert 400 <= answer.status_code < 500
