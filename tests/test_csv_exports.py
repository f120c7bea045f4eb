"""Every CSV the product writes escapes cells a spreadsheet would run as a formula (OWASP CSV
injection): a leading ``= + - @``, tab or CR gets a ``'``. Phone numbers in E.164 start with ``+``
and are escaped too (a spreadsheet can read them as a formula); other values are unchanged."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from patient_drip.cli import main
from patient_drip.contacts.csv_safe import csv_writer, escape_formula
from patient_drip.models import ConsentRecord, Contact
from patient_drip.runtime import Runtime
from support.builders import add_contact
from support.staff import add_user, make_client, runtime_for, sign_in_as

HOSTILE = {
    '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
    "@SUM(A1)": "'@SUM(A1)",
    "+1": "'+1",
    "-1": "'-1",
    "\tleading tab": "'\tleading tab",
    "\rleading CR": "'\rleading CR",
    "+13125550142": "'+13125550142",  # E.164 is data to us, but a spreadsheet may evaluate it
    "Dana": "Dana",
    "O'Neil-Smith": "O'Neil-Smith",  # a quote or hyphen inside a value is harmless
    "": "",
}


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize(("value", "expected"), list(HOSTILE.items()), ids=repr)
def test_a_cell_that_starts_like_a_formula_gets_a_quote(value, expected):
    assert escape_formula(value) == expected
    buffer = io.StringIO(newline="")
    csv_writer(buffer).writerow([value])
    assert _rows(buffer.getvalue()) == [[expected]]


def test_numbers_and_none_are_written_as_they_are():
    buffer = io.StringIO(newline="")
    csv_writer(buffer).writerows([[-1, 7, None, 2.5]])
    assert _rows(buffer.getvalue()) == [["-1", "7", "", "2.5"]]


@pytest.fixture
def crt(tmp_path) -> Iterator[Runtime]:
    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    yield rt
    rt.close()


def test_the_contacts_export_escapes_formulas_and_phone_numbers(crt, clock):
    hostile = [value for value in HOSTILE if value not in ("", "+13125550142")]
    ids = []
    for index, value in enumerate(hostile):
        contact_id = add_contact(crt, clock.now, email=f"p{index}@example.com", phone=None, consent=("email",),
                                 campaign=None)
        with crt.sessions() as session, session.begin():
            session.execute(update(Contact).where(Contact.id == contact_id).values(first_name=value, last_name=value))
        ids.append(contact_id)
    phone_id = add_contact(crt, clock.now, email=None, phone="+13125550142", consent=("sms",), campaign=None)
    with make_client(crt, clock) as client:
        sign_in_as(client, crt, add_user(crt, "staff"), clock.now)
        response = client.get("/admin/contacts/export.csv")
    assert response.status_code == 200
    header, *rows = _rows(response.text)
    by_id = {int(row[0]): dict(zip(header, row)) for row in rows}
    for contact_id, value in zip(ids, hostile):
        assert by_id[contact_id]["first_name"] == HOSTILE[value]
        assert by_id[contact_id]["last_name"] == HOSTILE[value]
    assert by_id[phone_id]["phone"] == "'+13125550142"
    assert by_id[phone_id]["first_name"] == "Alex" and by_id[phone_id]["email"] == ""
    assert by_id[ids[0]]["email"] == "p0@example.com"  # ordinary values unchanged


@pytest.fixture
def cli_env(crt, monkeypatch, tmp_path) -> Runtime:
    """The CLI pointed (through the environment) at `crt`'s database."""
    monkeypatch.setenv("DRIP_DATABASE_URL", crt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", crt.settings.secret_key.get_secret_value())  # the server's keys
    monkeypatch.setenv("DRIP_PUBLIC_URL", "https://clinic.test")
    monkeypatch.chdir(tmp_path)
    return crt


def test_the_consent_export_escapes_formulas(cli_env, clock):
    contact_id = add_contact(cli_env, clock.now, email="pat@example.com", phone="+13125550142", campaign=None)
    with cli_env.sessions() as session, session.begin():
        session.execute(update(ConsentRecord).where(ConsentRecord.contact_id == contact_id).values(
            note='=HYPERLINK("http://x")', ip_address="@SUM(A1)", user_agent="\tMozilla", actor="-1"))
    result = CliRunner().invoke(main, ["consent", "export", "--email", "pat@example.com", "--format", "csv"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header, *rows = _rows(result.output)
    assert header[:2] == ["contact_id", "occurred_at"] and len(rows) == 2  # email and SMS consent
    for row in (dict(zip(header, row)) for row in rows):
        assert row["contact_id"] == str(contact_id)
        assert (row["note"], row["ip_address"], row["user_agent"], row["actor"]) == (
            '\'=HYPERLINK("http://x")', "'@SUM(A1)", "'\tMozilla", "'-1")
        assert row["channel"] in ("email", "sms") and row["action"] == "granted"  # ordinary values unchanged


def test_the_import_error_report_keeps_its_columns_and_starts_no_cell_with_a_formula(cli_env, tmp_path):
    source = tmp_path / "people.csv"
    source.write_text("first_name,email,phone,consent_email\n"
                      "Dana,dana@example.com,,yes\n"
                      '"=HYPERLINK(""http://x"")",not-an-email,,yes\n'
                      "@SUM(A1),,+19005550100x,yes\n", encoding="utf-8")
    report = tmp_path / "errors.csv"
    result = CliRunner().invoke(main, ["import", str(source), "--campaign", "ketamine-consult",
                                       "--errors-csv", str(report)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    header, *rows = _rows(report.read_text(encoding="utf-8"))
    assert header == ["line", "field", "error"]
    assert [row[0] for row in rows] == ["3", "4"] and rows[0][1] == "email"
    for row in rows:
        assert not row[2].startswith(("=", "+", "-", "@", "\t", "\r")), row
