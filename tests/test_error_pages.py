"""Error pages a person can read: an unknown address, a staff page with a malformed id and a server
error answer HTML in the clinic's style (the staff layout inside /admin), with no stack trace; programs
(`/api/`, `/webhooks/`, a client asking for JSON) keep the JSON answers the API documents. The favicon
is served."""

from __future__ import annotations

from fastapi.testclient import TestClient

from patient_drip.web.app import create_app
from support.staff import BASE_URL, add_user, sign_in_as, token_for

HTML = {"accept": "text/html,application/xhtml+xml"}


def test_unknown_public_addresses_get_a_page_and_programs_get_json(client, srt):
    answer = client.get("/no-such-page", headers=HTML)
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert "<h1>Page not found</h1>" in answer.text and srt.settings.clinic_phone in answer.text
    assert 'href="/consult"' in answer.text and "988" in answer.text
    assert client.get("/no-such-page", headers={"accept": "application/json"}).json() == {"detail": "Not Found"}
    assert client.post("/webhooks/nothing-here", content=b"{}").json() == {"detail": "Not Found"}
    assert client.get("/api/v1/nothing-here").json() == {"detail": "Not Found"}
    wrong_method = client.delete("/consult", headers=HTML)
    assert wrong_method.status_code == 405 and "cannot be opened this way" in wrong_method.text


def test_staff_pages_with_a_malformed_id_are_not_found_in_the_staff_layout(client, srt, clock):
    user = add_user(srt, "staff")
    assert client.get("/admin/contacts/abc", headers=HTML).status_code == 303  # signed out: to the sign-in page
    sign_in_as(client, srt, user, clock.now)
    for path in ("/admin/contacts/abc", "/admin/no-such-page", "/admin/messages/1e9"):
        answer = client.get(path, headers=HTML)
        assert answer.status_code == 404, path
        assert "<h1>Page not found</h1>" in answer.text and 'class="mainnav"' in answer.text, path
        assert "pydantic" not in answer.text and "int_parsing" not in answer.text
    bad_query = client.get("/admin/bookings?show=" + "x" * 30, headers=HTML)
    assert bad_query.status_code == 400 and "That address cannot be used" in bad_query.text
    # the JSON API keeps its documented validation answer
    api = client.get("/api/v1/contacts/abc", headers=token_for(srt, "staff", email="api@clinic.example"))
    assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["path", "contact_id"]


def test_a_server_error_is_a_plain_page_without_the_stack(srt, clock):
    app = create_app(srt, clock=clock)

    @app.get("/admin/boom")
    def boom() -> None:
        raise RuntimeError("secret detail: alex@example.com")

    @app.get("/boom")
    def public_boom() -> None:
        raise RuntimeError("secret detail: alex@example.com")

    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as web:
        for path in ("/admin/boom", "/boom"):
            answer = web.get(path, headers=HTML)
            assert answer.status_code == 500, path
            assert "<h1>Something went wrong</h1>" in answer.text and "alex@example.com" not in answer.text
            assert "Traceback" not in answer.text
        assert web.get("/boom", headers={"accept": "application/json"}).json() == {
            "error": "Something went wrong on our side and it has been logged. Please try again in a moment."}


def test_the_favicon_is_served_and_linked(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml" and b"<svg" in icon.content
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/consult").text
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/admin/login").text
