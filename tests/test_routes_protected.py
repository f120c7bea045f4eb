"""No private route without an authentication check: every route the app serves is either on the
public allow-list or refuses anonymous requests (and its handler depends on our auth dependency);
every state-changing staff route refuses a missing or wrong CSRF token."""

from __future__ import annotations

import pytest

from patient_drip.web.admin.auth import describe_auth
from support.routes import concrete, is_public, routes_of
from support.staff import add_user, sign_in_as
from patient_drip.web.app import create_app


def _has_auth_dependency(dependant) -> bool:  # type: ignore[no-untyped-def]
    return any(describe_auth(dep.call) or _has_auth_dependency(dep) for dep in dependant.dependencies)


def test_every_private_route_depends_on_an_auth_check(srt):
    app = create_app(srt)
    private = [(method, path, dependant) for method, path, dependant in routes_of(app) if not is_public(path)]
    assert len(private) > 40  # the staff UI and the API are mounted
    missing = [f"{method} {path}" for method, path, dependant in private
               if dependant is None or not _has_auth_dependency(dependant)]
    assert missing == [], f"routes without an authentication dependency: {missing}"


def test_every_private_route_refuses_anonymous_requests(client):
    refused = []
    for method, path, route in routes_of(client.app):
        if is_public(path) or method == "HEAD":
            continue
        response = client.request(method, concrete(path), data={} if method == "POST" else None)
        if path.startswith("/api/"):
            ok = response.status_code == 401 and response.headers.get("www-authenticate") == "Bearer"
        else:
            ok = response.status_code == 303 and response.headers["location"].startswith("/admin/login")
        if not ok:
            refused.append(f"{method} {path} -> {response.status_code}")
    assert refused == []


def test_public_routes_answer_without_signing_in(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/consult").status_code == 200
    assert client.get("/admin/login").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/static/admin.css").status_code == 200
    assert client.get("/static/admin.js").status_code == 200


def test_every_staff_form_post_refuses_a_missing_or_wrong_csrf_token(client, srt, clock):
    admin = add_user(srt, "admin")
    sign_in_as(client, srt, admin, clock.now)
    posts = [path for method, path, _ in routes_of(client.app)
             if method == "POST" and path.startswith("/admin") and not is_public(path)]
    assert len(posts) >= 20
    accepted = []
    for path in posts:
        for data in ({}, {"csrf_token": "not-the-token"}):
            response = client.post(concrete(path), data=data)
            if response.status_code != 403:
                accepted.append(f"{path} {data} -> {response.status_code}")
    assert accepted == []
    assert client.get("/admin").status_code == 200  # still signed in: nothing was done


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_api_refuses_requests_without_a_valid_bearer_token(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/contacts", headers=headers)
    assert response.status_code == 401 and response.json()["detail"].startswith("Not authenticated")
