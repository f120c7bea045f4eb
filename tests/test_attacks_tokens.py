"""Issue 11, item 7, tried against a running server: API tokens that outlived recovery or opened
more than they were made for. Each token here is made as a person makes one, on the Account page of
a live `drip serve` (uvicorn on loopback), then used over HTTP.

Found before: a token made for /metrics read every patient; tokens kept working after a password
change, an admin reset, a disable and re-enable, and had no expiry. Now: scopes limited by the
role, 403 naming the missing scope, revocation on every change of credentials or power, an expiry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact
from support.live import LiveApp, live_staff_client, loopback_url
from support.staff import PASSWORD, add_user, runtime_for

TOKEN = re.compile(r'id="new-token">(drip_[A-Za-z0-9_-]{43})<')


@pytest.fixture
def live(database_url: str) -> Iterator[tuple[Runtime, LiveApp, VirtualClock]]:
    rt = runtime_for(database_url, public_url=loopback_url())
    clock = VirtualClock()
    with LiveApp(rt, clock) as app:
        yield rt, app, clock
    rt.close()


def make_token(app: LiveApp, rt: Runtime, clock: VirtualClock, user_id: int, scopes: list[str],
               days: int = 90) -> str:
    """A token made on the Account page by the user `user_id`, shown once."""
    with live_staff_client(app, rt, user_id, clock.now) as (client, csrf):
        page = client.post("/admin/account/tokens", data={"name": "integration", "scopes": scopes,
                                                          "days": str(days), "csrf_token": csrf})
    match = TOKEN.search(page.text)
    assert page.status_code == 200 and match, (page.status_code, page.text[:300])
    return match.group(1)


def api(app: LiveApp, token: str, path: str) -> httpx.Response:
    return httpx.get(app.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_metrics_token_reads_no_patient(live):
    rt, app, clock = live
    contact_id = add_contact(rt, clock.now)
    staff = add_user(rt, "staff", "desk@clinic.test")
    monitoring = make_token(app, rt, clock, staff.id, ["metrics"])
    assert api(app, monitoring, "/metrics").status_code == 200
    for path in ("/api/v1/contacts", f"/api/v1/contacts/{contact_id}"):
        refused = api(app, monitoring, path)
        assert refused.status_code == 403, (path, refused.status_code)
        assert "contacts:read" in refused.json()["detail"]
        assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="contacts:read"'
    refused = api(app, monitoring, f"/api/v1/contacts/{contact_id}/messages")
    assert refused.status_code == 403 and "messages:read" in refused.json()["detail"]
    reader = make_token(app, rt, clock, staff.id, ["contacts:read"])
    assert api(app, reader, f"/api/v1/contacts/{contact_id}").json()["id"] == contact_id
    assert api(app, reader, "/metrics").status_code == 403  # and the reader is not a monitor


def test_a_role_cannot_mint_what_it_cannot_do(live):
    rt, app, clock = live
    marketing = add_user(rt, "marketing", "mkt@clinic.test")
    with live_staff_client(app, rt, marketing.id, clock.now) as (client, csrf):
        refused = client.post("/admin/account/tokens", data={"name": "grab", "scopes": ["contacts:read", "metrics"],
                                                             "days": "90", "csrf_token": csrf})
    assert refused.status_code == 400 and "may not hold contacts:read" in refused.text
    assert not TOKEN.search(refused.text)


def _staff_with_token(live) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    rt, app, clock = live
    staff = add_user(rt, "staff", "desk@clinic.test")
    token = make_token(app, rt, clock, staff.id, ["contacts:read", "metrics"])
    assert api(app, token, "/api/v1/contacts").status_code == 200
    return staff.id, token


def test_changing_ones_password_ends_ones_tokens(live):
    rt, app, clock = live
    staff_id, token = _staff_with_token(live)
    with live_staff_client(app, rt, staff_id, clock.now) as (client, csrf):
        changed = client.post("/admin/account/password", data={
            "current": PASSWORD, "new": "a much better passphrase", "confirm": "a much better passphrase",
            "csrf_token": csrf})
    assert changed.status_code == 303
    assert api(app, token, "/api/v1/contacts").status_code == 401
    assert api(app, token, "/metrics").status_code != 200


@pytest.mark.parametrize("action", ["password", "disable", "role"])
def test_an_admin_change_to_the_owner_ends_their_tokens(live, action):
    rt, app, clock = live
    staff_id, token = _staff_with_token(live)
    admin = add_user(rt, "admin", "boss@clinic.test")
    with live_staff_client(app, rt, admin.id, clock.now) as (client, csrf):
        data = {"csrf_token": csrf, **({"role": "marketing"} if action == "role" else {})}
        done = client.post(f"/admin/users/{staff_id}/{action}", data=data)
        assert done.status_code in (200, 303), done.text[:300]
        assert api(app, token, "/api/v1/contacts").status_code == 401
        if action == "disable":
            assert client.post(f"/admin/users/{staff_id}/enable", data={"csrf_token": csrf}).status_code == 303
            assert api(app, token, "/api/v1/contacts").status_code == 401  # re-enabling revives nothing
        if action == "role":
            assert client.post(f"/admin/users/{staff_id}/role",
                               data={"csrf_token": csrf, "role": "staff"}).status_code == 303
            assert api(app, token, "/api/v1/contacts").status_code == 401  # nor does changing it back


def test_an_expired_token_is_refused_and_says_so(live):
    rt, app, clock = live
    staff = add_user(rt, "staff", "desk@clinic.test")
    token = make_token(app, rt, clock, staff.id, ["contacts:read"], days=7)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert api(app, token, "/api/v1/contacts").status_code == 200
    clock.advance(timedelta(seconds=1))
    refused = api(app, token, "/api/v1/contacts")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]


def test_a_token_cannot_be_made_to_live_longer_than_allowed(live):
    rt, app, clock = live
    staff = add_user(rt, "staff", "desk@clinic.test")
    with live_staff_client(app, rt, staff.id, clock.now) as (client, csrf):
        for days in ("366", "36500", "0", "-1", "ninety"):
            refused = client.post("/admin/account/tokens", data={"name": "forever", "scopes": ["contacts:read"],
                                                                 "days": days, "csrf_token": csrf})
            assert refused.status_code == 400 and "Choose one of 7, 30, 90, 180, 365 days." in refused.text, days
