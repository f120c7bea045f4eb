"""The audit of reads (issue 11, item 8): every read or export of patient data writes one audit row
(who, what, when, how many rows) through `contacts.read_audit.audit_read`, whichever entry point
read it; a list writes one row with its count, not one per contact. The audit page filters by
person, kind and date range."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from patient_drip.cli import CLI_ACTOR, main
from patient_drip.contacts.read_audit import ReadKind
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, InboundMessage, Message
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact
from support.staff import add_user, make_client, runtime_for, sign_in_as, srt, token_for  # noqa: F401 (fixture)


@pytest.fixture
def rrt(database_url: str) -> Iterator[Runtime]:
    """A runtime on SQLite and on PostgreSQL (dates and counts are compared in SQL)."""
    rt = runtime_for(database_url)
    yield rt
    rt.close()


def reads(rt: Runtime, kind: ReadKind | None = None) -> list[dict[str, Any]]:
    """The audit rows of reads (of `kind`), oldest first, as plain dicts."""
    kinds = [kind.value] if kind else [k.value for k in ReadKind]
    with rt.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action.in_(kinds)).order_by(AuditEntry.id))
        return [{"actor": r.actor, "kind": r.action, "contact": r.contact_id, "when": r.created_at, **r.detail}
                for r in rows]


def _reply(rt: Runtime, contact_id: int, now, body: str = "Is this covered by insurance?") -> None:  # type: ignore[no-untyped-def]
    with rt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body=body,
                                   classification="other", received_at=now))


def test_each_staff_page_that_shows_patient_data_writes_one_audit_row(rrt):
    clock = VirtualClock()
    contact_id = add_contact(rrt, clock.now)
    for n in range(2):
        add_contact(rrt, clock.now, email=f"p{n}@example.com", phone=None, consent=("email",), campaign=None)
    Dispatcher(rrt, "w").run_once(clock.now)
    _reply(rrt, contact_id, clock.now)
    with rrt.sessions() as session:
        email = session.scalar(select(Message).where(Message.contact_id == contact_id, Message.channel == "email"))
    staff = add_user(rrt, "staff", "desk@clinic.test")
    with make_client(rrt, clock) as client:
        sign_in_as(client, rrt, staff, clock.now)
        assert reads(rrt) == []  # signing in and the account page read no patient data
        assert client.get(f"/admin/contacts/{contact_id}").status_code == 200
        assert client.get(f"/admin/messages/{email.id}").status_code == 200
        assert client.get(f"/admin/messages/{email.id}/html").status_code == 200
        assert client.get("/admin/replies").status_code == 200
        assert client.get("/admin/contacts", params={"q": "p"}).status_code == 200  # p0@..., p1@...
        export = client.get("/admin/contacts/export.csv")
        assert export.status_code == 200 and export.text.count("\n") == 4  # header + 3 contacts
        assert client.get("/admin/contacts/999999").status_code == 404  # nothing read, nothing recorded
    got = [(r["actor"], r["kind"], r["contact"], r["rows"], r.get("what")) for r in reads(rrt)]
    assert got == [
        ("desk@clinic.test", "contact_viewed", contact_id, 1, None),
        ("desk@clinic.test", "message_viewed", contact_id, 1, f"message {email.id}"),
        ("desk@clinic.test", "message_viewed", contact_id, 1, f"message {email.id} html"),
        ("desk@clinic.test", "replies_viewed", None, 1, "show=open"),
        ("desk@clinic.test", "contacts_listed", None, 2, "q=p"),  # one row for the list, with its count
        ("desk@clinic.test", "contacts_exported", None, 3, "contacts.csv"),
    ]
    assert {r["when"] for r in reads(rrt)} == {clock.now}


def test_each_api_read_of_patient_data_writes_one_audit_row(rrt):
    clock = VirtualClock()
    contact_id = add_contact(rrt, clock.now)
    Dispatcher(rrt, "w").run_once(clock.now)
    headers = token_for(rrt, "staff", email="robot@clinic.test")
    with make_client(rrt, clock) as client:
        assert client.get("/api/v1/contacts", headers=headers, params={"q": "alex"}).status_code == 200
        assert client.get("/api/v1/contacts", headers=headers, params={"email": "alex@example.com"}).status_code == 200
        assert client.get(f"/api/v1/contacts/{contact_id}", headers=headers).status_code == 200
        messages = client.get(f"/api/v1/contacts/{contact_id}/messages", headers=headers)
        assert messages.status_code == 200 and len(messages.json()["items"]) == 2
        assert client.get("/api/v1/campaigns", headers=headers).status_code == 200  # no patient data
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    got = [(r["actor"], r["kind"], r["contact"], r["rows"], r.get("what")) for r in reads(rrt)]
    assert got == [
        ("robot@clinic.test (api)", "contacts_listed", None, 1, "q=alex"),
        ("robot@clinic.test (api)", "contacts_listed", None, 1, "email lookup"),  # the address is not copied
        ("robot@clinic.test (api)", "contact_viewed", contact_id, 1, None),
        ("robot@clinic.test (api)", "messages_listed", contact_id, 2, None),
    ]


def test_a_refused_api_read_writes_no_read_row(rrt):
    clock = VirtualClock()
    contact_id = add_contact(rrt, clock.now, campaign=None)
    headers = token_for(rrt, "staff", scopes=["metrics"])
    with make_client(rrt, clock) as client:
        assert client.get(f"/api/v1/contacts/{contact_id}", headers=headers).status_code == 403
    assert reads(rrt) == []


def test_the_consent_export_in_the_cli_writes_an_audit_row(rrt, monkeypatch, tmp_path):
    clock = VirtualClock()
    contact_id = add_contact(rrt, clock.now, email="pat@example.com", campaign=None)
    monkeypatch.setenv("DRIP_DATABASE_URL", rrt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", rrt.settings.secret_key.get_secret_value())  # the server's keys
    monkeypatch.setenv("DRIP_PUBLIC_URL", "https://clinic.test")
    monkeypatch.chdir(tmp_path)
    for fmt in ("json", "csv"):
        result = CliRunner().invoke(main, ["consent", "export", "--email", "pat@example.com", "--format", fmt],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    got = [(r["actor"], r["kind"], r["contact"], r["rows"], r.get("what")) for r in reads(rrt)]
    assert got == [(CLI_ACTOR, "consent_exported", contact_id, 2, "format=json"),
                   (CLI_ACTOR, "consent_exported", contact_id, 2, "format=csv")]
    assert CLI_ACTOR.startswith("cli:")


def _audit_rows(page: str) -> list[tuple[str, str]]:
    """(who, what) of each row in the audit page's table."""
    body = page.split('<table id="audit">', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>\s*<td class=\"nowrap\">[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>", body)


def test_the_audit_page_filters_by_person_kind_and_date_range(rrt):
    clock = VirtualClock()
    contact_id = add_contact(rrt, clock.now, campaign=None)
    desk = add_user(rrt, "staff", "desk@clinic.test")
    other = add_user(rrt, "staff", "other@clinic.test")
    admin = add_user(rrt, "admin", "boss@clinic.test")
    headers = token_for(rrt, "staff", user=desk)
    with make_client(rrt, clock) as client:
        sign_in_as(client, rrt, desk, clock.now)
        assert client.get(f"/admin/contacts/{contact_id}").status_code == 200  # day 1: desk reads the contact
        clock.advance(timedelta(days=1))
        assert client.get(f"/api/v1/contacts/{contact_id}", headers=headers).status_code == 200  # day 2: by token
        sign_in_as(client, rrt, desk, clock.now)  # a session does not last a day
        assert client.get("/admin/contacts").status_code == 200  # and desk lists contacts
    clock.advance(timedelta(days=1))
    with make_client(rrt, clock) as client:
        sign_in_as(client, rrt, other, clock.now)
        assert client.get(f"/admin/contacts/{contact_id}").status_code == 200  # day 3: someone else reads it
    with make_client(rrt, clock) as client:
        sign_in_as(client, rrt, admin, clock.now)
        day1, day2 = (clock.now - timedelta(days=2)).date(), (clock.now - timedelta(days=1)).date()

        def audit(**params: str) -> list[tuple[str, str]]:
            response = client.get("/admin/audit", params=params)
            assert response.status_code == 200, response.text[:300]
            return _audit_rows(response.text)

        assert audit(who="desk@clinic.test", kind="contact_viewed") == [
            ("desk@clinic.test (api)", "contact viewed"), ("desk@clinic.test", "contact viewed")]
        assert audit(kind="contact_viewed", since=day2.isoformat()) == [
            ("other@clinic.test", "contact viewed"), ("desk@clinic.test (api)", "contact viewed")]
        assert audit(kind="contact_viewed", until=day1.isoformat()) == [("desk@clinic.test", "contact viewed")]
        assert audit(kind="contacts_listed", since=day2.isoformat(), until=day2.isoformat()) == [
            ("desk@clinic.test", "contacts listed")]
        assert audit(who="nobody@clinic.test") == []
        refused = client.get("/admin/audit", params={"since": "2026-13-40", "until": "0001-01-01"})
        assert refused.status_code == 200
        assert "is not a date such as 2026-12-01" in refused.text and len(_audit_rows(refused.text)) >= 4


def test_the_audit_pager_keeps_the_filters(srt, clock):
    contact_id = add_contact(srt, clock.now, campaign=None)
    desk = add_user(srt, "staff", "desk@clinic.test")
    admin = add_user(srt, "admin", "boss@clinic.test")
    with make_client(srt, clock) as client:
        sign_in_as(client, srt, desk, clock.now)
        for _ in range(105):
            client.get(f"/admin/contacts/{contact_id}")
        client.get("/admin/contacts")
    with make_client(srt, clock) as client:
        sign_in_as(client, srt, admin, clock.now)
        first = client.get("/admin/audit", params={"who": "desk@clinic.test", "kind": "contact_viewed"}).text
        assert len(_audit_rows(first)) == 100
        older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
        assert "who=desk%40clinic.test" in older and "kind=contact_viewed" in older
        second = client.get(older).text
        assert _audit_rows(second) == [("desk@clinic.test", "contact viewed")] * 5
