"""Which field each import column holds: common names recognised, the header rewritten without
touching a row, every problem with a choice named at once, and the command line reading the same
names as the browser."""

from __future__ import annotations

import io

import pytest

from patient_drip.contacts.column_mapping import IGNORE, MappingError, check, field_for, remap, suggest
from patient_drip.contacts.import_rows import ImportFileError, read_rows


@pytest.mark.parametrize(("written", "field"), [
    ("Email Address", "email"), ("E-mail", "email"), ("\ufeffemail", "email"), ("Mobile Phone", "phone"),
    ("Cell", "phone"), ("Given name", "first_name"), ("Surname", "last_name"), ("Time Zone", "timezone"),
    ("SMS opt-in", "consent_sms"), ("Email consent", "consent_email"), ("Lead source", "source"),
    ("Notes", None), ("Address", None),
])
def test_common_column_names_are_recognised(written, field):
    assert field_for(written) == field


def test_the_first_column_of_a_field_is_suggested_and_a_second_one_is_not():
    assert suggest(["Email", "E-mail", "Phone", "Notes"]) == ["email", IGNORE, "phone", IGNORE]


def test_every_problem_with_a_choice_is_named_at_once():
    with pytest.raises(MappingError) as caught:
        check(["a", "b", "c"], ["first_name", "first_name", "favourite_colour"])
    assert caught.value.problems == ["“favourite_colour” is not a field we import",
                                     "First name is chosen for 2 columns ('a', 'b'): keep one",
                                     "choose the column with the email address or the phone number: every row needs one"]
    check(["a", "b"], ["phone", IGNORE])  # enough


def test_remap_rewrites_the_header_only_even_a_quoted_one_over_two_lines():
    text = '"Email\nAddress",Notes\r\n"dana@example.com","line one\nline two"\r\n'
    out = remap(text, ["email", IGNORE])
    assert out == 'email,not_imported_2\r\n"dana@example.com","line one\nline two"\r\n'
    header, rows = read_rows(io.StringIO(out, newline=""))
    assert header == ["email", "not_imported_2"]
    assert [row["email"] for _, row in rows] == ["dana@example.com"]


def test_reading_a_file_understands_common_names_and_refuses_two_columns_for_one_field():
    header, rows = read_rows(io.StringIO("Given name,Email Address\nDana,dana@example.com\n", newline=""))
    assert header == ["first_name", "email"] and [row for _, row in rows][0]["email"] == "dana@example.com"
    with pytest.raises(ImportFileError, match="'Email', 'E-mail' all mean email"):
        read_rows(io.StringIO("Email,E-mail\na@example.com,b@example.com\n", newline=""))


def test_drip_import_takes_a_file_with_a_crm_header(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from sqlalchemy import select

    from patient_drip.cli import main
    from patient_drip.models import Contact
    from support.staff import runtime_for

    url = f"sqlite:///{tmp_path / 'drip.db'}"
    rt = runtime_for(url)
    monkeypatch.setenv("DRIP_DATABASE_URL", url)
    monkeypatch.setenv("DRIP_SECRET_KEY", rt.settings.secret_key.get_secret_value())
    monkeypatch.chdir(tmp_path)
    people = tmp_path / "crm.csv"
    people.write_text("First Name,Email Address,Email opt-in\nDana,dana@example.com,yes\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["import", str(people), "--campaign", "ketamine-consult"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with rt.sessions() as session:
        assert session.scalar(select(Contact.email)) == "dana@example.com"
    rt.close()
