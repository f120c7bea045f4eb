"""Attacks on the public form as a pumper or phisher would make them, against a live server whose
texts go through the official Twilio SDK to the provider sandbox (issue 11, finding 2).

Each request comes from its own source address: the client binds to an address of 127.0.0.0/8
(Linux routes the whole block to loopback), so the server sees 200 different clients exactly as
it would on the internet, with no header trick. What counts is what reached the "provider": the
texts the sandbox received.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from patient_drip.content.rendering import sms_info
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import AuditEntry, Contact, Event
from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import Runtime
from patient_drip.settings import parse_rate
from support.builders import VirtualClock, add_contact
from support.intake import processed
from support.live import LiveApp, live_sandbox_runtime
from support.staff import add_user, make_client, sign_in_as

PHISHING = "URGENT: your card is blocked, verify at https://evil.example/x"
EMOJI_100 = "😀" * 100


@pytest.fixture
def live(database_url: str, sandbox: SandboxServer, clock: VirtualClock) -> Iterator[tuple[Runtime, str]]:
    """The whole app, served, in providers mode against the sandbox, with the default limits."""
    rt = live_sandbox_runtime(database_url, sandbox)
    try:
        with LiveApp(rt, clock) as app:
            yield rt, app.url
    finally:
        rt.close()


def post_from(address: str, url: str, body: dict[str, object]) -> httpx.Response:
    """POST the form's JSON from source address `address`."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10) as client:
        return client.post(f"{url}/api/consultations", json=body)


def request(phone: str, first_name: str = "Dana", **extra: object) -> dict[str, object]:
    return {"first_name": first_name, "phone": phone, "consent_sms": True, "preferred_channel": "sms", **extra}


def texts_sent(rt: Runtime, clock: VirtualClock, sandbox: SandboxServer) -> list[dict[str, object]]:
    """Once every answered request has been acted on (a new number's one "Reply YES" text goes out
    then), dispatch everything due now; the texts the sandbox (the "provider") received."""
    processed(rt)
    Dispatcher(rt, "attack-worker").run_once(clock.now)
    return sandbox.messages("twilio")


def counts(rt: Runtime) -> tuple[int, int]:
    with rt.sessions() as session:
        return (session.scalar(select(func.count()).select_from(Contact)) or 0,
                session.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.mark.parametrize(("phone", "says"), [("+19005550100", "premium-rate"), ("+449098790123", "GB"),
                                             ("+18005550100", "toll-free")])
def test_premium_rate_and_foreign_numbers_are_refused_and_nothing_is_stored(live, sandbox, clock, phone, says):
    rt, url = live
    before = counts(rt)
    response = post_from("127.0.0.1", url, request(phone))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == ["phone"] and says in errors[0]["message"]
    assert counts(rt) == before
    assert texts_sent(rt, clock, sandbox) == []


def test_200_addresses_in_one_24_do_not_get_200_texts(live, sandbox, clock):
    rt, url = live
    answers = [post_from(f"127.0.0.{i}", url, request(f"+1312555{i:04d}")) for i in range(1, 201)]
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(refused) == 200
    per_network = parse_rate(rt.settings.intake_sms_per_network).count  # the default: 10 an hour from one /24
    assert per_network == 10 and len(accepted) == per_network
    for answer in refused:
        assert int(answer.headers["retry-after"]) > 0
        [error] = answer.json()["errors"]
        assert error["limit"] == "network" and "your network" in error["message"]
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == per_network  # refused: nothing stored
    assert len(texts_sent(rt, clock, sandbox)) == per_network


def test_200_addresses_in_200_networks_trip_the_global_limit_and_staff_see_it(live, sandbox, clock):
    rt, url = live
    answers = [post_from(f"127.{i}.0.1", url, request(f"+1312555{i:04d}")) for i in range(1, 201)]
    statuses = [a.status_code for a in answers]
    overall = parse_rate(rt.settings.intake_sms_global).count  # the default: 50 an hour
    assert overall == 50 and statuses.count(202) == overall and statuses.count(429) == 200 - overall
    assert {a.json()["errors"][0]["limit"] for a in answers if a.status_code == 429} == {"global"}
    assert len(texts_sent(rt, clock, sandbox)) == overall
    # An email-only request still gets through: the global limit is on texts, not on the form.
    assert post_from("127.250.0.1", url, {"first_name": "Eve", "email": "eve@example.com",
                                          "consent_email": True}).status_code == 202
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "intake_limit_tripped")) == 1
    staff = add_user(rt, "staff")
    with make_client(rt, clock) as client:
        sign_in_as(client, rt, staff, clock.now)
        dashboard = client.get("/admin")
    assert dashboard.status_code == 200
    assert 'id="intake-alert"' in dashboard.text and "Possible SMS pumping" in dashboard.text


def test_the_phishing_first_name_never_reaches_a_text(live, sandbox, clock):
    rt, url = live
    refused = post_from("127.0.0.1", url, request("+13125550142", first_name=PHISHING))
    assert refused.status_code == 422
    assert [error["field"] for error in refused.json()["errors"]] == ["first_name"]
    # A name stored before the rule (an old import) is left out of the text at send time.
    add_contact(rt, clock.now, first_name=PHISHING, email=None, phone="+13125550143", consent=("sms",))
    texts = texts_sent(rt, clock, sandbox)
    assert len(texts) == 1
    assert all("evil" not in str(t["text"]) and "URGENT" not in str(t["text"]) for t in texts)


def test_a_name_of_100_emoji_never_makes_a_text_over_two_segments(live, sandbox, clock):
    rt, url = live
    refused = post_from("127.0.0.1", url, request("+13125550142", first_name=EMOJI_100))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "first_name"
    accepted = post_from("127.0.0.2", url, request("+13125550144", first_name="Nguyễn"))
    assert accepted.status_code == 202
    add_contact(rt, clock.now, first_name=EMOJI_100, email=None, phone="+13125550145", consent=("sms",))
    # The form's request gets the one "Reply YES" text; a contact whose texts run gets the sequence.
    add_contact(rt, clock.now, first_name="Nguyễn", email=None, phone="+13125550146", consent=("sms",))
    texts = texts_sent(rt, clock, sandbox)
    assert len(texts) == 3
    for text in texts:
        info = sms_info(str(text["text"]))
        assert info.segments <= 2 and info.encoding == "GSM-7", (info, text["text"])
    assert any(str(t["text"]).startswith("Hi Nguyen,") for t in texts)
