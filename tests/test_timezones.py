"""Which time zone a contact gets: a zone staff give > the phone number's > a browser's zone that
names a place and fits the number's country > the clinic's; through every entry point."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from patient_drip.cli import main
from patient_drip.contacts.fields import FieldError, ZoneSource, resolve_timezone
from patient_drip.contacts.importer import import_csv, import_csv_rowwise
from patient_drip.models import Contact
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.web.app import create_app
from support.builders import make_settings
from support.staff import add_user, make_client, runtime_for, sign_in_as, token_for

CLINIC = "America/Denver"  # not the zone of any number below, so "the clinic's zone" is visible
CHICAGO = "+13125550188"  # 312: Chicago
PARIS = "+33612345678"
AUSTRALIA_MOBILE = "+61412345678"  # a mobile number: phonenumbers gives every Australian zone

# (phone, zone the browser reported, zone stored)
BROWSER_CASES = [
    pytest.param(CHICAGO, "UTC", "America/Chicago", id="312-number-utc-browser"),
    pytest.param(CHICAGO, "Etc/GMT+5", "America/Chicago", id="312-number-offset-browser"),
    pytest.param(PARIS, "Europe/Paris", "Europe/Paris", id="paris-number-paris-browser"),
    pytest.param(CHICAGO, "Europe/Paris", "America/Chicago", id="312-number-paris-browser"),
    pytest.param(None, "Europe/Paris", "Europe/Paris", id="no-phone-paris-browser"),
    pytest.param(None, "Asia/Calcutta", "Asia/Calcutta", id="no-phone-old-name-browser"),
    pytest.param(None, "UTC", CLINIC, id="no-phone-utc-browser"),
    pytest.param(None, "GMT", CLINIC, id="no-phone-gmt-browser"),
    pytest.param(None, "Etc/UTC", CLINIC, id="no-phone-etc-browser"),
    pytest.param(None, "", CLINIC, id="no-phone-no-browser"),
    pytest.param(AUSTRALIA_MOBILE, "Australia/Perth", "Australia/Perth", id="several-zones-browser-in-country"),
    pytest.param(AUSTRALIA_MOBILE, "Europe/Paris", CLINIC, id="several-zones-browser-elsewhere"),
    pytest.param(AUSTRALIA_MOBILE, "UTC", CLINIC, id="several-zones-utc-browser"),
]

# (phone, zone staff gave, zone stored): staff's zone wins, even UTC; else the phone's, else the clinic's
STAFF_CASES = [
    pytest.param(CHICAGO, "", "America/Chicago", id="312-number-no-zone"),
    pytest.param(CHICAGO, "UTC", "UTC", id="312-number-staff-utc"),
    pytest.param(CHICAGO, "Europe/Paris", "Europe/Paris", id="312-number-staff-paris"),
    pytest.param(PARIS, "", "Europe/Paris", id="paris-number-no-zone"),
    pytest.param(None, "", CLINIC, id="no-phone-no-zone"),
]


@pytest.mark.parametrize(("phone", "browser", "expected"), BROWSER_CASES)
def test_resolve_timezone_trusts_a_browser_zone_only_when_it_fits(phone, browser, expected):
    assert resolve_timezone(browser, ZoneSource.BROWSER, phone, CLINIC) == expected


@pytest.mark.parametrize(("phone", "given", "expected"), STAFF_CASES)
def test_resolve_timezone_keeps_the_zone_staff_give(phone, given, expected):
    assert resolve_timezone(given, ZoneSource.STAFF, phone, CLINIC) == expected


def test_an_area_code_spanning_two_zones_takes_the_clinic_zone_when_it_is_one_of_them():
    toll_free = "+18005551234"  # phonenumbers: every NANP zone
    assert resolve_timezone("", ZoneSource.STAFF, toll_free, "America/Chicago") == "America/Chicago"
    assert resolve_timezone("America/New_York", ZoneSource.BROWSER, toll_free, "America/Chicago") == "America/Chicago"


@pytest.mark.parametrize("source", list(ZoneSource))
def test_a_zone_that_is_not_an_iana_zone_is_a_field_error_from_either_source(source):
    with pytest.raises(FieldError) as caught:
        resolve_timezone("Mars/Olympus", source, CHICAGO, CLINIC)
    assert caught.value.field == "timezone"


# -- the public form: the browser's zone ------------------------------------------------------


@pytest.fixture
def clinic_rt(database_url: str) -> Iterator[Runtime]:
    """A runtime whose clinic zone is CLINIC (SQLite and PostgreSQL)."""
    # A clinic that accepts French and Australian numbers on its form (DRIP_SMS_COUNTRIES), so the
    # foreign numbers of BROWSER_CASES reach the zone rule (the default, US and CA, refuses them).
    runtime = build_runtime(make_settings(database_url, clinic_timezone=CLINIC, sms_countries="US,CA,FR,AU"))
    yield runtime
    runtime.close()


def _stored_zone(rt: Runtime) -> str:
    with rt.sessions() as session:
        return session.scalars(select(Contact.timezone)).one()


@pytest.mark.parametrize(("phone", "browser", "expected"), BROWSER_CASES)
def test_public_form_stores_the_browser_zone_only_when_it_fits(clinic_rt, clock, phone, browser, expected):
    form = {"first_name": "Dana", "email": "dana@example.com", "consent_email": "yes", "timezone": browser,
            **({"phone": phone} if phone else {})}
    with TestClient(create_app(clinic_rt, clock=clock), base_url="https://clinic.test") as client:
        response = client.post("/api/consultations", data=form)
    assert response.status_code == 200, response.text
    assert _stored_zone(clinic_rt) == expected


# -- staff entry points: the zone staff give ---------------------------------------------------


@pytest.fixture
def staff_rt(tmp_path) -> Iterator[Runtime]:
    runtime = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}", clinic_timezone=CLINIC)
    yield runtime
    runtime.close()


def _person(phone: str | None, zone: str) -> dict[str, str]:
    return {"first_name": "Dana", "email": "dana@example.com", "phone": phone or "", "timezone": zone}


@pytest.mark.parametrize(("phone", "given", "expected"), STAFF_CASES)
def test_api_stores_the_zone_staff_give_else_the_phones(staff_rt, clock, phone, given, expected):
    with make_client(staff_rt, clock) as client:
        body = {**_person(phone, given), "consent": ["email"]}
        if not given:
            del body["timezone"]
        response = client.post("/api/v1/contacts", json=body, headers=token_for(staff_rt, "staff"))
    assert response.status_code == 201, response.text
    assert _stored_zone(staff_rt) == expected


@pytest.mark.parametrize(("phone", "given", "expected"), STAFF_CASES)
def test_admin_form_stores_the_zone_staff_give_else_the_phones(staff_rt, clock, phone, given, expected):
    with make_client(staff_rt, clock) as client:
        csrf = sign_in_as(client, staff_rt, add_user(staff_rt, "staff"), clock.now)
        response = client.post("/admin/contacts/new", data={**_person(phone, given), "consent_email": "yes",
                                                             "campaign": "ketamine-consult", "csrf_token": csrf})
    assert response.status_code == 303, response.text
    assert _stored_zone(staff_rt) == expected


@pytest.mark.parametrize("importer", [import_csv, import_csv_rowwise])
@pytest.mark.parametrize(("phone", "given", "expected"), STAFF_CASES)
def test_import_stores_the_zone_column_else_the_phones(staff_rt, clock, importer, phone, given, expected):
    text = f"first_name,email,phone,timezone,consent_email\nDana,dana@example.com,{phone or ''},{given},yes\n"
    report = importer(staff_rt, io.StringIO(text), staff_rt.campaign("ketamine-consult"), clock.now, "cli:test")
    assert not report.errors, report.errors
    assert _stored_zone(staff_rt) == expected


@pytest.mark.parametrize(("phone", "given", "expected"), STAFF_CASES)
def test_cli_enroll_stores_the_timezone_option_else_the_phones(sqlite_url, tmp_path, monkeypatch, phone, given,
                                                               expected):
    for key, value in {"DRIP_DATABASE_URL": sqlite_url, "DRIP_PUBLIC_URL": "https://clinic.test",
                       "DRIP_CLINIC_NAME": "Riverside Wellness", "DRIP_CLINIC_TIMEZONE": CLINIC,
                       "DRIP_CLINIC_ADDRESS": "12 River Road, Springfield, IL 62701",
                       "DRIP_CLINIC_PHONE": "+1 217 555 0100"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    args = ["enroll", "--campaign", "ketamine-consult", "--email", "dana@example.com", "--consent", "email"]
    args += (["--phone", phone] if phone else []) + (["--timezone", given] if given else [])
    for command in (["init"], args):
        result = CliRunner().invoke(main, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    runtime = build_runtime(make_settings(sqlite_url, secret_key=None))  # the key file the CLI made beside it
    try:
        assert _stored_zone(runtime) == expected
    finally:
        runtime.close()
