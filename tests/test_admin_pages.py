"""Staff pages: every page renders for the roles that may see it and is refused to the others; what
front-desk staff, marketing, clinicians and admins do there changes the right records."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, text

from patient_drip.web.admin.contact_queries import find_contacts
from support.builders import add_contact, messages_for
from patient_drip.dispatch.pauses import pause_key
from patient_drip.dispatch.pipeline import Dispatcher
from patient_drip.models import (
    ApiToken,
    AuditEntry,
    ConsentRecord,
    Contact,
    Enrollment,
    EnrollmentStatus,
    ExitReason,
    InboundMessage,
    TemplateStatus,
    TemplateVersion,
    User,
)
from patient_drip.content.template_store import published
from support.staff import PASSWORD, ROLES, add_user, make_client, sign_in_as

WELCOME = "email/01-welcome.html"
FIRST_SMS = "sms/01-welcome.txt"


def signed_in(client, rt, role, clock, email=None, clinician=False):  # type: ignore[no-untyped-def]
    """Sign `client` in as a new user with `role` (and the clinician's duties); returns the CSRF token."""
    user = add_user(rt, role, email, clinician=clinician)
    return sign_in_as(client, rt, user, clock.now)


def bulk_contacts(rt, count, *, start=0, last_names=("Reyes", "Smith", "Nguyen"), now=None):  # type: ignore[no-untyped-def]
    from support.builders import START

    moment = now or START
    rows = [{"first_name": f"Pat{i}", "last_name": last_names[i % len(last_names)], "email": f"pat{i}@example.com",
             "phone": f"+1312555{i:04d}", "timezone": "America/Chicago", "source": "test", "email_consent": True,
             "sms_consent": True, "preferred_channel": "", "created_at": moment, "updated_at": moment}
            for i in range(start, start + count)]
    with rt.sessions() as session, session.begin():
        session.execute(insert(Contact), rows)


# -- the role matrix ----------------------------------------------------------------------------

ANY = set(ROLES)
STAFF = {"admin", "staff"}
# The text inbox: the front desk and clinicians work it (issue 14); marketing sees no patient texts.
INBOX = {"admin", "staff", "clinician"}
MARKETING = {"admin", "marketing"}
CLINICIAN = {"admin", "clinician"}
# Approving and rejecting need the clinician's duties: an admin without them is refused (issue 12).
CLINICIAN_DUTY = {"clinician"}
TEMPLATE_READERS = {"admin", "marketing", "clinician"}
ADMIN = {"admin"}

MATRIX = [
    ("GET", "/admin", None, ANY),
    ("GET", "/admin/account", None, ANY),
    ("GET", "/admin/campaigns", None, ANY),
    ("GET", "/admin/campaigns/ketamine-consult", None, ANY),
    ("GET", "/admin/funnel", None, ANY),
    ("GET", "/admin/funnel.csv?by=day", None, ANY),
    ("GET", "/admin/campaigns/ketamine-consult/steps/welcome-email/preview", None, ANY),
    # Timing versions (issue 13): marketing and admins change timing; the front desk and clinicians may not.
    ("POST", "/admin/campaigns/ketamine-consult/timing", {"note": ""}, MARKETING),
    ("GET", "/admin/contacts", None, STAFF),
    ("GET", "/admin/contacts?q=rey", None, STAFF),
    ("GET", "/admin/contacts/export.csv", None, STAFF),
    ("GET", "/admin/contacts/new", None, STAFF),
    ("POST", "/admin/contacts/new", {}, STAFF),
    ("GET", "/admin/contacts/{contact}", None, STAFF),
    ("POST", "/admin/contacts/999999/unsubscribe", {"channel": "all"}, STAFF),
    ("POST", "/admin/contacts/999999/booked", {}, STAFF),
    ("POST", "/admin/contacts/999999/pause", {"enrollment_id": "999999", "action": "pause"}, STAFF),
    ("POST", "/admin/contacts/999999/enroll", {"campaign": "ketamine-consult"}, STAFF),
    ("POST", "/admin/contacts/999999/resubscribe", {"channel": "email", "agreed": "yes"}, STAFF),
    ("GET", "/admin/messages", None, STAFF),
    ("GET", "/admin/messages?box=outbox&channel=sms", None, STAFF),
    ("GET", "/admin/messages/999999", None, STAFF),
    ("GET", "/admin/messages/999999/html", None, STAFF),
    ("GET", "/admin/import", None, STAFF),
    ("GET", "/admin/import/nope", None, STAFF),
    ("GET", "/admin/replies", None, INBOX),
    ("GET", "/admin/replies?show=done", None, INBOX),
    ("GET", "/admin/replies/updates", None, INBOX),
    ("POST", "/admin/replies/999999/handled", {}, INBOX),
    ("GET", "/admin/replies/contacts/{contact}", None, INBOX),
    ("GET", "/admin/replies/contacts/{contact}/updates", None, INBOX),
    ("POST", "/admin/replies/contacts/{contact}/reply", {"body": "Hello", "key": "matrix"}, INBOX),
    ("POST", "/admin/replies/contacts/{contact}/note", {"text": "called back"}, INBOX),
    ("POST", "/admin/replies/contacts/{contact}/assign", {"to": "me"}, INBOX),
    ("POST", "/admin/replies/contacts/{contact}/state", {"to": "waiting"}, INBOX),
    ("GET", "/admin/review", None, STAFF),
    ("POST", "/admin/review/999999", {"action": "mark_sent"}, STAFF),
    ("GET", "/admin/templates", None, TEMPLATE_READERS),
    ("GET", f"/admin/templates/history/{WELCOME}", None, TEMPLATE_READERS),
    ("GET", f"/admin/templates/review/{WELCOME}", None, TEMPLATE_READERS),
    ("GET", f"/admin/templates/edit/{WELCOME}", None, MARKETING),
    ("POST", f"/admin/templates/edit/{WELCOME}", {"source": "x", "action": "preview"}, MARKETING),
    ("POST", f"/admin/templates/preview/{FIRST_SMS}", {"source": "Hi"}, MARKETING),
    ("POST", f"/admin/templates/rollback/{WELCOME}", {"version": "999"}, MARKETING),
    ("POST", f"/admin/templates/approve/{WELCOME}", {"version": "999"}, CLINICIAN_DUTY),
    ("POST", f"/admin/templates/reject/{WELCOME}", {"version": "999"}, CLINICIAN_DUTY),
    ("GET", "/admin/claims", None, TEMPLATE_READERS),
    ("POST", "/admin/claims", {"text": ""}, CLINICIAN_DUTY),
    ("POST", "/admin/claims/nope/retire", {"reason": "x"}, CLINICIAN_DUTY),
    ("GET", "/admin/users", None, ADMIN),
    ("POST", "/admin/users/999999/disable", {}, ADMIN),
    ("POST", "/admin/users/999999/enable", {}, ADMIN),
    ("POST", "/admin/users/999999/password", {}, ADMIN),
    ("POST", "/admin/users/999999/clinician", {"clinician": "on"}, ADMIN),
    ("POST", "/admin/users", {"email": "", "role": "staff"}, ADMIN),
    ("GET", "/admin/audit", None, ADMIN),
    ("GET", "/admin/settings", None, ADMIN),
    ("POST", "/admin/settings/channels/fax", {"action": "pause"}, ADMIN),
]


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(role, client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    csrf = signed_in(client, srt, role, clock)
    wrong = []
    for method, path, data, allowed in MATRIX:
        url = path.format(contact=contact_id)
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post(url, data={**data, "csrf_token": csrf})
        expect_allowed = role in allowed
        ok = response.status_code != 403 and not response.headers.get("location", "").startswith("/admin/login") \
            if expect_allowed else response.status_code == 403
        if not ok:
            wrong.append(f"{role} {method} {url}: {response.status_code} (allowed={expect_allowed})")
    assert wrong == []


def test_nav_shows_only_what_the_role_may_open(client, srt, clock):
    signed_in(client, srt, "marketing", clock)
    page = client.get("/admin").text
    nav = page.split('<nav class="mainnav"')[1].split("</nav>")[0]
    assert "/admin/templates" in nav and "/admin/campaigns" in nav
    assert "/admin/contacts" not in nav and "/admin/users" not in nav and "/admin/replies" not in nav


# -- dashboard ----------------------------------------------------------------------------------


def test_dashboard_counts_sends_replies_crisis_and_draws_the_funnel(client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body="can I call you?",
                                   classification="other", crisis=False, received_at=clock.now))
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body="I want to end it",
                                   classification="crisis", crisis=True, received_at=clock.now))
    signed_in(client, srt, "marketing", clock)
    page = client.get("/admin").text
    assert re.search(r'id="sent-today">2<', page) and re.search(r'id="sent-week">2<', page)
    assert re.search(r'id="replies-waiting">2<', page) and re.search(r'id="crisis-open">1<', page)
    assert '<svg class="funnel-chart"' in page and 'class="bar bar-sent"' in page
    # Steps by their place and name in words, not their ids; the attribution rule is on the page.
    assert "1. Welcome email" in page and "welcome-email" not in page and "Each booking counts once" in page
    assert "style=" not in page  # the CSP forbids inline styles


def test_dashboard_warns_when_a_channel_is_paused(client, srt, clock):
    from patient_drip import db

    with srt.sessions() as session, session.begin():
        db.set_kv(session, pause_key("sms"), "provider refused our account", clock.now)
    signed_in(client, srt, "staff", clock)
    assert "Text message sending is paused" in client.get("/admin").text


# -- contacts: search and pagination (both databases) ----------------------------------------


def test_contact_list_pages_by_id_newest_first(rt, clock):
    bulk_contacts(rt, 120)
    add_user(rt, "staff")
    with make_client(rt, clock) as client:
        with rt.sessions() as session:
            user = session.scalar(select(User))
        sign_in_as(client, rt, user, clock.now)
        first = client.get("/admin/contacts")
        ids = [int(i) for i in re.findall(r'<th scope="row"><a href="/admin/contacts/(\d+)"', first.text)]
        assert len(ids) == 50 and ids == sorted(ids, reverse=True) and ids[0] == 120
        older = re.search(r'rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
        assert "before=71" in older and "offset" not in older
        second = client.get(older)
        ids2 = [int(i) for i in re.findall(r'<th scope="row"><a href="/admin/contacts/(\d+)"', second.text)]
        assert ids2 == list(range(70, 20, -1))
        newer = re.search(r'rel="prev" href="([^"]+)"', second.text).group(1).replace("&amp;", "&")
        back = client.get(newer)
        assert [int(i) for i in re.findall(r'<th scope="row"><a href="/admin/contacts/(\d+)"', back.text)] == ids
        last = client.get("/admin/contacts?before=21")
        assert 'rel="next"' not in last.text and len(re.findall(r'<th scope="row">', last.text)) == 20


SEARCHES = [
    ("rey", {"Reyes"}), ("REY", {"Reyes"}), ("Smi", {"Smith"}), ("pat1@", {"Smith"}),
    ("pat1", {"Reyes", "Smith", "Nguyen"}), ("pat11@example.com", {"Nguyen"}), ("(312) 555-0011", {"Nguyen"}),
    ("+1312555001", {"Reyes", "Smith", "Nguyen"}), ("Pat3 Reyes", {"Reyes"}), ("Reyes, Pat3", {"Reyes"}),
    ("zzz", set()), ("%", set()), ("'; drop table contact; --", set()),
]


def test_search_matches_name_email_and_phone_prefixes(rt):
    bulk_contacts(rt, 30)
    with rt.sessions() as session:
        found = {query: {c.last_name for c in find_contacts(session, query=query).contacts} for query, _ in SEARCHES}
    assert found == dict(SEARCHES)


def test_search_with_first_and_last_name_narrows_to_the_person(rt):
    bulk_contacts(rt, 30)
    with rt.sessions() as session:
        found = find_contacts(session, query="pat3 reyes")
    assert [(c.first_name, c.last_name) for c in found.contacts] == [("Pat3", "Reyes")]


def test_status_filter_uses_enrollments(rt, clock):
    booked_id = add_contact(rt, clock.now, email="b@example.com", phone="+13125550001")
    add_contact(rt, clock.now, email="a@example.com", phone="+13125550002")
    add_contact(rt, clock.now, email="n@example.com", phone="+13125550003", campaign=None)
    from patient_drip.contacts.bookings import mark_booked

    with rt.sessions() as session, session.begin():
        mark_booked(session, rt.tokens, rt.campaigns, session.get(Contact, booked_id), clock.now, "test", "staff")
    with rt.sessions() as session:
        emails = {status: {c.email for c in find_contacts(session, status=status).contacts}
                  for status in ("active", "booked", "not_enrolled")}
    assert emails == {"active": {"a@example.com"}, "booked": {"b@example.com"}, "not_enrolled": {"n@example.com"}}


def test_name_search_uses_the_last_name_index_not_a_table_scan(srt):
    bulk_contacts(srt, 50)
    from sqlalchemy.dialects import sqlite

    from patient_drip.web.admin.contact_queries import search_condition

    statement = select(Contact.id).where(search_condition("rey")).order_by(Contact.id.desc()).limit(51)
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "LIKE" not in sql.upper()
    with srt.sessions() as session:
        plan = " ".join(str(row[-1]) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    assert "ix_contact_last_first" in plan, plan


# -- enroll one person --------------------------------------------------------------------------


ENROLL = {"first_name": "Dana", "last_name": "Reyes", "email": "dana@example.com", "phone": "(312) 555-0188",
          "campaign": "ketamine-consult", "consent_email": "yes", "consent_sms": "yes"}


def test_staff_enroll_a_person_with_consent_recorded_as_staff(client, srt, clock):
    csrf = signed_in(client, srt, "staff", clock)
    form = client.get("/admin/contacts/new").text
    assert "Msg &amp; data rates may apply" in form and 'name="consent_sms"' in form
    response = client.post("/admin/contacts/new", data={**ENROLL, "csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"].endswith("?done=enrolled")
    with srt.sessions() as session:
        contact = session.scalar(select(Contact))
        assert contact.phone == "+13125550188" and contact.email_consent and contact.sms_consent
        records = list(session.scalars(select(ConsentRecord).order_by(ConsentRecord.channel)))
        assert [(r.channel, r.method, r.actor, r.wording_version) for r in records] == [
            ("email", "staff", "staff@clinic.test", "email-v1"), ("sms", "staff", "staff@clinic.test", "sms-v2")]
        assert session.scalar(select(Enrollment.status)) == EnrollmentStatus.ACTIVE
    page = client.get(response.headers["location"]).text
    assert "Enrolled. The first message goes out" in page and "Dana Reyes" in page


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"phone": "555"}, "phone", "not a valid phone number"),
    ({"email": "not-an-email", "phone": ""}, "email", "email"),
    ({"email": "", "phone": ""}, "email", "Give an email address or a mobile number"),
    ({"consent_email": "", "consent_sms": ""}, "consent", "Tick what the person agreed to"),
    ({"phone": "", "consent_email": ""}, "phone", "mobile number"),
])
def test_enroll_form_shows_the_problem_next_to_the_field_and_keeps_the_input(client, srt, clock, change, field,
                                                                            message):
    csrf = signed_in(client, srt, "staff", clock)
    data = {**ENROLL, **change, "csrf_token": csrf}
    data = {k: v for k, v in data.items() if v != ""}
    response = client.post("/admin/contacts/new", data=data)
    assert response.status_code == 400
    assert message in response.text
    assert 'value="Dana"' in response.text
    with srt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 0


def test_enroll_form_names_every_fields_problem_at_once(client, srt, clock):
    csrf = signed_in(client, srt, "staff", clock)
    data = {**ENROLL, "email": "not-an-email", "phone": "555", "timezone": "Mars/Olympus", "csrf_token": csrf}
    data.pop("consent_email", None)
    data.pop("consent_sms", None)
    response = client.post("/admin/contacts/new", data=data)
    assert response.status_code == 400
    marked = re.findall(r'<p class="error" id="e-([a-z_]+)"', response.text)
    assert set(marked) >= {"email", "phone", "timezone", "consent"}, marked


def test_enrolling_someone_already_enrolled_links_to_their_page(client, srt, clock):
    contact_id = add_contact(srt, clock.now, email="dana@example.com", phone="+13125550188")
    csrf = signed_in(client, srt, "staff", clock)
    response = client.post("/admin/contacts/new", data={**ENROLL, "csrf_token": csrf})
    assert response.status_code == 409 and "already enrolled" in response.text
    assert f'href="/admin/contacts/{contact_id}"' in response.text


# -- one contact --------------------------------------------------------------------------------


def test_contact_page_shows_the_timeline_newest_first_and_each_message_as_sent(client, srt, clock):
    contact_id = add_contact(srt, clock.now, first_name="Alex")
    Dispatcher(srt, "w").run_once(clock.now)
    with srt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=contact_id, from_number="+13125550142", body="is it covered?",
                                   classification="other", received_at=clock.now + timedelta(minutes=5)))
    signed_in(client, srt, "staff", clock)
    page = client.get(f"/admin/contacts/{contact_id}").text
    timeline = page.split('class="timeline"')[1]
    titles = re.findall(r'<span class="tl-title">(.*?)</span>', timeline, re.S)
    assert titles[0].strip() == "Text reply: is it covered?"
    assert any("Email: Your consultation request" in t for t in titles)
    assert any("Email consent given" in t for t in titles) and any("Enrolled" in t for t in titles)
    email = next(m for m in messages_for(srt, contact_id) if m.channel == "email")
    detail = client.get(f"/admin/messages/{email.id}")
    assert detail.status_code == 200 and "Your consultation request" in detail.text
    assert f'src="/admin/messages/{email.id}/html" sandbox' in detail.text
    html = client.get(f"/admin/messages/{email.id}/html")
    assert html.text == email.body_html
    csp = html.headers["content-security-policy"]
    assert csp.startswith("sandbox;") and "script-src" not in csp and "frame-ancestors 'self'" in csp
    assert html.headers["x-frame-options"] == "SAMEORIGIN"


def test_unsubscribe_sms_only_keeps_emails_and_all_stops_the_sequence(client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    csrf = signed_in(client, srt, "staff", clock)
    response = client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "sms", "csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"].endswith("done=unsubscribed")
    with srt.sessions() as session:
        contact = session.get(Contact, contact_id)
        assert not contact.sms_consent and contact.email_consent
        assert session.scalar(select(Enrollment.status)) == EnrollmentStatus.ACTIVE
    again = client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "sms", "csrf_token": csrf})
    assert again.headers["location"].endswith("done=already_unsubscribed")
    client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "all", "csrf_token": csrf})
    with srt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.status == EnrollmentStatus.EXITED and enrollment.exit_reason == ExitReason.UNSUBSCRIBED
        record = session.scalar(select(ConsentRecord).where(ConsentRecord.action == "withdrawn")
                                .order_by(ConsentRecord.id.desc()))
        assert record.method == "staff" and record.actor == "staff@clinic.test"
    bad = client.post(f"/admin/contacts/{contact_id}/unsubscribe", data={"channel": "fax", "csrf_token": csrf})
    assert bad.status_code == 400


def test_mark_booked_ends_the_sequence(client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    csrf = signed_in(client, srt, "staff", clock)
    assert client.post(f"/admin/contacts/{contact_id}/booked", data={"csrf_token": csrf}).status_code == 303
    with srt.sessions() as session:
        enrollment = session.scalar(select(Enrollment))
        assert enrollment.exit_reason == ExitReason.BOOKED and enrollment.next_due_at is None
        assert session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "booked")) == "staff@clinic.test"


def test_pause_and_resume_an_enrollment(client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    with srt.sessions() as session:
        enrollment_id = session.scalar(select(Enrollment.id))
    csrf = signed_in(client, srt, "staff", clock)
    client.post(f"/admin/contacts/{contact_id}/pause", data={"enrollment_id": enrollment_id, "action": "pause",
                                                             "csrf_token": csrf})
    with srt.sessions() as session:
        assert session.get(Enrollment, enrollment_id).status == EnrollmentStatus.PAUSED
    assert "Resume" in client.get(f"/admin/contacts/{contact_id}").text
    client.post(f"/admin/contacts/{contact_id}/pause", data={"enrollment_id": enrollment_id, "action": "resume",
                                                             "csrf_token": csrf})
    with srt.sessions() as session:
        enrollment = session.get(Enrollment, enrollment_id)
        assert enrollment.status == EnrollmentStatus.ACTIVE and enrollment.next_due_at is not None
    other = add_contact(srt, clock.now, email="o@example.com", phone="+13125550111")
    response = client.post(f"/admin/contacts/{other}/pause", data={"enrollment_id": enrollment_id, "action": "pause",
                                                                    "csrf_token": csrf})
    assert response.status_code == 404  # an enrollment of another contact


def test_enroll_an_existing_contact_from_their_page(client, srt, clock):
    contact_id = add_contact(srt, clock.now, consent=(), campaign=None)
    csrf = signed_in(client, srt, "staff", clock)
    refused = client.post(f"/admin/contacts/{contact_id}/enroll", data={"campaign": "ketamine-consult",
                                                                         "csrf_token": csrf})
    assert refused.status_code == 409 and "record consent first" in refused.text
    response = client.post(f"/admin/contacts/{contact_id}/enroll", data={
        "campaign": "ketamine-consult", "consent_email": "yes", "csrf_token": csrf})
    assert response.status_code == 303
    with srt.sessions() as session:
        assert session.scalar(select(Enrollment.campaign_id)) == "ketamine-consult"


def test_contacts_export_is_csv_and_audited(client, srt, clock):
    bulk_contacts(srt, 3)
    signed_in(client, srt, "staff", clock)
    response = client.get("/admin/contacts/export.csv")
    lines = response.text.strip().splitlines()
    assert response.headers["content-type"].startswith("text/csv") and len(lines) == 4
    assert lines[0].startswith("id,first_name,last_name,email,phone")
    with srt.sessions() as session:
        assert session.scalar(select(AuditEntry.action).where(AuditEntry.action == "contacts_exported"))


# -- CSV import ---------------------------------------------------------------------------------

CSV = ("first_name,last_name,email,phone,consent_email,consent_sms\n"
       "Dana,Reyes,dana@example.com,(312) 555-0188,yes,yes\n"
       "Bad,Row,not-an-email,,yes,no\n"
       "Sam,Lee,sam@example.com,,yes,no\n")


def test_csv_import_previews_then_runs_in_the_background_and_reports_the_bad_row(client, srt, clock):
    csrf = signed_in(client, srt, "staff", clock)
    preview = client.post("/admin/import", data={"campaign": "ketamine-consult", "csrf_token": csrf},
                          files={"file": ("people.csv", CSV.encode(), "text/csv")})
    assert preview.status_code == 200 and "3 rows" in preview.text and "dana@example.com" in preview.text
    check_url = re.search(r'action="(/admin/import/[^/"]+/check)"', preview.text).group(1)
    start_url = check_url.replace("/check", "/start")
    assert client.post(start_url, data={"csrf_token": csrf}).headers["location"].endswith("/columns")  # check first
    columns = {f"column_{i}": name for i, name in enumerate(CSV.splitlines()[0].split(","))}
    checked = client.post(check_url, data={"csrf_token": csrf, **columns})
    assert checked.status_code == 200
    assert '<span class="card-value" id="check-ready">2</span>' in checked.text
    assert '<span class="card-value" id="check-problems">1</span>' in checked.text
    assert re.search(r'<th scope="row">3</th><td>email</td>', checked.text)
    problems = client.get(check_url.replace("/check", "/problems.csv")).text.splitlines()
    assert problems[0] == "line,field,problem" and problems[1].startswith("3,email,")
    with srt.sessions() as session:
        assert session.scalar(select(func.count(Contact.id))) == 0  # nothing imported yet
    started = client.post(start_url, data={"csrf_token": csrf})
    assert started.status_code == 303
    job_url = started.headers["location"]
    for _ in range(200):
        status = client.get(job_url + "/status").json()
        if status["state"] in ("done", "failed"):
            break
        time.sleep(0.02)
    assert status == {"state": "done", "processed": 3, "total": 3, "percent": 100, "enrolled": 2, "failed": 1,
                      "error": ""}
    report = client.get(job_url).text
    assert re.search(r'<th scope="row">3</th><td>email</td>', report)
    errors = client.get(job_url + "/errors.csv").text.splitlines()
    assert errors[0] == "line,field,problem" and errors[1].startswith("3,email,")
    client.post(start_url, data={"csrf_token": csrf})  # a second click imports nothing more
    with srt.sessions() as session:
        assert session.scalar(select(func.count(Enrollment.id))) == 2


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"), (b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_unusable_csv_files_are_explained(client, srt, clock, content, message):
    csrf = signed_in(client, srt, "staff", clock)
    response = client.post("/admin/import", data={"campaign": "ketamine-consult", "csrf_token": csrf},
                           files={"file": ("x.csv", content, "text/csv")})
    assert response.status_code == 400 and message in response.text


def test_import_recognises_common_column_names_and_names_every_mapping_problem_at_once(client, srt, clock):
    csrf = signed_in(client, srt, "staff", clock)
    content = ("Given name,Surname,Email Address,Mobile,Notes,E-mail,Email opt-in\n"
               "Dana,Reyes,dana@example.com,(312) 555-0188,met at the fair,dana@work.example,yes\n").encode()
    preview = client.post("/admin/import", data={"campaign": "ketamine-consult", "csrf_token": csrf},
                          files={"file": ("crm.csv", content, "text/csv")})
    assert preview.status_code == 200
    chosen = re.findall(r'<select name="column_(\d)".*?<option value="([a-z_]*)" selected>', preview.text, re.S)
    assert chosen == [("0", "first_name"), ("1", "last_name"), ("2", "email"), ("3", "phone"), ("4", ""), ("5", ""),
                      ("6", "consent_email")]
    check_url = re.search(r'action="(/admin/import/[^/"]+/check)"', preview.text).group(1)
    wrong = client.post(check_url, data={"csrf_token": csrf, "column_0": "email", "column_1": "", "column_2": "email",
                                         "column_3": "", "column_4": "", "column_5": "email", "column_6": ""})
    assert wrong.status_code == 400
    assert "Email is chosen for 3 columns (&#39;Given name&#39;, &#39;Email Address&#39;, &#39;E-mail&#39;)" in wrong.text
    none = client.post(check_url, data={"csrf_token": csrf, **{f"column_{i}": "" for i in range(7)}})
    assert none.status_code == 400 and "every row needs one" in none.text
    good = client.post(check_url, data={"csrf_token": csrf, "column_0": "first_name", "column_1": "last_name",
                                        "column_2": "", "column_3": "phone", "column_4": "", "column_5": "email",
                                        "column_6": "consent_email"})
    assert '<span class="card-value" id="check-ready">1</span>' in good.text
    assert "Not imported: Email Address, Notes." in good.text
    started = client.post(check_url.replace("/check", "/start"), data={"csrf_token": csrf})
    job_url = started.headers["location"]
    for _ in range(200):
        status = client.get(job_url + "/status").json()
        if status["state"] in ("done", "failed"):
            break
        time.sleep(0.02)
    assert status["state"] == "done" and status["enrolled"] == 1, status
    with srt.sessions() as session:
        dana = session.scalar(select(Contact))
        assert (dana.first_name, dana.last_name, dana.email, dana.phone) == ("Dana", "Reyes", "dana@work.example",
                                                                            "+13125550188")


def test_import_jobs_are_private_to_whoever_uploaded(client, srt, clock):
    csrf = signed_in(client, srt, "staff", clock)
    preview = client.post("/admin/import", data={"campaign": "ketamine-consult", "csrf_token": csrf},
                          files={"file": ("people.csv", CSV.encode(), "text/csv")})
    job = re.search(r'/admin/import/([^/"]+)/check', preview.text).group(1)
    signed_in(client, srt, "staff", clock, email="colleague@clinic.test")
    assert client.get(f"/admin/import/{job}").status_code == 404


# -- replies ------------------------------------------------------------------------------------


def test_replies_inbox_lists_crisis_first_and_records_who_handled_it(client, srt, clock):
    contact_id = add_contact(srt, clock.now)
    calm = add_contact(srt, clock.now, email="calm@example.com", phone="+13125550177", first_name="Calm")
    with srt.sessions() as session, session.begin():
        session.add(InboundMessage(contact_id=calm, from_number="+1", body="what does it cost?",
                                   classification="other", crisis=False, received_at=clock.now))
        session.add(InboundMessage(contact_id=contact_id, from_number="+1", body="I can't go on",
                                   classification="crisis", crisis=True, received_at=clock.now + timedelta(hours=1)))
    csrf = signed_in(client, srt, "staff", clock)
    page = client.get("/admin/replies").text
    assert page.index("I can&#39;t go on") < page.index("what does it cost?")  # the crisis first, though later
    assert "possible crisis" in page and "988" in page
    with srt.sessions() as session:
        crisis_id = session.scalar(select(InboundMessage.id).where(InboundMessage.crisis.is_(True)))
    response = client.post(f"/admin/replies/{crisis_id}/handled", data={"csrf_token": csrf, "note": "called back"})
    assert response.status_code == 303
    with srt.sessions() as session:
        reply = session.get(InboundMessage, crisis_id)
        assert reply.handled_by == "staff@clinic.test" and reply.handled_at == clock.now
    assert "I can&#39;t go on" not in client.get("/admin/replies").text
    thread = client.get(f"/admin/replies/contacts/{contact_id}").text
    assert "I can&#39;t go on" in thread and "called back" in thread  # the note stays, on the thread


# -- templates ----------------------------------------------------------------------------------


def _edit(client, csrf, source, action="save", name=WELCOME, note="clearer intro"):  # type: ignore[no-untyped-def]
    return client.post(f"/admin/templates/edit/{name}", data={"source": source, "note": note, "action": action,
                                                              "csrf_token": csrf, "first_name": "Alex"})


def _source(rt, name=WELCOME):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return published(session, name).source


def test_editor_shows_the_source_and_a_preview_at_two_widths(client, srt, clock):
    signed_in(client, srt, "marketing", clock)
    page = client.get(f"/admin/templates/edit/{WELCOME}").text
    assert "{% block subject %}Your consultation request{% endblock %}" in page.replace("&#34;", '"')
    assert "No problems found." in page and 'class="email-frame desktop"' in page and 'class="email-frame phone"' in page
    preview_url = re.search(r'src="(/admin/previews/[^"]+)"', page).group(1)
    framed = client.get(preview_url)
    assert framed.status_code == 200 and "Christopher" in framed.text
    assert framed.headers["content-security-policy"].startswith("sandbox;")


def test_live_preview_renders_the_submitted_source_and_reports_problems(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    good = client.post(f"/admin/templates/preview/{FIRST_SMS}", headers={"X-CSRF-Token": csrf},
                       json={"source": "Hi {{ first_name }}! Book: {{ booking_link }} {{ clinic_sms_name }}: "
                                       "{{ sms_frequency }}. Msg & data rates may apply. Reply STOP to opt out, HELP "
                                       "for help.", "first_name": "Jo"}).json()
    assert good["ok"] and good["text"].startswith("Hi Jo! Book: https://clinic.test/b/")
    assert good["sms"]["encoding"] == "GSM-7" and good["sms"]["segments"] == 2
    bad = client.post(f"/admin/templates/preview/{FIRST_SMS}", headers={"X-CSRF-Token": csrf},
                      json={"source": "Hi {{ frist_name }} “ketamine” {{ booking_link }}"}).json()
    messages = " ".join(p["message"] for p in bad["problems"])
    assert not bad["ok"] and "'frist_name' is undefined" in messages
    assert "discreet-sms" in {p["rule"] for p in bad["problems"]} and "<li>" in bad["fragment"]
    no_stop = client.post(f"/admin/templates/preview/{FIRST_SMS}", headers={"X-CSRF-Token": csrf},
                          json={"source": "Hi {{ first_name }} {{ booking_link }}"}).json()
    assert any("STOP" in p["message"] for p in no_stop["problems"])
    syntax = client.post(f"/admin/templates/preview/{WELCOME}", headers={"X-CSRF-Token": csrf},
                         json={"source": "{% extends 'email/_layout.html' %}{% block subject %}Hi{% endblock"}).json()
    assert syntax["problems"][0]["line"] == 1 and syntax["problems"][0]["rule"] == "render"


def test_a_change_goes_live_only_after_a_clinician_other_than_the_author_approves(client, srt, clock):
    original = _source(srt)
    changed = original.replace("Thank you for reaching out</h1>", "Thanks for getting in touch</h1>")
    csrf = signed_in(client, srt, "marketing", clock)
    saved = _edit(client, csrf, changed)
    assert saved.status_code == 303 and saved.headers["location"] == f"/admin/templates/review/{WELCOME}?v=2&done=draft_saved"
    assert _source(srt) == original  # still the live version
    assert client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": csrf}).status_code == 403
    # an admin may not approve: approving medical wording is a clinician's duty (issue 12) ...
    admin_csrf = signed_in(client, srt, "admin", clock)
    refused = client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": admin_csrf})
    assert refused.status_code == 403 and "Only a clinician" in refused.text
    # ... unless they also hold the clinician's duties, and never a change they wrote themselves
    doctor_admin_csrf = signed_in(client, srt, "admin", clock, email="dr.admin@clinic.test", clinician=True)
    _edit(client, doctor_admin_csrf, changed.replace("Thanks", "Many thanks"))
    own = client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 3, "csrf_token": doctor_admin_csrf})
    assert own.status_code == 409 and "other than its author" in own.text
    clinician_csrf = signed_in(client, srt, "clinician", clock)
    review = client.get(f"/admin/templates/review/{WELCOME}?v=2").text
    assert 'class="d-add">+&lt;h1&gt;Thanks for getting in touch&lt;/h1&gt;' in review
    approved = client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": clinician_csrf})
    assert approved.status_code == 303
    assert _source(srt) == changed
    with srt.sessions() as session:
        rows = {v.version: v for v in session.scalars(select(TemplateVersion).where(TemplateVersion.name == WELCOME))}
        assert rows[1].status == TemplateStatus.SUPERSEDED and rows[2].status == TemplateStatus.PUBLISHED
        assert rows[2].author == "marketing@clinic.test" and rows[2].approved_by == "clinician@clinic.test"
    # the running app renders with it at once
    contact_id = add_contact(srt, clock.now)
    Dispatcher(srt, "w").run_once(clock.now)
    email = next(m for m in messages_for(srt, contact_id) if m.step_id == "welcome-email")
    assert "Thanks for getting in touch" in email.body_html


def test_a_draft_with_problems_is_not_saved(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    broken = _source(srt).replace("{{ booking_link }}", "{{ booking_url }}")
    response = _edit(client, csrf, broken)
    assert response.status_code == 422 and "Not saved" in response.text and "booking_url" in response.text
    assert "{{ booking_url }}" in response.text.replace("&#39;", "'")  # the text is kept
    with srt.sessions() as session:
        assert session.scalar(select(func.count(TemplateVersion.id)).where(TemplateVersion.name == WELCOME)) == 1


def test_content_rules_are_shown_inline(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    source = _source(srt).replace("Your consultation request", "Your ketamine consultation")
    page = _edit(client, csrf, source, action="preview").text
    assert "discreet-subject" in page and "ketamine" in page


def test_preview_button_works_without_javascript_and_saves_nothing(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    source = _source(srt, FIRST_SMS).replace("Thank you for your consultation request.", "Thanks!")
    page = _edit(client, csrf, source, action="preview", name=FIRST_SMS)
    assert page.status_code == 200 and "Thanks!" in page.text and 'id="sms-info"' in page.text
    with srt.sessions() as session:
        assert session.scalar(select(func.count(TemplateVersion.id)).where(TemplateVersion.name == FIRST_SMS)) == 1


def test_diff_between_versions_is_escaped_and_rollback_needs_approval(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    original = _source(srt)
    _edit(client, csrf, original.replace("<h1>Thank you", "<h1><script>alert(1)</script>Thank you"))
    history = client.get(f"/admin/templates/history/{WELCOME}?a=1&b=2").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history and "<script>alert" not in history
    with srt.sessions() as session, session.begin():
        from patient_drip.content.template_store import approve

        approve(session, session.scalar(select(TemplateVersion).where(TemplateVersion.name == WELCOME, TemplateVersion.version == 2)), clock.now,
                "clinician@clinic.test", clinician=True)
    response = client.post(f"/admin/templates/rollback/{WELCOME}", data={"version": 1, "csrf_token": csrf})
    assert response.status_code == 303 and "v=3" in response.headers["location"]
    with srt.sessions() as session:
        draft = session.scalar(select(TemplateVersion).where(TemplateVersion.name == WELCOME, TemplateVersion.version == 3))
        assert draft.status == TemplateStatus.DRAFT and draft.source == original
        assert published(session, WELCOME).version == 2


def test_clinician_can_reject_a_draft(client, srt, clock):
    csrf = signed_in(client, srt, "marketing", clock)
    _edit(client, csrf, _source(srt).replace("Warmly", "Best"))
    clinician_csrf = signed_in(client, srt, "clinician", clock)
    templates_page = client.get("/admin/templates").text
    # 1 + the two shipped emails whose safety paragraph awaits a clinician (issue 12), in English and Spanish
    assert "Waiting for approval (5)" in templates_page
    client.post(f"/admin/templates/reject/{WELCOME}", data={"version": 2, "reason": "keep Warmly, it is our tone",
                                                            "csrf_token": clinician_csrf})
    with srt.sessions() as session:
        draft = session.scalar(select(TemplateVersion).where(TemplateVersion.name == WELCOME, TemplateVersion.version == 2))
        assert draft.status == TemplateStatus.REJECTED and draft.review_note == "keep Warmly, it is our tone"
        assert draft.note == "clearer intro"  # the author's note is kept


def test_editing_the_shared_layout_previews_an_email_that_uses_it(client, srt, clock):
    signed_in(client, srt, "marketing", clock)
    page = client.get("/admin/templates/edit/email/_layout.html").text
    assert "Shown inside email/01-welcome.html" in page and "No problems found." in page


# -- campaigns ----------------------------------------------------------------------------------


def test_campaign_page_shows_the_steps_and_what_a_patient_receives_when(client, srt, clock):
    signed_in(client, srt, "clinician", clock)
    page = client.get("/admin/campaigns/ketamine-consult").text
    for step, day in (("welcome-email", "day 0"), ("stress-brain-email", "day 2"), ("consult-email", "day 13")):
        assert step in page and day in page
    assert "Your consultation request" in page and "Reply STOP to opt out" in page and "segments" in page
    frame = client.get("/admin/campaigns/ketamine-consult/steps/welcome-email/preview")
    assert frame.status_code == 200 and "Alex" in frame.text
    assert frame.headers["content-security-policy"].startswith("sandbox;")
    assert client.get("/admin/campaigns/nope").status_code == 404


# -- admin: users, audit, settings ------------------------------------------------------------


def test_admin_creates_a_user_with_a_generated_password_shown_once(client, srt, clock):
    csrf = signed_in(client, srt, "admin", clock)
    page = client.post("/admin/users", data={"email": "Kim@Example.com", "role": "clinician", "name": "Dr Kim",
                                             "csrf_token": csrf})
    password = re.search(r'id="new-password">([^<]+)<', page.text).group(1)
    assert len(password) >= 12
    from patient_drip.accounts.users import verify_password

    with srt.sessions() as session:
        user = session.scalar(select(User).where(User.email == "kim@example.com"))
        assert user.role == "clinician" and verify_password(user.password_hash, password)
    assert password not in client.get("/admin/users").text
    duplicate = client.post("/admin/users", data={"email": "kim@example.com", "role": "staff", "csrf_token": csrf})
    assert duplicate.status_code == 400 and "already exists" in duplicate.text
    bad_role = client.post("/admin/users", data={"email": "x@example.com", "role": "owner", "csrf_token": csrf})
    assert bad_role.status_code == 400


def test_admin_disables_a_user_but_not_themselves(client, srt, clock):
    target = add_user(srt, "staff")
    csrf = signed_in(client, srt, "admin", clock)
    with srt.sessions() as session:
        admin_id = session.scalar(select(User.id).where(User.role == "admin"))
    assert client.post(f"/admin/users/{admin_id}/disable", data={"csrf_token": csrf}).status_code == 400
    assert client.post(f"/admin/users/{target.id}/disable", data={"csrf_token": csrf}).status_code == 303
    with srt.sessions() as session:
        assert session.get(User, target.id).disabled
        assert session.scalar(select(AuditEntry.detail).where(AuditEntry.action == "user_disabled")) == {
            "user": "staff@clinic.test"}


def test_audit_log_pages_newest_first(client, srt, clock):
    with srt.sessions() as session, session.begin():
        session.execute(insert(AuditEntry), [{"actor": "test", "action": f"action_{i}", "contact_id": None,
                                              "detail": {}, "created_at": clock.now} for i in range(150)])
    signed_in(client, srt, "admin", clock)
    first = client.get("/admin/audit").text
    assert "action 149" in first and "action 49" not in first
    older = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "action 49" in client.get(older).text


def test_admin_pauses_and_resumes_a_channel(client, srt, clock):
    csrf = signed_in(client, srt, "admin", clock)
    settings_page = client.get("/admin/settings").text
    assert "DRIP_DATABASE_URL" in settings_page and "test-secret-key-for-links" not in settings_page
    client.post("/admin/settings/channels/sms", data={"action": "pause", "csrf_token": csrf})
    from patient_drip import db

    with srt.sessions() as session:
        assert "paused by admin@clinic.test" in db.get_kv(session, pause_key("sms"))
    client.post("/admin/settings/channels/sms", data={"action": "resume", "csrf_token": csrf})
    with srt.sessions() as session:
        assert db.get_kv(session, pause_key("sms")) is None


# -- account ------------------------------------------------------------------------------------


def test_api_token_is_shown_once_and_stored_only_as_its_hash(client, srt, clock):
    import hashlib

    csrf = signed_in(client, srt, "staff", clock)
    page = client.post("/admin/account/tokens", data={"name": "booking system", "scopes": ["contacts:read"],
                                                       "csrf_token": csrf}).text
    token = re.search(r'id="new-token">([^<]+)<', page).group(1)
    with srt.sessions() as session:
        row = session.scalar(select(ApiToken))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and row.name == "booking system"
    assert token not in client.get("/admin/account").text
    client.post(f"/admin/account/tokens/{row.id}/revoke", data={"csrf_token": csrf})
    with srt.sessions() as session:
        assert session.get(ApiToken, row.id).revoked_at is not None


def test_changing_password_keeps_this_session_and_ends_others(client, srt, clock):
    user = add_user(srt, "staff")
    with make_client(srt, clock) as other_device:
        sign_in_as(other_device, srt, user, clock.now)
        csrf = sign_in_as(client, srt, user, clock.now)
        wrong = client.post("/admin/account/password", data={"current": "nope", "new": "x" * 12, "confirm": "x" * 12,
                                                              "csrf_token": csrf})
        assert wrong.status_code == 400 and "not your current password" in wrong.text
        response = client.post("/admin/account/password", data={
            "current": PASSWORD, "new": "a much better passphrase", "confirm": "a much better passphrase",
            "csrf_token": csrf})
        assert response.status_code == 303
        assert client.get("/admin").status_code == 200
        assert other_device.get("/admin").status_code == 303
