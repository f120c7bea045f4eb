"""Issue 11, item 3 and "staff authentication to ASVS level 2", tried as an attacker would, against a
live server (uvicorn on a loopback port, real HTTP, threads for parallel requests): sign-in throttling
that holds under parallel guesses and across addresses, the password rule, the second factor required
for admins, session idle timeout and absolute lifetime, and the emailed reset link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote

import httpx
import pyotp
import pytest
from sqlalchemy import select

from patient_drip.models import AuditEntry, User
from patient_drip.providers.types import Channel
from patient_drip.runtime import Runtime
from support.builders import VirtualClock
from support.live import LiveApp, loopback_url, wait_until
from support.staff import PASSWORD, add_user, next_totp_time, runtime_for, totp_code

ACCOUNT_LIMIT = 5


@dataclass
class Live:
    rt: Runtime
    clock: VirtualClock
    url: str

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client whose connections come from `source` (any 127.x.y.z is this machine)."""
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30,
                            transport=httpx.HTTPTransport(local_address=source))


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    rt = runtime_for(database_url, public_url=loopback_url(), login_account_limit=ACCOUNT_LIMIT,
                     login_network_limit=1000)
    clock = VirtualClock()
    with LiveApp(rt, clock) as app:
        yield Live(rt, clock, app.url)
    rt.close()


def form_token(client: httpx.Client, path: str = "/admin/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text[:300]
    return match.group(1)


def login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    return client.post("/admin/login", data={"email": email, "password": password, "csrf_token": form_token(client)})


def page_csrf(client: httpx.Client, path: str = "/admin/account") -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


# -- throttling ---------------------------------------------------------------------------------


def test_forty_parallel_wrong_passwords_check_at_most_the_limit_and_the_right_one_is_refused_after(live):
    add_user(live.rt, "staff")

    def guess(i: int) -> int:
        with live.client() as client:
            return login(client, "staff@clinic.test", f"wrong guess number {i}").status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(guess, range(40)))
    print(f"40 parallel wrong passwords: {codes.count(401)} checked (401), {codes.count(429)} throttled (429)")
    assert codes.count(401) <= ACCOUNT_LIMIT, codes  # at most the limit reached the password check
    assert codes.count(429) >= 40 - ACCOUNT_LIMIT and set(codes) <= {401, 429}, codes
    with live.client() as client:
        right = login(client, "staff@clinic.test", PASSWORD)
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in right.text and "drip_session" not in right.headers.get("set-cookie", "")
    with live.rt.sessions() as session:
        throttled = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "sign_in_throttled")))
    assert len(throttled) == 1 and throttled[0].detail["user"] == "staff@clinic.test"
    live.clock.advance(timedelta(minutes=16))  # the window has passed: the person gets in
    with live.client() as client:
        assert login(client, "staff@clinic.test", PASSWORD).status_code == 303


def test_guesses_from_many_networks_are_still_capped_per_account(live):
    add_user(live.rt, "staff")
    codes = []
    for network in range(12):  # 12 different /24s: a botnet's spread
        with live.client(f"127.0.{network}.9") as client:
            codes.append(login(client, "staff@clinic.test", f"guess from {network}").status_code)
    assert codes[:ACCOUNT_LIMIT] == [401] * ACCOUNT_LIMIT and set(codes[ACCOUNT_LIMIT:]) == {429}, codes
    with live.client("127.0.99.1") as client:  # the right password, from a fresh network: still refused
        assert login(client, "staff@clinic.test", PASSWORD).status_code == 429


def test_many_accounts_from_one_network_are_capped_per_network(database_url):
    rt = runtime_for(database_url, public_url=loopback_url(), login_network_limit=8)
    clock = VirtualClock()
    with LiveApp(rt, clock) as app:
        live = Live(rt, clock, app.url)
        codes = []
        for i in range(10):  # one /24, ten accounts, two addresses in it
            with live.client(f"127.0.7.{1 + i % 2}") as client:
                codes.append(login(client, f"user{i}@clinic.test", "stuffed password").status_code)
    rt.close()
    assert codes == [401] * 8 + [429] * 2


# -- the password rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("password, named", [
    ("1234567890", "at least 12 characters"),
    ("1234qwerasdfzxcv", "common or breached"),  # on the shipped list, 16 characters
    ("Password1234!", "common or breached"),  # a listed word with digits tacked on
])
def test_short_and_listed_passwords_are_refused_everywhere_on_the_web(live, password, named):
    admin = add_user(live.rt, "admin")
    with live.client() as client:
        assert login(client, "admin@clinic.test", PASSWORD).status_code == 303
        code = totp_code(live.rt, admin.id, live.clock.now)
        assert client.post("/admin/login/code", data={"code": code, "csrf_token": form_token(client, "/admin/login/code")}
                           ).status_code == 303
        csrf = page_csrf(client)
        own = client.post("/admin/account/password", data={"current": PASSWORD, "new": password, "confirm": password,
                                                           "csrf_token": csrf})
        created = client.post("/admin/users", data={"email": "new@example.com", "role": "staff", "password": password,
                                                    "csrf_token": csrf})
    assert own.status_code == 400 and named in own.text
    assert created.status_code == 400 and named in created.text
    with live.rt.sessions() as session:
        assert session.scalar(select(User).where(User.email == "new@example.com")) is None
        assert session.get(User, admin.id).password_hash == add_user.__globals__["_HASH"]


# -- the second factor --------------------------------------------------------------------------


def test_an_admin_without_a_second_factor_can_do_nothing_but_enrol(live):
    add_user(live.rt, "admin", mfa=False)
    with live.client() as client:
        assert login(client, "admin@clinic.test", PASSWORD).status_code == 303
        for path in ("/admin", "/admin/users", "/admin/contacts", "/admin/account"):
            response = client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/admin/account/mfa", path
        refused = client.post("/admin/users", data={"email": "x@clinic.test", "role": "admin",
                                                    "csrf_token": page_csrf(client, "/admin/account/mfa")})
        assert refused.status_code == 303 and refused.headers["location"] == "/admin/account/mfa"
        enrol = client.get("/admin/account/mfa")
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', enrol.text).group(1)
        assert "otpauth://totp/" in enrol.text and "<svg" in enrol.text
        wrong = client.post("/admin/account/mfa", data={"secret": secret, "code": "000000",
                                                       "csrf_token": page_csrf(client, "/admin/account/mfa")})
        assert wrong.status_code == 400 and "does not match" in wrong.text
        done = client.post("/admin/account/mfa", data={"secret": secret, "code": pyotp.TOTP(secret).at(live.clock.now),
                                                      "csrf_token": page_csrf(client, "/admin/account/mfa")})
        codes = re.findall(r'<code class="secret">([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>', done.text)
        assert done.status_code == 200 and len(codes) == 10
        assert client.get("/admin/users").status_code == 200
    with live.rt.sessions() as session:
        assert session.scalar(select(User.totp_secret).where(User.email == "admin@clinic.test")) == secret
        assert codes[0] not in str(session.scalars(select(AuditEntry.detail)).all())


def test_second_step_refuses_a_wrong_code_a_replayed_code_and_a_spent_recovery_code(live):
    admin = add_user(live.rt, "admin")
    with live.client() as client:
        assert login(client, "admin@clinic.test", PASSWORD).headers["location"].startswith("/admin/login/code")
        assert client.get("/admin").status_code == 303  # the password alone opens nothing
        token = form_token(client, "/admin/login/code")
        assert client.post("/admin/login/code", data={"code": "123456", "csrf_token": token}).status_code == 401
        code = totp_code(live.rt, admin.id, live.clock.now)
        assert client.post("/admin/login/code", data={"code": code, "csrf_token": token}).status_code == 303
    with live.client() as client:  # the same code again, seen over a shoulder
        login(client, "admin@clinic.test", PASSWORD)
        replay = client.post("/admin/login/code", data={"code": code, "csrf_token": form_token(client, "/admin/login/code")})
        assert replay.status_code == 401


def test_parallel_code_guesses_are_throttled_per_user(live):
    add_user(live.rt, "admin")
    with live.client() as client:
        login(client, "admin@clinic.test", PASSWORD)
        token = form_token(client, "/admin/login/code")
        cookies = dict(client.cookies)

    def guess(i: int) -> int:
        with live.client() as other:
            other.cookies.update(cookies)
            return other.post("/admin/login/code", data={"code": f"{i:06d}", "csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(guess, range(20)))
    assert codes.count(401) <= ACCOUNT_LIMIT and codes.count(429) >= 20 - ACCOUNT_LIMIT, codes


# -- sessions -----------------------------------------------------------------------------------


def test_session_ends_when_idle_and_at_its_absolute_lifetime(live):
    user = add_user(live.rt, "staff")
    with live.client() as client:
        login(client, user.email, PASSWORD)
        live.clock.advance(timedelta(minutes=29))
        assert client.get("/admin").status_code == 200
        live.clock.advance(timedelta(minutes=31))
        assert client.get("/admin").status_code == 303  # idle 31 minutes: over
    with live.client() as client:
        login(client, user.email, PASSWORD)
        for _ in range(36):  # active every 20 minutes: 12 hours
            live.clock.advance(timedelta(minutes=20))
            status = client.get("/admin").status_code
        assert status == 303  # twelve hours after sign-in, however active


# -- the emailed reset link ---------------------------------------------------------------------


def _request_link(live: Live, email: str) -> str:
    """Ask for a reset link for `email` and return the token from the email the outbox recorded."""
    outbox = live.rt.senders[Channel.EMAIL]
    before = len(outbox.recorded)  # type: ignore[attr-defined]
    _ask(live, email)
    wait_until(lambda: len(outbox.recorded) > before)  # type: ignore[attr-defined]  # sent after the answer
    sent = list(outbox.recorded)[before:]  # type: ignore[attr-defined]
    assert len(sent) == 1 and sent[0].to == email.lower()
    link = re.search(r"(/admin/login/reset\?token=\S+)", sent[0].text).group(1)
    return unquote(link.split("token=", 1)[1])


def _ask(live: Live, email: str) -> httpx.Response:
    with live.client() as client:
        answer = client.post("/admin/login/forgot", data={"email": email,
                                                          "csrf_token": form_token(client, "/admin/login/forgot")})
    assert answer.status_code == 200 and "If that address belongs to a staff account" in answer.text
    return answer


def _reset(client: httpx.Client, token: str, new: str) -> httpx.Response:
    return client.post("/admin/login/reset", data={"token": token, "new": new, "confirm": new,
                                                   "csrf_token": form_token(client, "/admin/login/forgot")})


def test_reset_link_is_single_use_expires_and_cannot_be_tampered_with(live):
    user = add_user(live.rt, "staff")
    outbox = live.rt.senders[Channel.EMAIL]
    start = len(outbox.recorded)  # type: ignore[attr-defined]
    _ask(live, "nobody@clinic.test")  # the same answer as for an account
    token = _request_link(live, "STAFF@clinic.test")
    assert [m.to for m in list(outbox.recorded)[start:]] == ["staff@clinic.test"]  # type: ignore[attr-defined]
    with live.client() as client:
        signed_in = live.client()
        login(signed_in, user.email, PASSWORD)
        assert signed_in.get("/admin").status_code == 200
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        assert "not valid" in _reset(client, tampered, "a brand new passphrase").text
        weak = _reset(client, token, "1234567890")
        assert weak.status_code == 422 and "at least 12 characters" in weak.text
        done = _reset(client, token, "a brand new passphrase")
        assert done.status_code == 303 and done.headers["location"] == "/admin/login?done=password_reset"
        assert signed_in.get("/admin").status_code == 303  # every session ended
        again = _reset(client, token, "another new passphrase")
        assert again.status_code == 400 and "already used" in again.text
        assert login(client, user.email, "a brand new passphrase").status_code == 303
    late = _request_link(live, user.email)
    live.clock.advance(timedelta(minutes=31))
    with live.client() as client:
        expired = _reset(client, late, "yet another passphrase")
    assert expired.status_code == 400 and "expired" in expired.text
    with live.rt.sessions() as session:
        actions = set(session.scalars(select(AuditEntry.action)))
    assert {"password_reset_requested", "password_reset_by_email"} <= actions


def test_reset_requests_are_throttled_per_address(live):
    add_user(live.rt, "staff")
    with live.client() as client:
        codes = [client.post("/admin/login/forgot", data={"email": "staff@clinic.test",
                                                          "csrf_token": form_token(client, "/admin/login/forgot")})
                 for _ in range(5)]
    assert [c.status_code for c in codes] == [200, 200, 200, 429, 429]
    assert int(codes[-1].headers["retry-after"]) > 0
    outbox = live.rt.senders[Channel.EMAIL]
    wait_until(lambda: len(outbox.recorded) >= 3)  # type: ignore[attr-defined]
    assert len(outbox.recorded) == 3  # type: ignore[attr-defined]


def test_totp_helpers_agree_with_the_server(live):
    admin = add_user(live.rt, "admin")
    assert next_totp_time(live.rt, admin.id, live.clock.now) == live.clock.now


def test_in_providers_mode_the_reset_link_goes_out_through_sendgrid(sqlite_url, sandbox):
    from support.live import live_sandbox_runtime

    rt = live_sandbox_runtime(sqlite_url, sandbox)
    add_user(rt, "staff")
    clock = VirtualClock()
    with LiveApp(rt, clock) as app:
        live = Live(rt, clock, app.url)
        _ask(live, "nobody@clinic.test")
        _ask(live, "staff@clinic.test")
        received = sandbox.wait_for_messages(1, provider="sendgrid")
        token = unquote(re.search(r"/admin/login/reset\?token=(\S+)", received[0]["text"]).group(1))
        with live.client() as client:
            assert _reset(client, token, "a brand new passphrase").status_code == 303
    rt.close()
    assert [m["to"] for m in sandbox.messages(provider="sendgrid")] == ["staff@clinic.test"]
