"""Property-based tests (hypothesis) for every parser of outside input: phone, email, names, time
zones, CSV rows, webhook payloads, reply classification, campaign files and template sources.

Each property is "a clean answer or a clean error naming what is wrong" -- never another
exception, never a hang -- plus what a good answer must look like (E.164, idempotence...).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from patient_drip.contacts import fields as contact_fields
from patient_drip.content.campaign import Campaign, CampaignError, parse_campaign
from support.builders import ROOT, START, VirtualClock
from support.webhooks import booking_headers, sendgrid_headers
from patient_drip.contacts.fields import FieldError, check_timezone, normalize_email, normalize_name, normalize_phone
from patient_drip.contacts.import_rows import KNOWN_COLUMNS, ImportFileError, read_rows
from patient_drip.contacts.importer import import_csv
from patient_drip.models import Contact, Enrollment
from patient_drip.contacts.replies import ReplyKind, classify_reply
from patient_drip.content.rendering import MAX_RENDER_SECONDS, Renderer, RenderError
from patient_drip.runtime import Runtime
from patient_drip.providers.sandbox import SendGridSigner
from support.staff import runtime_for
from patient_drip.web.app import create_app

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_PROPERTY = settings(max_examples=40, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
E164 = re.compile(r"\+[1-9][0-9]{6,14}")

phone_like = st.one_of(
    st.text(max_size=50),
    st.from_regex(r"\+?1?[ (.-]{0,2}[2-9][0-9]{2}[ ).-]{0,2}[0-9]{3}[ .-]?[0-9]{4}( ?(x|ext\.?) ?[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"\+[0-9]{1,3} ?[0-9 ]{4,16}", fullmatch=True),
    st.text(alphabet="0123456789+-() .x#*٠١٢٣٤٥٦٧٨٩０１２３", max_size=25),
)


@PROPERTY
@given(phone_like)
@example("+1 (312) 555-0142")
@example("1-800-FLOWERS")
@example("+13125550142\x00")
@example("٣١٢٥٥٥٠١٤٢")
@example("+4930000000000000")  # phonenumbers calls it valid; 16 digits is no E.164 number
def test_phone_is_e164_and_stable_or_a_field_error(raw):
    try:
        phone = normalize_phone(raw)
    except FieldError as exc:
        assert exc.field == "phone" and exc.message
        return
    assert E164.fullmatch(phone), phone
    assert normalize_phone(phone) == phone
    zone = contact_fields.resolve_timezone(None, contact_fields.ZoneSource.STAFF, phone, "America/Chicago")
    assert check_timezone(zone) == zone


@PROPERTY
@given(st.one_of(st.emails(), st.text(max_size=80),
                 st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=20), st.text(max_size=20))))
@example("Dana <dana@example.com>")
@example("dana@example.com\r\nBcc: everyone@example.com")
@example("DANA@EXAMPLE.COM")
@example("dana@exa\x00mple.com")
@example("İ@example.com")
def test_email_is_one_clean_lowercase_address_and_stable_or_a_field_error(raw):
    try:
        email = normalize_email(raw)
    except FieldError as exc:
        assert exc.field == "email" and exc.message
        return
    assert email.count("@") == 1 and len(email) <= 320
    assert email == email.lower() and email == email.strip()
    assert not any(ch.isspace() or ord(ch) < 32 or ch in "<>\"," for ch in email), email
    assert normalize_email(email) == email


@PROPERTY
@given(st.text(max_size=130))
@example("Dana\u202eevil")
@example("Lone\ud800")
@example("a\x00b")
def test_name_is_storable_text_or_a_field_error(raw):
    try:
        name = normalize_name(raw, "first_name")
    except FieldError as exc:
        assert exc.field == "first_name"
        return
    assert len(name) <= contact_fields.MAX_NAME and name == name.strip()
    name.encode("utf-8")  # storable in any database
    assert "\x00" not in name and not any(ord(ch) < 32 for ch in name)
    assert normalize_name(name, "first_name") == name


@PROPERTY
@given(st.one_of(st.text(max_size=80), st.sampled_from(sorted(contact_fields._zones())),
                 st.from_regex(r"[A-Za-z]{2,12}(/[A-Za-z_]{2,14}){0,2}", fullmatch=True)))
@example("America")
@example("Etc")
@example("a" * 5000)
@example("../../../etc/passwd")
@example("/etc/localtime")
@example("\x00" * 80)  # each character quoted as four: the message must stay bounded all the same
@example("\U0010ffff" * 80)
def test_time_zone_is_a_real_zone_or_a_field_error(raw):
    try:
        zone = check_timezone(raw)
    except FieldError as exc:
        assert exc.field == "timezone" and len(exc.message) < 200
        return
    from zoneinfo import ZoneInfo

    ZoneInfo(zone)
    assert zone == raw.strip()


# -- CSV import ----------------------------------------------------------------------------------------

cells = st.one_of(
    st.text(max_size=25),
    st.sampled_from(["yes", "no", "Y", "x", "", "maybe", "+13125550142", "(312) 555-0199", "312-555-0100",
                     "dana@example.com", "DANA@example.com", "bad@", "America/Chicago", "America", "Mars/Base"]),
    st.emails(),
)
headers = st.lists(st.sampled_from([*KNOWN_COLUMNS, "notes", "EMAIL", " phone ", "Email Address", ""]),
                   min_size=1, max_size=10)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


_IMPORT_DIR: list[Path] = []


def fresh_runtime() -> Runtime:
    """A new, migrated SQLite database (copied from a seed: fast enough for one per example)."""
    if not _IMPORT_DIR:
        import tempfile

        _IMPORT_DIR.append(Path(tempfile.mkdtemp(prefix="drip-import-props-")))
    path = _IMPORT_DIR[0] / f"{time.monotonic_ns()}.db"
    return runtime_for(f"sqlite:///{path}")


def check_import(text: str) -> None:
    rt = fresh_runtime()
    try:
        try:
            report = import_csv(rt, io.StringIO(text), rt.campaign("ketamine-consult"), START, "test")
        except ImportFileError as exc:
            assert str(exc)
            return
        records = sum(1 for _ in csv.reader(io.StringIO(text))) - 1 if "\x00" not in text else report.rows
        assert report.rows >= 0 and report.enrolled + report.failed == report.rows
        if "\x00" not in text:
            assert report.rows <= max(records, 0) + 1
        physical_lines = text.count("\n") + text.count("\r") + 1
        for error in report.errors:
            assert 1 <= error.line <= physical_lines + 1, (error, physical_lines)
            assert str(error).startswith(f"line {error.line}:")
        with rt.sessions() as session:
            enrollments = session.scalar(select(func.count()).select_from(Enrollment))
            contacts = session.scalar(select(func.count()).select_from(Contact))
        # Nothing half-stored: every contact the import left behind is enrolled, once per row.
        assert enrollments == report.enrolled and contacts == report.enrolled
    finally:
        rt.close()


@SLOW_PROPERTY
@given(headers, st.lists(st.lists(cells, max_size=10), max_size=8))
def test_any_csv_rows_import_or_are_reported_by_line(header, rows):
    check_import(csv_text(header, rows))


@SLOW_PROPERTY
@given(st.text(max_size=400))
@example("email\n\x00\n")
@example('email,phone\n"unterminated,\n')
@example("\ufeffemail,first_name\ndana@example.com,Dana\n")
@example("email\r\ndana@example.com\r\n\r\n,\r\n")
def test_any_text_as_a_csv_file_is_refused_or_imported_cleanly(text):
    check_import(text)


def test_read_rows_gives_line_numbers_of_multi_line_records():
    header, rows = read_rows(io.StringIO('email,first_name\n"a@example.com","Da\nna"\nb@example.com,Bo\n'))
    assert header == ["email", "first_name"]
    assert [line for line, _row in rows] == [3, 4]


# -- webhook payloads --------------------------------------------------------------------------------

TOKEN = "twilio-property-token"
SECRET = "booking-property-secret"
SIGNER = SendGridSigner()
_WEB: dict[str, object] = {}


def web_client() -> tuple[TestClient, Runtime]:
    """One app for all webhook examples (they only add rows, never depend on earlier ones)."""
    if not _WEB:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="drip-webhook-props-")) / "drip.db"
        from support.builders import UNLIMITED_INTAKE, add_contact

        rt = runtime_for(f"sqlite:///{path}", twilio_auth_token=TOKEN, booking_webhook_secret=SECRET,
                         sendgrid_webhook_public_key=SIGNER.public_key, **UNLIMITED_INTAKE)
        from patient_drip.dispatch.pipeline import Dispatcher

        add_contact(rt, START)
        Dispatcher(rt, "w").run_once(START)
        client = TestClient(create_app(rt, clock=VirtualClock()), base_url="https://clinic.test",
                            raise_server_exceptions=False)
        _WEB.update(client=client, rt=rt)
    return _WEB["client"], _WEB["rt"]  # type: ignore[return-value]


form_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
status_values = st.one_of(st.sampled_from(["queued", "sent", "delivered", "undelivered", "failed", "read",
                                           "DELIVERED", "accepted", "canceled", ""]), form_text)


@PROPERTY
@given(st.fixed_dictionaries({"MessageStatus": status_values},
                             optional={"MessageSid": form_text, "ErrorCode": st.one_of(form_text, st.integers().map(str)),
                                       "To": form_text, "From": form_text}),
       st.one_of(st.none(), form_text, st.integers().map(str)))
def test_signed_twilio_status_callbacks_of_any_shape_are_answered_without_a_5xx(params, our_id):
    client, _rt = web_client()
    query = "" if our_id is None else "?" + urlencode({"m": our_id})
    url = f"https://clinic.test/webhooks/twilio/status{query}"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = client.post(f"/webhooks/twilio/status{query}", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code in (204, 400), (response.status_code, response.text[:200])


@PROPERTY
@given(st.fixed_dictionaries({"Body": form_text}, optional={"From": st.one_of(form_text, st.just("+13125550142")),
                                                           "MessageSid": form_text, "To": form_text}))
def test_signed_inbound_sms_of_any_shape_gets_twiml(params):
    client, _rt = web_client()
    url = "https://clinic.test/webhooks/twilio/sms"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = client.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200 and response.text.startswith("<?xml"), response.text[:200]


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
sendgrid_event = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(["processed", "delivered", "bounce", "dropped", "deferred", "open", "click",
                                         "spamreport", "unsubscribe", "group_unsubscribe"]), json_values)},
    optional={"drip_message_id": st.one_of(st.integers(), st.sampled_from(["1", "2", "01", "²", "-1"]), json_values),
              "sg_message_id": json_values, "type": json_values, "reason": json_values, "email": json_values})


@PROPERTY
@given(st.one_of(st.lists(sendgrid_event, max_size=5), json_values))
def test_signed_sendgrid_batches_of_any_shape_are_answered_without_a_5xx(payload):
    client, _rt = web_client()
    body = json.dumps(payload).encode()
    response = client.post("/webhooks/sendgrid/events", content=body, headers=sendgrid_headers(SIGNER, body))
    assert response.status_code in (200, 400), (response.status_code, response.text[:200])


@PROPERTY
@given(st.one_of(json_values, st.fixed_dictionaries({}, optional={
    "email": st.one_of(st.emails(), json_values), "phone": st.one_of(form_text, json_values),
    "source": json_values})))
def test_signed_booking_webhooks_of_any_shape_are_answered_without_a_5xx(payload):
    client, _rt = web_client()
    body = json.dumps(payload).encode()
    response = client.post("/webhooks/booking", content=body, headers=booking_headers(SECRET, body, START))
    assert response.status_code in (200, 400, 404), (response.status_code, response.text[:200])
    assert "error" in response.json() or response.json()["status"] in ("booked", "unmatched")


@PROPERTY
@given(st.dictionaries(st.sampled_from(["first_name", "last_name", "email", "phone", "timezone", "consent_email",
                                        "consent_sms", "preferred_channel", "website", "other"]),
                       st.one_of(json_values, st.emails(), phone_like), max_size=9))
def test_consultation_requests_of_any_shape_are_answered_without_a_5xx(data):
    client, _rt = web_client()
    response = client.post("/api/consultations", json=data)
    assert response.status_code in (202, 400, 422), (response.status_code, response.text[:200])
    if response.status_code >= 400:
        assert response.json()["errors"]


# -- replies -------------------------------------------------------------------------------------------

INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"])


@PROPERTY
@given(st.data())
@example(None)
def test_invisible_characters_do_not_hide_a_crisis_or_an_opt_out(data):
    for text, kind in (("I want to kill myself", ReplyKind.CRISIS), ("I don't want to live anymore", ReplyKind.CRISIS),
                       ("STOP", ReplyKind.OPT_OUT), ("please stop texting me", ReplyKind.OPT_OUT_TEXT)):
        if data is None:
            noisy = "\u200b".join(text)
        else:
            positions = data.draw(st.lists(st.integers(0, len(text)), max_size=6))
            noisy = text
            for position in sorted(positions, reverse=True):
                noisy = noisy[:position] + data.draw(INVISIBLE) + noisy[position:]
        assert classify_reply(noisy).kind == kind, (noisy, classify_reply(noisy))


@PROPERTY
@given(st.text(max_size=2000))
def test_classifying_any_reply_is_fast(body):
    started = time.perf_counter()
    classify_reply(body * 5)
    assert time.perf_counter() - started < 2


# -- campaign files ------------------------------------------------------------------------------------

REAL_CAMPAIGN = (ROOT / "campaigns" / "ketamine-consult.yaml").read_text(encoding="utf-8")
campaign_values = st.one_of(json_scalars, st.sampled_from(["0m", "2d", "1d 12h", "999999999999d", "email", "sms",
                                                           "email/01-welcome.html", "sms/../../../etc/passwd",
                                                           "09:00", "24:00", "25:61", "booked"]))
campaign_data = st.fixed_dictionaries({}, optional={
    "id": campaign_values, "name": campaign_values, "description": campaign_values,
    "frequency_cap_per_day": campaign_values, "email_requires_consent": campaign_values,
    "exit_on": st.lists(campaign_values, max_size=3),
    "send_window": st.dictionaries(st.sampled_from(["start", "end", "skip_weekends", "email", "spread_minutes", "x"]),
                                   campaign_values, max_size=5),
    "steps": st.lists(st.dictionaries(st.sampled_from(["id", "delay", "channel", "template", "x"]), campaign_values,
                                      max_size=5), max_size=4),
})


def check_campaign(text: str) -> None:
    try:
        campaign = parse_campaign(text, "campaigns/x.yaml", ROOT / "templates")
    except CampaignError as exc:
        assert str(exc).startswith("campaigns/x.yaml")
        return
    assert isinstance(campaign, Campaign) and campaign.steps
    for step in campaign.steps:
        assert (ROOT / "templates" / step.template).resolve().is_relative_to((ROOT / "templates").resolve())


@PROPERTY
@given(campaign_data)
def test_any_campaign_structure_parses_or_names_the_problem(data):
    check_campaign(yaml.safe_dump(data))


@PROPERTY
@given(st.data())
def test_a_damaged_campaign_file_parses_or_names_the_problem(data):
    text = REAL_CAMPAIGN
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:position] + data.draw(st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\t0123456789abc", max_size=6)) + text[position:]
        else:
            text = text[:position] + text[position + data.draw(st.integers(1, 20)):]
    check_campaign(text)


@pytest.mark.parametrize("text", [
    # "billion laughs": nine levels of aliases, 10^9 strings if anything expands them
    "id: x\ndescription: [&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],"
    " &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d],"
    " &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e], &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]]\n"
    "name: *h\nsteps:\n  - {id: s, delay: 0m, channel: *h, template: email/01-welcome.html}\n",
    "id: x\nsend_window: {1: a, b: c}\nsteps: []\n",
    "id: x\nname: &a [x]\nsteps:\n  - {id: s, delay: *a, channel: email, template: email/01-welcome.html}\n",
    "id: a\nsteps:\n  - {id: s, delay: 99999999999d, channel: email, template: email/01-welcome.html}\n",
    "id: a\nsteps:\n  - {id: s, delay: 99999999999999999999, channel: email, template: email/01-welcome.html}\n",
    "id: a\nsteps:\n  - {id: s, delay: 0m, channel: email, template: email/../../pyproject.toml}\n",
    "[" * 5000 + "]" * 5000,
    "id: !!python/object/apply:os.system ['true']\n",
    "\x00",
])
def test_hostile_campaign_files_are_refused_quickly(text):
    started = time.perf_counter()
    with pytest.raises(CampaignError):
        parse_campaign(text, "campaigns/x.yaml", ROOT / "templates")
    assert time.perf_counter() - started < 5  # bounded: no alias expansion, no runaway recursion


# -- template sources ----------------------------------------------------------------------------------

jinja_bits = st.sampled_from([
    "{{ first_name }}", "{{ x }}", "{%", "%}", "{{", "}}", "{#", "#}", "{% for i in range(3) %}", "{% endfor %}",
    "{% if first_name %}", "{% else %}", "{% endif %}", "{{ 'a' * 3 }}", "{{ first_name|upper }}",
    "{% set y = 'b' ~ first_name %}", "{{ y }}", "{{ ''.__class__ }}", "{{ range(10)|list|join(',') }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}", "{{ m(1) }}", "{% include 'sms/01-welcome.txt' %}",
    "{% extends 'email/_layout.html' %}", "{% block body %}", "{% endblock %}", "{{ 7 ** 7 }}", "{{ 1/0 }}",
    "{{ booking_link }}", "{% raw %}", "{% endraw %}", "{{ loop.index }}", "{{ self }}", "{{ 'x'|center(9) }}",
    "{% for a in range(99999) %}{% for b in range(99999) %}", "{{ '%s' % first_name }}", "{{ [1,2][5] }}",
])
template_sources = st.lists(st.one_of(jinja_bits, st.text(max_size=10)), max_size=12).map("".join)
CONTEXT = {"first_name": "Dana", "clinic_name": "Riverside", "clinic_sms_name": "Riverside", "sms_frequency": "",
           "clinic_phone": "1", "clinic_address": "Road",
           "booking_link": "https://clinic.test/b/x", "unsubscribe_link": "https://clinic.test/u/x",
           "campaign_name": "c", "step_id": "s", "channel": "sms"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template_sources, st.booleans())
@example("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", False)
@example("{{ ''.__class__.__mro__[1].__subclasses__() }}", False)
@example("{% extends 'email/_layout.html' %}{% block subject %}Hi {{ first_name }}{% endblock %}", True)
def test_any_template_source_renders_or_is_a_render_error_within_the_time_budget(source, as_email):
    name = "email/x.html" if as_email else "sms/x.txt"
    renderer = Renderer(ROOT / "templates", {name: source})
    started = time.perf_counter()
    try:
        if as_email:
            email = renderer.render_email(name, {**CONTEXT, "channel": "email"})
            assert email.subject and isinstance(email.html, str) and isinstance(email.text, str)
        else:
            assert isinstance(renderer.render_sms(name, CONTEXT), str)
    except RenderError as exc:
        assert str(exc).startswith(name) or "templates" in str(exc) or "/" in str(exc)
    # the budget (one for the whole email), plus what it takes to notice it ran out on a busy machine
    assert time.perf_counter() - started < MAX_RENDER_SECONDS + 3
