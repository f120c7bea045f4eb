"""A contact search containing characters at the edges of Unicode (U+10FFFF, non-characters, the
last code point before the surrogates, an encoded lone surrogate, NUL) answers a normal page on
the staff contacts page and the API, never a 500, and still finds what its readable part matches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from patient_drip.models import Contact
from patient_drip.runtime import Runtime
from patient_drip.web.admin.contact_queries import prefix_range
from support.builders import add_contact
from support.staff import add_user, make_client, runtime_for, sign_in_as, token_for

# Percent-encoded UTF-8 as a browser would send it (a lone surrogate is invalid UTF-8 on purpose).
ODD_QUERIES = {
    "ends-in-U+10FFFF": "Smith%F4%8F%BF%BF",
    "only-U+10FFFF": "%F4%8F%BF%BF%F4%8F%BF%BF",
    "ends-in-U+FFFF": "Smith%EF%BF%BF",
    "ends-in-U+FDD0": "Smith%EF%B7%90",
    "ends-in-U+D7FF": "Smith%ED%9F%BF",
    "lone-surrogate": "Smith%ED%A0%80",
    "nul": "Smith%00",
    "email-ends-in-U+10FFFF": "dana%40example.com%F4%8F%BF%BF",
    "phone-then-U+10FFFF": "312555%F4%8F%BF%BF",
}


@pytest.fixture
def qrt(database_url: str) -> Iterator[Runtime]:
    rt = runtime_for(database_url)
    yield rt
    rt.close()


@pytest.fixture
def qclient(qrt: Runtime, clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    contact_id = add_contact(qrt, clock.now, email="dana@example.com", campaign=None)
    with qrt.sessions() as session, session.begin():
        session.execute(update(Contact).where(Contact.id == contact_id).values(first_name="Dana", last_name="Smith"))
    with make_client(qrt, clock) as client:
        sign_in_as(client, qrt, add_user(qrt, "staff"), clock.now)
        yield client


@pytest.mark.parametrize("query", list(ODD_QUERIES.values()), ids=list(ODD_QUERIES))
def test_an_odd_search_answers_a_normal_contacts_page(qclient, query):
    response = qclient.get(f"/admin/contacts?q={query}")
    assert response.status_code == 200, response.text[:300]
    assert "<html" in response.text.lower()


@pytest.mark.parametrize("query", list(ODD_QUERIES.values()), ids=list(ODD_QUERIES))
def test_an_odd_search_answers_a_normal_api_page(qclient, qrt, query):
    response = qclient.get(f"/api/v1/contacts?q={query}", headers=token_for(qrt, "staff", email="api@clinic.test"))
    assert response.status_code == 200, response.text[:300]
    assert isinstance(response.json()["items"], list)


def test_a_search_with_a_nul_still_finds_the_readable_part(qclient, qrt):
    response = qclient.get("/api/v1/contacts?q=Smi%00th", headers=token_for(qrt, "staff", email="api@clinic.test"))
    assert [item["email"] for item in response.json()["items"]] == ["dana@example.com"]


def test_a_prefix_of_only_the_last_code_point_has_no_upper_bound():
    assert "<" not in str(prefix_range(Contact.last_name, chr(0x10FFFF)))
    assert "<" in str(prefix_range(Contact.last_name, "Smith" + chr(0x10FFFF)))
