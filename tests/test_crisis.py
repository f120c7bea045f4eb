"""Crisis handling that errs safe: the classifier over a table of real-world-style messages, and a
crisis text through the real (signed) Twilio webhook: opt-out carried out together with the crisis,
every sequence paused until staff resolve it in the inbox, resumed only when they choose so."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from patient_drip.contacts.enrollment import CRISIS_PAUSE_REASON, enroll, set_paused
from patient_drip.contacts.importer import import_csv, import_csv_rowwise
from patient_drip.contacts.replies import Classification, ReplyKind, classify_reply, normalise
from patient_drip.models import (
    AuditEntry,
    ConsentRecord,
    Contact,
    Enrollment,
    EnrollmentStatus,
    Event,
    EventKind,
    InboundMessage,
    Message,
)
from patient_drip.runtime import Runtime
from support.builders import VirtualClock, add_contact, contact, messages_for, run_until_done
from support.staff import add_user, make_client, runtime_for, sign_in_as

TABLE = Path(__file__).parent / "data" / "crisis_messages.tsv"
TOKEN = "twilio-test-token"
WEBHOOK = "https://clinic.test/webhooks/twilio/sms"


# -- the classifier over the table ---------------------------------------------------------------


def _table() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in TABLE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    assert rows[0] == ["text", "label"], "the table starts with its column names"
    assert all(len(row) == 2 and row[1] in ("crisis", "other") for row in rows[1:]), "text<TAB>crisis|other"
    return [(text, label) for text, label in rows[1:]]


def test_crisis_classifier_recall_is_total_and_precision_high_on_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    table = _table()
    assert len(table) >= 200
    flagged = {text: classify_reply(text).kind is ReplyKind.CRISIS for text, _ in table}
    positives = [text for text, label in table if label == "crisis"]
    true_positives = sum(flagged[text] for text in positives)
    false_positives = [text for text, label in table if label == "other" and flagged[text]]
    precision = true_positives / (true_positives + len(false_positives))
    recall = true_positives / len(positives)
    with capsys.disabled():
        print(f"\ncrisis classifier: precision {precision:.3f} recall {recall:.3f} on {len(table)} messages")
    missed = [text for text in positives if not flagged[text]]
    assert recall == 1.0, f"missed crisis messages: {missed}"  # a miss is the costly error
    assert precision >= 0.95, f"false alarms: {false_positives}"


def test_the_table_covers_both_languages_and_the_tricks() -> None:
    texts = [text for text, label in _table() if label == "crisis"]
    for sample in ("k1ll myself", "k i l l myself", "k.i.l.l m.y.s.e.l.f", "$uicide", "Me quiero matar",
                   "I have pills saved up and tonight is the night", "Stop texting me, I want to die"):
        assert sample in texts


@pytest.mark.parametrize("body", ["k1ll myself", "ki11 myself", "k!ll myself", "k i l l myself", "k.i.l.l myself",
                                  "k-i-l-l myself", "$uicidal", "5u1c1d3", "wanna diee", "q u i e r o m o r i r",
                                  "I w4nt to d1e"])
def test_tricks_are_read_through(body: str) -> None:
    assert classify_reply(body).kind is ReplyKind.CRISIS


@pytest.mark.parametrize("body", ["s t o p", "I took 2 pills of ibuprofen, is that ok?", "see you at 10am",
                                  "my email is sam5@example.com"])
def test_decoding_adds_no_crisis_where_there_is_none(body: str) -> None:
    assert classify_reply(body).kind is not ReplyKind.CRISIS


def test_the_as_written_reading_is_unchanged() -> None:
    assert normalise("k1ll") == "k1ll" and normalise("s t o p") == "s t o p"  # decoding is extra, for crises


@pytest.mark.parametrize(("body", "opt_out"), [
    ("Stop texting me, I want to die", "stop text*"),
    ("leave me alone, I just want to die", "leave me alone"),
    ("No me escribas más. Quiero morir", "no me escribas"),
    ("I want to die", None),
    ("I just want to stop living", None),  # about the person, not about our texts
])
def test_a_crisis_carries_the_opt_out_it_also_contains(body: str, opt_out: str | None) -> None:
    result = classify_reply(body)
    assert result.kind is ReplyKind.CRISIS and result.opt_out == opt_out


def test_carrier_keywords_are_unchanged() -> None:
    assert classify_reply("STOP") == Classification(ReplyKind.OPT_OUT, "stop")
    assert classify_reply("stop texting me").kind is ReplyKind.OPT_OUT_TEXT


# -- through the webhook and the inbox ------------------------------------------------------------


@pytest.fixture
def crt(database_url: str) -> Iterator[Runtime]:
    runtime = runtime_for(database_url, twilio_auth_token=TOKEN)
    yield runtime
    runtime.close()


@pytest.fixture
def web(crt: Runtime, clock: VirtualClock) -> Iterator[TestClient]:
    with make_client(crt, clock) as client:
        yield client


def sms_in(web: TestClient, body: str, sid: str) -> str:
    params = {"From": "+13125550142", "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "ACx"}
    signature = RequestValidator(TOKEN).compute_signature(WEBHOOK, params)
    response = web.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    return response.text


def enrollment_of(rt: Runtime, contact_id: int) -> Enrollment:
    with rt.sessions() as session:
        found = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
        assert found is not None
        return found


def events(rt: Runtime, contact_id: int, kind: EventKind) -> list[dict[str, object]]:
    with rt.sessions() as session:
        return [dict(e.detail or {}) for e in session.scalars(
            select(Event).where(Event.contact_id == contact_id, Event.kind == kind).order_by(Event.id))]


def reply_id(rt: Runtime, sid: str) -> int:
    with rt.sessions() as session:
        found = session.scalar(select(InboundMessage.id).where(InboundMessage.provider_message_id == sid))
        assert found is not None
        return found


def reply_contact(rt: Runtime, sid: str) -> int:
    with rt.sessions() as session:
        found = session.scalar(select(InboundMessage.contact_id).where(InboundMessage.provider_message_id == sid))
        assert found is not None
        return found


def resolve(web: TestClient, rt: Runtime, clock: VirtualClock, inbound_id: int, sequence: str) -> str:
    csrf = sign_in_as(web, rt, add_user(rt, "staff", f"staff-{inbound_id}@clinic.test"), clock.now)
    response = web.post(f"/admin/replies/{inbound_id}/handled",
                        data={"csrf_token": csrf, "note": "called back", "sequence": sequence})
    assert response.status_code == 303
    return str(response.headers["location"])


def test_stop_texting_me_i_want_to_die_gets_988_a_flag_and_stops_sms(crt, web, clock):
    contact_id = add_contact(crt, clock.now)
    reply = sms_in(web, "Stop texting me, I want to die", "SMc1")
    assert "988" in reply and "+1 217 555 0100" in reply and "stopped our automated texts" in reply
    with crt.sessions() as session:
        inbound = session.scalar(select(InboundMessage))
        assert inbound.crisis is True and inbound.classification == "crisis" and inbound.handled_at is None
        withdrawn = session.scalar(select(ConsentRecord).where(ConsentRecord.contact_id == contact_id,
                                                               ConsentRecord.action == "withdrawn"))
        assert withdrawn is not None and withdrawn.channel == "sms" and withdrawn.method == "sms_text"
        assert withdrawn.actor == "patient:sms"
    assert contact(crt, contact_id).sms_consent is False
    assert contact(crt, contact_id).email_consent is True  # only texting was asked to stop
    assert events(crt, contact_id, EventKind.CRISIS_FLAGGED)[0]["opt_out"] == "stop text*"
    # The email steps could still reach them: the sequence is paused, not ended, until staff look.
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED


def test_a_crisis_pauses_every_sequence_until_staff_resolve_it_and_keep_paused_is_the_default(crt, web, clock):
    contact_id = add_contact(crt, clock.now)
    reply = sms_in(web, "i want to k1ll mys3lf", "SMc2")
    assert "988" in reply and "stopped" not in reply
    assert contact(crt, contact_id).sms_consent is True  # no opt-out words: texting consent stays
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED
    paused = events(crt, contact_id, EventKind.PAUSED)
    assert paused == [{"reason": CRISIS_PAUSE_REASON, "inbound_id": reply_id(crt, "SMc2")}]
    with crt.sessions() as session:
        actors = set(session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "paused")))
    assert actors == {"system:crisis"}
    run_until_done(crt, clock)
    assert messages_for(crt, contact_id) == []  # nothing automated goes to a person who may be in danger

    location = resolve(web, crt, clock, reply_id(crt, "SMc2"), "keep")
    assert "done=handled" in location
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED
    assert events(crt, contact_id, EventKind.CRISIS_RESOLVED)[0]["outcome"] == "sequences kept paused"
    timeline = web.get(f"/admin/contacts/{contact_id}").text
    assert CRISIS_PAUSE_REASON in timeline and "Crisis reply resolved" in timeline


def test_resolve_and_resume_continues_the_sequence_through_the_same_rule(crt, web, clock):
    contact_id = add_contact(crt, clock.now)
    sms_in(web, "I have pills saved up and tonight is the night", "SMc3")
    location = resolve(web, crt, clock, reply_id(crt, "SMc3"), "resume")
    assert "done=resumed" in location
    enrollment = enrollment_of(crt, contact_id)
    assert enrollment.status == EnrollmentStatus.ACTIVE and enrollment.next_due_at is not None
    assert events(crt, contact_id, EventKind.RESUMED)[0]["reason"] == "crisis reply resolved by staff"
    run_until_done(crt, clock)
    with crt.sessions() as session:
        assert session.scalar(select(Message.id).where(Message.contact_id == contact_id).limit(1)) is not None


def test_the_inbox_offers_resume_or_keep_paused_for_a_crisis_reply(crt, web, clock):
    add_contact(crt, clock.now)
    sms_in(web, "Me quiero matar", "SMc4")
    sms_in(web, "what does it cost?", "SMc5")
    sign_in_as(web, crt, add_user(crt, "staff"), clock.now)
    assert "possible crisis" in web.get("/admin/replies").text
    contact_id = reply_contact(crt, "SMc4")
    page = web.get(f"/admin/replies/contacts/{contact_id}").text
    assert page.count("Done and resume the sequence") == 1 and page.count("Done, keep sequences paused") == 1
    assert "what does it cost?" in page  # the ordinary question, on the same thread


def test_resume_waits_while_another_crisis_reply_is_open(crt, web, clock):
    contact_id = add_contact(crt, clock.now)
    sms_in(web, "s u i c i d e", "SMc6")
    sms_in(web, "I said my goodbyes", "SMc7")
    held = resolve(web, crt, clock, reply_id(crt, "SMc6"), "resume")
    assert "done=crisis_still_open" in held
    assert "another possible-crisis reply" in web.get(held).text  # staff are told why nothing resumed
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED
    outcome = events(crt, contact_id, EventKind.CRISIS_RESOLVED)[0]["outcome"]
    assert outcome == "kept paused: another crisis reply is still open"
    resolve(web, crt, clock, reply_id(crt, "SMc7"), "resume")
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.ACTIVE


def test_resolving_a_crisis_never_resumes_a_sequence_staff_paused_themselves(crt, web, clock):
    contact_id = add_contact(crt, clock.now)
    with crt.sessions() as session, session.begin():
        enrollment = session.scalar(select(Enrollment).where(Enrollment.contact_id == contact_id))
        set_paused(session, crt.campaigns, enrollment, True, clock.now, "staff@clinic.test")
    sms_in(web, "quiero morir", "SMc8")
    assert len(events(crt, contact_id, EventKind.PAUSED)) == 1  # already paused: nothing more
    resolve(web, crt, clock, reply_id(crt, "SMc8"), "resume")
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED
    assert events(crt, contact_id, EventKind.CRISIS_RESOLVED)[0]["outcome"] == "0 resumed"


def test_a_crisis_from_an_unknown_number_is_flagged_and_answered(crt, web, clock):
    reply = sms_in(web, "stop texting me i want to die", "SMc9")
    assert "988" in reply
    with crt.sessions() as session:
        inbound = session.scalar(select(InboundMessage))
        assert inbound.crisis is True and inbound.contact_id is None and inbound.handled_at is None


@pytest.mark.parametrize("how", ["enroll", "bulk import", "row-by-row import"])
def test_a_sequence_started_while_a_crisis_reply_is_open_starts_paused(crt, web, clock, how):
    contact_id = add_contact(crt, clock.now, campaign=None)
    sms_in(web, "i have pills saved up and tonight is the night", "SMc9")
    campaign = crt.campaign("ketamine-consult")
    if how == "enroll":
        with crt.sessions() as session, session.begin():
            enroll(session, session.get(Contact, contact_id), campaign, clock.now, "staff:desk@clinic.test")
    else:
        rows = "email,phone,first_name,consent_email,consent_sms\nalex@example.com,+13125550142,Alex,yes,yes\n"
        run = import_csv if how == "bulk import" else import_csv_rowwise
        assert not run(crt, io.StringIO(rows), campaign, clock.now, "cli:test").errors
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.PAUSED
    assert events(crt, contact_id, EventKind.PAUSED) == [{"reason": CRISIS_PAUSE_REASON,
                                                          "inbound_id": reply_id(crt, "SMc9")}]
    run_until_done(crt, clock)
    assert messages_for(crt, contact_id) == []
    resolve(web, crt, clock, reply_id(crt, "SMc9"), "resume")
    assert enrollment_of(crt, contact_id).status == EnrollmentStatus.ACTIVE
