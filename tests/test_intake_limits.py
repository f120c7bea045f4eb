"""SMS pumping protection at the public intake (`contacts.intake_limits`): which numbers may be
texted, the limits shared by every process through the database, and the staff alert."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from patient_drip.contacts.fields import FieldError
from patient_drip.contacts.intake_limits import (
    IntakeLimits,
    Limit,
    admit_consultation,
    allow_unconfirmed_text,
    check_number_for_texts,
    forget_expired,
    network_of,
    recent_alerts,
)
from patient_drip.models import AuditEntry, Event, EventKind, RateBucket
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.settings import Rate, SettingsError, load_settings, parse_rate
from support.builders import START, make_settings

US_CA = frozenset({"US", "CA"})


# -- which numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "countries", "says"), [
    pytest.param("+19005550100", US_CA, "premium-rate", id="us-900-premium"),
    pytest.param("+449098790123", frozenset({"GB"}), "premium-rate", id="uk-09-premium"),
    pytest.param("+33884012345", frozenset({"FR"}), "shared-cost", id="fr-0884-shared-cost"),
    pytest.param("+445512345678", frozenset({"GB"}), "UAN", id="uk-055-uan"),
    pytest.param("+447012345678", frozenset({"GB"}), "personal", id="uk-070-personal"),
    pytest.param("+15002345678", US_CA, "personal", id="us-500-personal"),
    pytest.param("+447640123456", frozenset({"GB"}), "pager", id="uk-076-pager"),
    pytest.param("+18005550100", US_CA, "toll-free", id="us-800-toll-free"),
    pytest.param("+19995550100", US_CA, "not a number we can recognise", id="unknown"),
    pytest.param("+441212345678", frozenset({"GB"}), "landline", id="uk-landline-for-texts"),
    pytest.param("+447400123456", US_CA, "we cannot text numbers in GB", id="not-an-allowed-country"),
    pytest.param("+33612345678", US_CA, "must be a number in CA, US", id="french-mobile-default-countries"),
])
def test_numbers_we_would_not_text_are_a_field_error_on_phone(number, countries, says):
    with pytest.raises(FieldError) as caught:
        check_number_for_texts(number, countries)
    assert caught.value.field == "phone"
    assert says in caught.value.message


@pytest.mark.parametrize(("number", "countries"), [
    pytest.param("+13125550142", US_CA, id="us-fixed-or-mobile"),
    pytest.param("+14165550123", US_CA, id="canada"),
    pytest.param("+447400123456", frozenset({"GB"}), id="uk-mobile-when-gb-allowed"),
    pytest.param("+445612345678", frozenset({"GB"}), id="uk-voip-allowed"),
    pytest.param("+33612345678", frozenset({"FR"}), id="french-mobile-when-fr-allowed"),
])
def test_numbers_a_person_texts_are_accepted(number, countries):
    check_number_for_texts(number, countries)


def test_a_landline_is_fine_when_no_texts_are_asked_for_but_a_cost_trap_never_is():
    check_number_for_texts("+441212345678", frozenset({"GB"}), landline_ok=True)
    with pytest.raises(FieldError):
        check_number_for_texts("+19005550100", US_CA, landline_ok=True)


@pytest.mark.parametrize(("address", "network"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("203.0.113.1", "203.0.113.0/24"),
    ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    ("testclient", "testclient"),
])
def test_the_network_of_an_address_is_its_24_or_64(address, network):
    assert network_of(address) == network


# -- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rate"), [("5/10m", Rate(5, 600)), ("10/h", Rate(10, 3600)),
                                            ("2/1d", Rate(2, 86400)), (" 0 / 30s ", Rate(0, 30))])
def test_limits_are_read_as_count_per_window(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(("variable", "field", "value"), [
    ("DRIP_INTAKE_SMS_GLOBAL", "intake_sms_global", "lots"),
    ("DRIP_INTAKE_SMS_PER_NUMBER", "intake_sms_per_number", "5/0m"),
    ("DRIP_INTAKE_FORM_LIMIT", "intake_form_limit", "5 per hour"),
    ("DRIP_SMS_COUNTRIES", "sms_countries", "US,XX"),
    ("DRIP_SMS_COUNTRIES", "sms_countries", " , "),
])
def test_a_bad_limit_or_country_setting_names_the_variable(variable, field, value):
    with pytest.raises(SettingsError) as caught:
        load_settings(**{field: value})
    assert variable in str(caught.value)


# -- the limits, shared through the database --------------------------------------------------------


def limits(**rates: str) -> IntakeLimits:
    defaults = {"form": "1000/1h", "per_number": "1000/1h", "per_network": "1000/1h", "overall": "1000/1h"}
    parsed = {name: parse_rate(value) for name, value in {**defaults, **rates}.items()}
    return IntakeLimits(countries=US_CA, secret="test-secret", **parsed)


@pytest.fixture
def two_runtimes(database_url: str) -> Iterator[tuple[Runtime, Runtime]]:
    """Two runtimes (two engines, as in two processes) on one database."""
    first, second = build_runtime(make_settings(database_url)), build_runtime(make_settings(database_url))
    yield first, second
    first.close()
    second.close()


def text_once(rt: Runtime, lim: IntakeLimits, phone: str, ip: str, now=START):  # type: ignore[no-untyped-def]
    with rt.sessions() as session, session.begin():
        return allow_unconfirmed_text(session, lim, phone=phone, ip=ip, now=now)


@pytest.mark.parametrize(("rates", "requests", "limit"), [
    pytest.param({"per_number": "2/1d"}, [("+13125550142", f"198.51.{i}.1") for i in range(5)], Limit.NUMBER,
                 id="one-number-from-many-networks"),
    pytest.param({"per_network": "3/1h"}, [(f"+1312555{i:04d}", f"203.0.113.{i}") for i in range(5)], Limit.NETWORK,
                 id="many-numbers-from-one-24"),
    pytest.param({"per_network": "3/1h"}, [(f"+1312555{i:04d}", f"2001:db8:1:2::{i:x}") for i in range(5)],
                 Limit.NETWORK, id="many-numbers-from-one-64"),
    pytest.param({"overall": "4/1h"}, [(f"+1312555{i:04d}", f"10.{i}.0.1") for i in range(6)], Limit.GLOBAL,
                 id="many-numbers-from-many-networks"),
])
def test_each_limit_holds_across_two_processes(two_runtimes, rates, requests, limit):
    lim = limits(**rates)
    allowed = int(str(next(iter(rates.values()))).split("/")[0])
    answers = [text_once(two_runtimes[index % 2], lim, phone, ip) for index, (phone, ip) in enumerate(requests)]
    assert answers[:allowed] == [None] * allowed
    refused = [answer for answer in answers[allowed:]]
    assert refused and all(r is not None and r.limit == limit and r.retry_after > 0 for r in refused)


def test_concurrent_requests_from_two_processes_never_exceed_the_global_limit(two_runtimes):
    lim = limits(overall="10/1h")
    results: list[object] = []
    lock = threading.Lock()

    def burst(rt: Runtime, offset: int) -> None:
        for i in range(15):
            answer = text_once(rt, lim, f"+1312555{offset + i:04d}", f"10.{offset + i}.0.1")
            with lock:
                results.append(answer)

    threads = [threading.Thread(target=burst, args=(rt, n * 100)) for n, rt in enumerate(two_runtimes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for r in results if r is None) == 10
    assert len(results) == 30


def test_a_refused_request_counts_against_no_limit(rt):
    lim = limits(per_number="1/1d", per_network="2/1h")
    assert text_once(rt, lim, "+13125550100", "203.0.113.1") is None
    assert text_once(rt, lim, "+13125550100", "203.0.113.2").limit == Limit.NUMBER  # network not counted
    assert text_once(rt, lim, "+13125550101", "203.0.113.3") is None  # so the network still has room
    assert text_once(rt, lim, "+13125550102", "203.0.113.4").limit == Limit.NETWORK


def test_a_limit_recovers_as_its_window_passes_and_retry_after_says_when(rt):
    lim = limits(per_network="4/1h")  # a burst of 4, then one every 15 minutes
    for i in range(4):
        assert text_once(rt, lim, f"+1312555{i:04d}", "203.0.113.9") is None
    refusal = text_once(rt, lim, "+13125550099", "203.0.113.9")
    assert refusal is not None and refusal.retry_after == 15 * 60
    assert text_once(rt, lim, "+13125550099", "203.0.113.9", START + timedelta(minutes=14)) is not None
    assert text_once(rt, lim, "+13125550099", "203.0.113.9", START + timedelta(minutes=15)) is None


def test_the_form_limit_and_the_text_limits_count_together_or_not_at_all(rt):
    lim = limits(form="2/10m", overall="1/1h")
    with rt.sessions() as session, session.begin():
        assert admit_consultation(session, lim, ip="203.0.113.5", text_to="+13125550100", now=START) is None
    with rt.sessions() as session, session.begin():  # texts refused: the form try is not used up
        refusal = admit_consultation(session, lim, ip="203.0.113.5", text_to="+13125550101", now=START)
    assert refusal is not None and refusal.limit == Limit.GLOBAL
    with rt.sessions() as session, session.begin():  # email only: the address's second try
        assert admit_consultation(session, lim, ip="203.0.113.5", text_to=None, now=START) is None
    with rt.sessions() as session, session.begin():
        refusal = admit_consultation(session, lim, ip="203.0.113.5", text_to=None, now=START)
    assert refusal is not None and refusal.limit == Limit.FORM and refusal.retry_after == 300


def test_a_limit_of_zero_refuses_everything(rt):
    assert text_once(rt, limits(overall="0/1h"), "+13125550100", "203.0.113.1").limit == Limit.GLOBAL


def test_the_global_limit_alerts_staff_once_per_window(rt):
    lim = limits(overall="2/1h")
    answers = [text_once(rt, lim, f"+1312555{i:04d}", f"10.{i}.0.1") for i in range(8)]
    assert [a is None for a in answers] == [True, True] + [False] * 6
    later = START + timedelta(hours=2, minutes=1)
    for i in range(3):
        text_once(rt, lim, f"+1312556{i:04d}", f"10.9{i}.0.1", later)
    with rt.sessions() as session:
        events = session.scalars(select(Event).where(Event.kind == EventKind.INTAKE_LIMIT_TRIPPED)).all()
        assert [event.contact_id for event in events] == [None, None]
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "intake_limit_tripped")) == 2
        alerts = recent_alerts(session, later)
        assert len(alerts) == 2 and alerts[0].at > alerts[1].at and alerts[0].rate == "2 per hour"


def test_the_table_holds_no_number_or_address_in_clear_and_recovered_rows_are_forgotten(rt):
    lim = limits()
    assert text_once(rt, lim, "+13125550142", "203.0.113.7") is None
    with rt.sessions() as session:
        keys = session.scalars(select(RateBucket.channel)).all()
    assert len(keys) == 3 and not any("5550142" in key or "203.0.113" in key for key in keys)
    with rt.sessions() as session, session.begin():
        assert forget_expired(session, START) == 0  # still limiting
    with rt.sessions() as session, session.begin():
        session.add(RateBucket(channel="sms", next_slot_at=START - timedelta(days=9)))  # the dispatcher's own row
    with rt.sessions() as session, session.begin():
        assert forget_expired(session, START + timedelta(hours=1)) == 3
    with rt.sessions() as session:
        assert session.scalars(select(RateBucket.channel)).all() == ["sms"]
