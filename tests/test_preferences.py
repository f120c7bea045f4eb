"""The preference page (`/u/{token}`) records consent only as given: a channel the person consented
to and then left can be started again; one they never consented to is never "started again" —
emails start with the wording shown, texts only after a confirmation by text. Every grant records
the wording version the page showed, and a stale one is refused."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from patient_drip.contacts.consent import load_wording
from patient_drip.contacts.importer import import_csv
from patient_drip.models import Channel, ConsentRecord, Contact
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.web.app import create_app
from support.builders import ROOT, add_contact, make_settings

EMAIL_V1 = load_wording(ROOT / "policy").wording(Channel.EMAIL)
SMS_V1 = load_wording(ROOT / "policy").wording(Channel.SMS)


@pytest.fixture
def client(rt, clock) -> Iterator[TestClient]:
    with TestClient(create_app(rt, clock=clock), base_url="https://clinic.test") as test_client:
        yield test_client


def imported(rt: Runtime, clock, consent_email: str, consent_sms: str) -> int:  # type: ignore[no-untyped-def]
    """A contact imported from a CSV row with these consent columns; returns its id."""
    text = ("first_name,email,phone,consent_email,consent_sms\n"
            f"Dana,dana@example.com,+13125550188,{consent_email},{consent_sms}\n")
    report = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), clock.now, "cli:test")
    assert not report.errors, report.errors
    with rt.sessions() as session:
        return session.scalars(select(Contact.id)).one()


def ledger(rt: Runtime) -> list[tuple[str, str, str, str | None, str | None]]:
    with rt.sessions() as session:
        return [(r.channel, r.action, r.method, r.wording_version, r.wording_text)
                for r in session.scalars(select(ConsentRecord).order_by(ConsentRecord.id))]


def consents(rt: Runtime, contact_id: int) -> tuple[bool, bool]:
    with rt.sessions() as session:
        contact = session.get(Contact, contact_id)
        return contact.email_consent, contact.sms_consent


def test_a_number_that_never_consented_is_not_offered_texts_again_and_cannot_be_started(rt, client, clock):
    contact_id = imported(rt, clock, "yes", "no")
    url = f"/u/{rt.tokens.unsubscribe(contact_id)}"
    before = ledger(rt)
    page = client.get(url).text
    assert "Start text messages again" not in page and 'value="resubscribe_sms"' not in page
    assert 'value="start_sms"' not in page
    assert "only after you confirm by text message" in page and "cannot be started from this page" in page
    assert "Msg &amp; data rates may apply" in page  # the wording that will apply is shown
    for action in ("resubscribe_sms", "start_sms"):
        refused = client.post(url, data={"action": action, "wording_version": SMS_V1.version})
        assert refused.status_code == 400
    assert "only after you confirm by text message" in refused.text
    assert ledger(rt) == before and consents(rt, contact_id) == (True, False)


def test_an_email_that_never_consented_starts_with_the_wording_shown_and_records_it(rt, client, clock):
    contact_id = imported(rt, clock, "no", "yes")
    url = f"/u/{rt.tokens.unsubscribe(contact_id)}"
    before = ledger(rt)
    page = client.get(url).text
    assert "Start emails again" not in page and 'value="start_email"' in page and "Start emails" in page
    assert EMAIL_V1.text in page and f'name="wording_version" value="{EMAIL_V1.version}"' in page
    not_again = client.post(url, data={"action": "resubscribe_email", "wording_version": EMAIL_V1.version})
    assert not_again.status_code == 400 and ledger(rt) == before
    started = client.post(url, data={"action": "start_email", "wording_version": EMAIL_V1.version})
    assert started.status_code == 200 and "You will get our emails" in started.text
    assert ledger(rt)[len(before):] == [("email", "granted", "unsubscribe_page", EMAIL_V1.version, EMAIL_V1.text)]
    assert consents(rt, contact_id) == (True, True)
    assert 'value="start_email"' not in client.get(url).text  # now she receives them: "Stop emails"


@pytest.mark.parametrize(("channel", "wording"), [("email", EMAIL_V1), ("sms", SMS_V1)])
def test_a_channel_consented_then_left_starts_again_recording_the_wording_shown(rt, client, clock, channel, wording):
    contact_id = add_contact(rt, clock.now, consent=("email", "sms"), campaign=None)
    url = f"/u/{rt.tokens.unsubscribe(contact_id)}"
    assert client.post(url, data={"action": channel}).status_code == 200
    page = client.get(url).text
    label = "emails" if channel == "email" else "text messages"
    assert f"Start {label} again" in page and wording.text.replace("&", "&amp;") in page
    before = ledger(rt)
    again = client.post(url, data={"action": f"resubscribe_{channel}", "wording_version": wording.version})
    assert again.status_code == 200 and "subscribed again" in again.text
    assert ledger(rt)[len(before):] == [(channel, "granted", "unsubscribe_page", wording.version, wording.text)]
    assert consents(rt, contact_id) == (True, True)


@pytest.fixture
def reworded_rt(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A clinic that published email-v2 after email-v1 (both still published; v2 current)."""
    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "policy", policy)
    data = yaml.safe_load((policy / "consent_wording.yaml").read_text(encoding="utf-8"))
    data["email"]["versions"]["email-v2"] = "Email me about my request and this treatment. I can unsubscribe any time."
    data["email"]["current"] = "email-v2"
    (policy / "consent_wording.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    runtime = build_runtime(make_settings(database_url, policy_dir=policy))
    yield runtime
    runtime.close()


@pytest.mark.parametrize("posted", ["email-v1", "", "email-v9"], ids=["stale", "missing", "unknown"])
@pytest.mark.parametrize("action", ["start_email", "resubscribe_email"])
def test_a_wording_version_other_than_the_current_one_is_refused_and_nothing_is_recorded(reworded_rt, clock, action,
                                                                                          posted):
    if action == "start_email":
        contact_id = imported(reworded_rt, clock, "no", "yes")
    else:
        contact_id = add_contact(reworded_rt, clock.now, consent=("email",), campaign=None)
    url = f"/u/{reworded_rt.tokens.unsubscribe(contact_id)}"
    with TestClient(create_app(reworded_rt, clock=clock), base_url="https://clinic.test") as web:
        if action == "resubscribe_email":
            web.post(url, data={"action": "email"})
        assert 'name="wording_version" value="email-v2"' in web.get(url).text
        before = ledger(reworded_rt)
        refused = web.post(url, data={"action": action, "wording_version": posted})
        assert refused.status_code == 409 and "wording has changed" in refused.text
        assert ledger(reworded_rt) == before and consents(reworded_rt, contact_id)[0] is False
        accepted = web.post(url, data={"action": action, "wording_version": "email-v2"})
    assert accepted.status_code == 200
    assert ledger(reworded_rt)[-1][3:] == ("email-v2", "Email me about my request and this treatment. I can "
                                                       "unsubscribe any time.")
