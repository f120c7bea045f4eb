"""The staff JSON API: bearer tokens, role rules, contacts, enroll, unsubscribe, booked, messages,
and an OpenAPI schema that documents all of it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from support.builders import add_contact
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import ApiToken, ConsentRecord, Contact, Enrollment, EnrollmentStatus, ExitReason
from support.staff import add_user, make_client, token_for


@pytest.fixture
def db_client(rt, clock):  # type: ignore[no-untyped-def]
    """A client on the `rt` fixture: SQLite and PostgreSQL, for behaviour that touches the database most."""
    with make_client(rt, clock) as test_client:
        yield test_client


NEW = {"first_name": "Dana", "last_name": "Reyes", "email": "dana@example.com", "phone": "(312) 555-0188",
       "consent": ["email", "sms"], "campaign": "ketamine-consult"}


# -- authentication and roles -----------------------------------------------------------------


def test_token_identifies_its_user_and_records_use(client, srt, clock):
    headers = token_for(srt, "staff")
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"email": "staff@clinic.test", "name": "Staff", "role": "staff"}
    with srt.sessions() as session:
        assert session.scalar(select(ApiToken.last_used_at)) == clock.now


@pytest.mark.parametrize("case", ["revoked", "disabled"])
def test_revoked_tokens_and_disabled_users_are_refused(client, srt, case):
    headers = token_for(srt, "staff", revoked=case == "revoked", disabled=case == "disabled")
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_a_staff_session_cookie_does_not_authenticate_the_api(client, srt, clock):
    from support.staff import sign_in_as

    sign_in_as(client, srt, add_user(srt, "admin"), clock.now)
    assert client.get("/admin").status_code == 200
    assert client.get("/api/v1/contacts").status_code == 401  # no CSRF exposure: cookies are ignored here


@pytest.mark.parametrize(("role", "allowed"), [("admin", True), ("staff", True), ("marketing", False),
                                               ("clinician", False)])
def test_contact_endpoints_follow_the_role_rules(client, srt, clock, role, allowed):
    contact_id = add_contact(srt, clock.now)
    headers = token_for(srt, role)
    calls = [
        ("GET", "/api/v1/contacts", None),
        ("GET", f"/api/v1/contacts/{contact_id}", None),
        ("GET", f"/api/v1/contacts/{contact_id}/messages", None),
        ("POST", "/api/v1/contacts", {"email": "new@example.com"}),
        ("POST", f"/api/v1/contacts/{contact_id}/enroll", {"campaign": "nope"}),
        ("POST", f"/api/v1/contacts/{contact_id}/unsubscribe", {"channel": "sms"}),
        ("POST", f"/api/v1/contacts/{contact_id}/booked", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, headers=headers, json=body)
        if allowed:
            assert response.status_code not in (401, 403), (method, path, response.status_code)
        else:
            assert response.status_code == 403, (method, path, response.status_code)
            assert response.json()["detail"].startswith(f"Your role ({role}) may not use the contacts:"
                                                        if "messages" not in path else
                                                        f"Your role ({role}) may not use the messages:read")
    assert client.get("/api/v1/campaigns", headers=headers).status_code == 200
    assert client.get("/api/v1/stats", headers=headers).status_code == (200 if role in ("admin", "marketing")
                                                                        else 403)
    if not allowed:
        with srt.sessions() as session:
            assert session.scalar(select(Contact.sms_consent).where(Contact.id == contact_id)) is True


# -- contacts -----------------------------------------------------------------------------------


def test_create_contact_records_api_consent_and_enrolls(db_client, rt):
    client, srt = db_client, rt
    headers = token_for(srt, "staff")
    response = client.post("/api/v1/contacts", headers=headers, json=NEW)
    assert response.status_code == 201
    body = response.json()
    assert body["created"] and body["enrolled"]
    contact = body["contact"]
    assert contact["phone"] == "+13125550188" and contact["email_consent"] and contact["sms_consent"]
    assert [e["campaign_id"] for e in contact["enrollments"]] == ["ketamine-consult"]
    assert contact["enrollments"][0]["status"] == "active"
    with srt.sessions() as session:
        records = list(session.scalars(select(ConsentRecord)))
        assert {r.method for r in records} == {"api"} and {r.actor for r in records} == {"staff@clinic.test (api)"}
        assert all(r.wording_text for r in records)


def test_creating_an_existing_contact_updates_it_and_does_not_enroll_twice(client, srt):
    headers = token_for(srt, "staff")
    client.post("/api/v1/contacts", headers=headers, json=NEW)
    again = client.post("/api/v1/contacts", headers=headers, json={**NEW, "first_name": "Danielle"})
    assert again.status_code == 409 and "already enrolled" in again.json()["detail"]
    update = client.post("/api/v1/contacts", headers=headers, json={"email": "dana@example.com", "first_name": "Dani"})
    assert update.status_code == 200 and update.json()["created"] is False
    assert update.json()["contact"]["first_name"] == "Dani"


@pytest.mark.parametrize(("body", "field"), [
    ({"email": "dana@example.com", "phone": "555"}, "phone"),
    ({"email": "not an email"}, "email"),
    ({}, "email"),
    ({"email": "dana@example.com", "consent": ["sms"]}, "phone"),
    ({"email": "dana@example.com", "consent": ["email"], "campaign": "no-such-campaign"}, "campaign"),
    ({"email": "dana@example.com", "consent": ["fax"]}, "consent"),
])
def test_invalid_contact_input_is_a_422_naming_the_field(client, srt, body, field):
    headers = token_for(srt, "staff")
    response = client.post("/api/v1/contacts", headers=headers, json=body)
    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[-1] == field or (len(loc) > 1 and loc[1] == field) for loc in locations), locations
    with srt.sessions() as session:
        assert session.scalar(select(Contact.id)) is None


def test_read_and_search_contacts(client, srt, clock):
    first = add_contact(srt, clock.now, email="dana@example.com", phone="+13125550188", first_name="Dana")
    second = add_contact(srt, clock.now, email="sam@example.com", phone="+13125550199", first_name="Sam")
    headers = token_for(srt, "staff")
    one = client.get(f"/api/v1/contacts/{first}", headers=headers).json()
    assert one["email"] == "dana@example.com" and one["enrollments"][0]["status"] == "active"
    assert client.get("/api/v1/contacts/999999", headers=headers).status_code == 404
    everyone = client.get("/api/v1/contacts", headers=headers).json()
    assert [c["id"] for c in everyone["items"]] == [second, first] and everyone["next_before"] is None
    page = client.get("/api/v1/contacts?limit=1", headers=headers).json()
    assert [c["id"] for c in page["items"]] == [second] and page["next_before"] == second
    rest = client.get(f"/api/v1/contacts?limit=1&before={page['next_before']}", headers=headers).json()
    assert [c["id"] for c in rest["items"]] == [first]
    assert [c["id"] for c in client.get("/api/v1/contacts?q=sam@", headers=headers).json()["items"]] == [second]
    exact = client.get("/api/v1/contacts", params={"phone": "(312) 555-0188"}, headers=headers).json()
    assert [c["id"] for c in exact["items"]] == [first]
    assert client.get("/api/v1/contacts?phone=12", headers=headers).status_code == 422


def test_enroll_unsubscribe_booked_and_message_history(db_client, rt, clock):
    client, srt = db_client, rt
    contact_id = add_contact(srt, clock.now, campaign=None, consent=())
    headers = token_for(srt, "staff")
    refused = client.post(f"/api/v1/contacts/{contact_id}/enroll", headers=headers, json={"campaign": "ketamine-consult"})
    assert refused.status_code == 422 and "record consent first" in refused.json()["detail"][0]["msg"]
    enrolled = client.post(f"/api/v1/contacts/{contact_id}/enroll", headers=headers,
                           json={"campaign": "ketamine-consult", "consent": ["email", "sms"]})
    assert enrolled.status_code == 201 and enrolled.json()["status"] == "active"
    twice = client.post(f"/api/v1/contacts/{contact_id}/enroll", headers=headers, json={"campaign": "ketamine-consult"})
    assert twice.status_code == 409
    Dispatcher(srt, "w").run_once(clock.now)
    history = client.get(f"/api/v1/contacts/{contact_id}/messages", headers=headers).json()
    assert [(m["step_id"], m["status"]) for m in history["items"]] == [("welcome-sms", "sent"), ("welcome-email", "sent")]
    assert history["items"][1]["subject"] == "Your consultation request" and history["items"][1]["body_html"] is None
    with_html = client.get(f"/api/v1/contacts/{contact_id}/messages?include_html=true&limit=1&before="
                           f"{history['items'][0]['id']}", headers=headers).json()
    assert with_html["items"][0]["body_html"].startswith("<!DOCTYPE html>")
    unsub = client.post(f"/api/v1/contacts/{contact_id}/unsubscribe", headers=headers, json={"channel": "sms"})
    assert unsub.status_code == 200 and unsub.json()["changed"] == ["sms"]
    assert unsub.json()["contact"]["sms_blocked"].startswith("opted_out")
    again = client.post(f"/api/v1/contacts/{contact_id}/unsubscribe", headers=headers, json={"channel": "sms"})
    assert again.json()["changed"] == []
    clock.advance(timedelta(hours=1))
    booked = client.post(f"/api/v1/contacts/{contact_id}/booked", headers=headers)
    assert booked.status_code == 200 and booked.json()["ended_enrollments"] == 1
    with srt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == ExitReason.BOOKED
    assert client.post("/api/v1/contacts/999999/booked", headers=headers).status_code == 404
    bad = client.post(f"/api/v1/contacts/{contact_id}/unsubscribe", headers=headers, json={"channel": "fax"})
    assert bad.status_code == 422


def test_campaigns_and_funnel(client, srt, clock):
    add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    headers = token_for(srt, "marketing")
    campaigns = client.get("/api/v1/campaigns", headers=headers).json()
    steps = {step["id"]: step for step in campaigns[0]["steps"]}  # the message steps
    assert campaigns[0]["id"] == "ketamine-consult" and steps["stress-brain-email"]["delay_seconds"] == 2 * 86400
    funnel = client.get("/api/v1/stats", headers=headers).json()
    assert funnel[0]["enrolled"] == 1 and funnel[0]["steps"][0] == {
        "step": "welcome-email", "channel": "email", "sent": 1, "delivered": 0, "clicked": 0, "booked": 0,
        "skipped": 0, "failed": 0}


# -- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_documents_every_api_operation_with_security_and_errors(client):
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["ApiToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    operations = [(path, method, op) for path, item in schema["paths"].items() if path.startswith("/api/v1/")
                  for method, op in item.items()]
    assert {(path, method) for path, method, _ in operations} == {
        ("/api/v1/me", "get"), ("/api/v1/contacts", "get"), ("/api/v1/contacts", "post"),
        ("/api/v1/contacts/{contact_id}", "get"), ("/api/v1/contacts/{contact_id}/enroll", "post"),
        ("/api/v1/contacts/{contact_id}/unsubscribe", "post"), ("/api/v1/contacts/{contact_id}/booked", "post"),
        ("/api/v1/contacts/{contact_id}/messages", "get"), ("/api/v1/campaigns", "get"), ("/api/v1/stats", "get")}
    needs = {("/api/v1/me", "get"): [], ("/api/v1/contacts", "get"): ["contacts:read"],
             ("/api/v1/contacts/{contact_id}", "get"): ["contacts:read"],
             ("/api/v1/contacts/{contact_id}/messages", "get"): ["messages:read"],
             ("/api/v1/campaigns", "get"): ["campaigns:read"], ("/api/v1/stats", "get"): ["stats:read"]}
    for path, method, op in operations:
        # The scope each operation needs is its security requirement (OpenAPI 3.1 allows it for http).
        assert op["security"] == [{"ApiToken": needs.get((path, method), ["contacts:write"])}], path
        assert {"401", "403"} <= set(op["responses"]), path
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        assert op.get("summary"), path
        success = next(code for code in op["responses"] if code.startswith("2"))
        assert "schema" in op["responses"][success]["content"]["application/json"], path
        if "{contact_id}" in path:
            assert "404" in op["responses"], path
    create = schema["paths"]["/api/v1/contacts"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ContactCreate"}
    assert {"200", "201", "409", "422"} <= set(create["responses"])
    contact = schema["components"]["schemas"]["ContactOut"]
    assert {"id", "email", "phone", "email_consent", "sms_consent", "enrollments"} <= set(contact["properties"])
    assert not any(path.startswith("/admin") for path in schema["paths"])  # HTML pages are not API
    assert "Authorization: Bearer" in schema["info"]["description"]


def test_responses_match_the_documented_models(client, srt, clock):
    from patient_drip.web.admin.api_v1 import ContactCreated, ContactList, MessageList

    headers = token_for(srt, "admin")
    ContactCreated.model_validate(client.post("/api/v1/contacts", headers=headers, json=NEW).json())
    ContactList.model_validate(client.get("/api/v1/contacts", headers=headers).json())
    with srt.sessions() as session:
        contact_id = session.scalar(select(Contact.id))
    MessageList.model_validate(client.get(f"/api/v1/contacts/{contact_id}/messages", headers=headers).json())
