"""A claims library a clinician owns (issue 12): every medical sentence a patient reads is an approved
claim, absolute wording is refused, only clinicians approve, a rejection says why and follows the
draft built on it, and the clinician reviews a word-level diff of what the patient reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from patient_drip.accounts.users import AccountError, is_clinician, set_clinician
from patient_drip.content.absolutes import load_absolute_rules
from patient_drip.content.checks import check_all
from patient_drip.content.claim_library import (
    ClaimError,
    add_claim,
    edit_claim,
    library_from_file,
    load_library,
    retire_claim,
    seed_library,
)
from patient_drip.content.claims import check_claims, claim_key, load_medical_terms, split_sentences, visible_text
from patient_drip.content.template_store import live_part, published
from patient_drip.models import AuditEntry, ClaimRecord, ClaimStatus, TemplateStatus, TemplateVersion, User
from patient_drip.web.admin.text_diff import word_diff
from support.builders import ROOT, make_settings
from support.staff import add_user, sign_in_as

WELCOME = "email/01-welcome.html"
HOW = "email/03-how-it-works.html"
RESULTS = "email/04-results.html"
POLICY = ROOT / "policy"
CURE = "It cures depression in one session."
NEW_CLAIM = "Ketamine helps most people feel better within a week."
MARKER = "Thank you for asking about a consultation at {{ clinic_sms_name }}."
# Past the plain-text opening that mail apps preview (where naming the treatment is held back).
LATER = "Let's start with the basics."


def _check(sentence: str):  # type: ignore[no-untyped-def]
    report = check_claims("sms", library=library_from_file(POLICY), terms=load_medical_terms(POLICY),
                          absolutes=load_absolute_rules(POLICY), text=sentence)
    return report.findings


def _table() -> list[tuple[str, str, str]]:
    rows = []
    for line in (ROOT / "tests" / "data" / "claim_sentences.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, sentence, expected = line.split("\t")
            rows.append((kind, sentence, expected))
    return rows


TABLE = _table()


def test_the_table_has_thirty_sentences_of_each_kind():
    kinds = {kind for kind, _, _ in TABLE}
    assert len(TABLE) == 30 and kinds == {"page", "paraphrase", "new", "absolute", "other"}


@pytest.mark.parametrize(("kind", "sentence", "expected"), TABLE, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(TABLE)])
def test_claims_guard_on_edited_sentences(kind, sentence, expected):
    findings = _check(sentence)
    assert len(split_sentences(sentence)) == 1
    if expected == "not-medical":
        assert findings == ()
        return
    assert len(findings) == 1
    finding = findings[0]
    status, _, rules = expected.partition(":")
    assert finding.status == status, (sentence, finding.message)
    if status == "refused":
        reasons = load_absolute_rules(POLICY).rules
        wanted = {r.reason for r in reasons if r.id in rules.split(",")}
        assert any(reason in finding.message for reason in wanted), finding.message
        assert "is not allowed" in finding.message
    if status == "new":
        assert finding.message == "new claim — needs clinical review"


def test_matching_tolerates_format_never_wording():
    same = "Significant increases in density begin to occur approximately 2-7 days after an infusion."
    assert claim_key(same) == claim_key("SIGNIFICANT increases in density begin to occur approximately 2 – 7 days after an infusion")
    assert claim_key(same) != claim_key(same.replace("2-7", "27"))
    assert claim_key(same) != claim_key(same.replace("approximately", "exactly"))
    assert claim_key("Book at Sunrise Clinic today.", {"clinic_name": "Sunrise Clinic"}) == \
        claim_key("Book at {{ clinic_name }} today.")
    # a variable that is not wording ("email" = channel) is not replaced
    assert claim_key("In our last email.", {"channel": "email"}) == claim_key("In our last email.")


def test_sentences_are_split_on_rendered_text_not_markup():
    text = visible_text("<html><head><style>p{}</style><title>T</title></head><body><p>Hi Dr. Kim. "
                        "It works.</p><ul><li>one</li><li>two</li></ul><!-- hidden --></body></html>")
    assert text == "Hi Dr. Kim. It works.\none\ntwo"  # the <title> (the subject) is checked on its own
    assert [s.text for s in split_sentences(text)] == ["Hi Dr. Kim.", "It works.", "one", "two"]


def test_negated_absolutes_are_safety_language_not_refused():
    assert _check("We cannot guarantee any result.")[0].status == "new"
    assert _check("Ketamine is not risk-free.")[0].status == "refused"  # no-side-effects is never negatable


# -- the shipped content ------------------------------------------------------------------------


def test_shipped_templates_pass_and_the_safety_paragraph_is_pending(tmp_path):
    problems, _ = check_all(make_settings(f"sqlite:///{tmp_path / 'x.db'}"))
    assert problems == []
    for name in (HOW, RESULTS):
        source = (ROOT / "templates" / name).read_text(encoding="utf-8")
        assert "clinician-pending" in source and "Do not change or stop any medication" in source
        assert "Do not change" not in live_part(source)


def test_templates_check_reports_new_and_absolute_claims_with_file_and_line(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    welcome = templates / WELCOME
    source = welcome.read_text(encoding="utf-8")
    welcome.write_text(source.replace(MARKER, f"{MARKER} {NEW_CLAIM}\n<p>{CURE}</p>"), encoding="utf-8")
    line = next(i for i, text in enumerate(welcome.read_text().splitlines(), 1) if NEW_CLAIM in text)
    problems, _ = check_all(make_settings(f"sqlite:///{tmp_path / 'x.db'}", templates_dir=templates))
    assert any(p.startswith(f"templates/{WELCOME}:{line}: [new-claim] “{NEW_CLAIM}”: new claim — needs clinical review")
               for p in problems), problems
    assert any(p.startswith(f"templates/{WELCOME}:{line + 1}: [absolute-claim]") and "cures" in p for p in problems), problems


# -- the library ------------------------------------------------------------------------------


def test_init_loads_the_shipped_library_once(srt, clock):
    with srt.sessions() as session, session.begin():
        count = session.scalar(select(func.count(ClaimRecord.id)).where(ClaimRecord.language == "en"))
        assert count == len(library_from_file(POLICY).claims) > 100  # and the Spanish ones: test_spanish_content
        assert seed_library(session, POLICY, clock.now) == 0  # never twice
        row = session.scalar(select(ClaimRecord).where(ClaimRecord.claim_key == "response-rate"))
        assert row.source.startswith("the clinic's page, section") and row.status == ClaimStatus.APPROVED


def test_library_rules(srt, clock):
    with srt.sessions() as session, session.begin():
        with pytest.raises(ClaimError, match="only a clinician"):
            add_claim(session, NEW_CLAIM, "clinic_page", "", clock.now, "admin@clinic.test", clinician=False)
        with pytest.raises(ClaimError, match="promises a cure"):
            add_claim(session, CURE, "clinic_page", "", clock.now, "dr@clinic.test", clinician=True)
        with pytest.raises(ClaimError, match="enter the citation"):
            add_claim(session, NEW_CLAIM, "citation", "", clock.now, "dr@clinic.test", clinician=True)
        with pytest.raises(ClaimError, match="already in the library"):
            add_claim(session, "the literature suggests that it has a response rate of 60–80% in treatment resistant "
                      "depression", "clinic_page", "", clock.now, "dr@clinic.test", clinician=True)
        row = add_claim(session, NEW_CLAIM, "citation", "Smith et al., J Affect Disord 2020", clock.now,
                        "dr@clinic.test", clinician=True)
        assert load_library(session).find(NEW_CLAIM.upper()) is not None
        new = edit_claim(session, row.claim_key, NEW_CLAIM.replace("most", "many"), "citation",
                         "Smith et al., J Affect Disord 2020", clock.now, "dr@clinic.test", clinician=True)
        assert new.version == 2 and row.status == ClaimStatus.SUPERSEDED
        assert load_library(session).find(NEW_CLAIM) is None  # the old wording is flagged again
        retire_claim(session, row.claim_key, clock.now, "dr@clinic.test", "the study was withdrawn", clinician=True)
        assert load_library(session).find(NEW_CLAIM.replace("most", "many")) is None
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("claim\\_%", escape="\\"))))
        assert actions == ["claim_added", "claim_edited", "claim_retired"]


def test_an_admin_is_a_clinician_only_when_given_the_duties(srt, clock):
    admin = add_user(srt, "admin")
    other = add_user(srt, "admin", "other@clinic.test")
    doctor = add_user(srt, "clinician")
    with srt.sessions() as session, session.begin():
        user = session.get(User, admin.id)
        assert not is_clinician(user) and is_clinician(session.get(User, doctor.id))
        with pytest.raises(AccountError, match="your own"):
            set_clinician(session, user, True, clock.now, user.email, acting_user_id=user.id)
        assert set_clinician(session, user, True, clock.now, other.email, acting_user_id=other.id)
        assert is_clinician(user)


# -- the editor, the review page and approval, over HTTP --------------------------------------


def _source(rt, name=WELCOME):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return published(session, name).source


def _save(client, csrf, source, name=WELCOME, **extra):  # type: ignore[no-untyped-def]
    return client.post(f"/admin/templates/edit/{name}", data={"source": source, "note": "edit", "action": "save",
                                                             "csrf_token": csrf, **extra})


def _as(client, rt, role, clock, email=None, clinician=False):  # type: ignore[no-untyped-def]
    return sign_in_as(client, rt, add_user(rt, role, email, clinician=clinician), clock.now)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).replace("&#34;", '"').replace("&#39;", "'")


def test_the_cure_edit_is_flagged_as_a_new_claim_and_refused(client, srt, clock):
    csrf = _as(client, srt, "marketing", clock)
    edited = _source(srt).replace(MARKER, f"{MARKER} {CURE}")
    preview = client.post(f"/admin/templates/preview/{WELCOME}", headers={"X-CSRF-Token": csrf},
                          json={"source": edited}).json()
    assert not preview["ok"]
    message = next(p["message"] for p in preview["problems"] if p["rule"] == "absolute-claim")
    assert "cures" in message and "promises a cure" in message
    saved = _save(client, csrf, edited)
    assert saved.status_code == 422 and "No problems found" not in saved.text
    # the rendered-text check names the sentence and says it is a new claim as well
    page = _text(client.post(f"/admin/templates/edit/{WELCOME}", data={"source": edited.replace(
        MARKER, "{{ '' }}" + MARKER), "action": "preview", "csrf_token": csrf}).text)
    assert "promises a cure" in page
    with srt.sessions() as session:
        assert session.scalar(select(func.count(TemplateVersion.id)).where(TemplateVersion.name == WELCOME)) == 1


def test_a_new_claim_is_saved_flagged_and_needs_the_library_before_approval(client, srt, clock):
    marketing = _as(client, srt, "marketing", clock)
    edited = _source(srt).replace(LATER, f"{LATER} {NEW_CLAIM}")
    preview = client.post(f"/admin/templates/edit/{WELCOME}", data={"source": edited, "action": "preview",
                                                                     "csrf_token": marketing})
    assert "new claim — needs clinical review" in preview.text and "No problems found" not in preview.text
    saved = _save(client, marketing, edited)
    assert saved.status_code == 303
    doctor = _as(client, srt, "clinician", clock, "dr.kim@clinic.test")
    review = client.get(f"/admin/templates/review/{WELCOME}?v=2").text
    # word-level diff of the rendered text: the new words, highlighted as a claim; no markup shown
    diff = review.split('id="word-diff">', 1)[1].split("</div>", 1)[0]
    assert f'<ins class="w-add claim-new"> {NEW_CLAIM}</ins>' in diff or f'<ins class="w-add claim-new">{NEW_CLAIM}' in diff
    assert "&lt;p&gt;" not in diff and "Thank you for asking about a consultation at" in diff
    assert 'id="approve-button" disabled' in review
    refused = client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": doctor})
    assert refused.status_code == 409 and "still needs clinical review" in refused.text
    added = client.post("/admin/claims", data={"text": NEW_CLAIM, "source_kind": "citation",
                                               "source": "Clinic outcomes audit 2025", "csrf_token": doctor,
                                               "return_to": f"/admin/templates/review/{WELCOME}?v=2"})
    assert added.status_code == 303 and added.headers["location"].startswith(f"/admin/templates/review/{WELCOME}?v=2")
    approved = client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": doctor})
    assert approved.status_code == 303
    with srt.sessions() as session:
        claim = session.scalar(select(ClaimRecord).where(ClaimRecord.text == NEW_CLAIM))
        assert claim.approved_by == "dr.kim@clinic.test" and claim.source == "Clinic outcomes audit 2025"
        assert published(session, WELCOME).version == 2


def test_an_admin_who_is_not_a_clinician_cannot_approve_or_add_claims(client, srt, clock):
    marketing = _as(client, srt, "marketing", clock)
    _save(client, marketing, _source(srt).replace("Warmly", "Kind regards"))
    admin = _as(client, srt, "admin", clock)
    assert client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2, "csrf_token": admin}).status_code == 403
    assert client.post("/admin/claims", data={"text": NEW_CLAIM, "source_kind": "clinic_page",
                                              "csrf_token": admin}).status_code == 403
    review = client.get(f"/admin/templates/review/{WELCOME}?v=2").text
    assert "approve-button" not in review and "Only a clinician can approve" in review
    doctor_admin = _as(client, srt, "admin", clock, "dr.admin@clinic.test", clinician=True)
    assert client.post(f"/admin/templates/approve/{WELCOME}", data={"version": 2,
                                                                     "csrf_token": doctor_admin}).status_code == 303


def test_rejection_needs_a_reason_and_the_next_draft_says_its_parent_was_rejected(client, srt, clock):
    marketing = _as(client, srt, "marketing", clock)
    _save(client, marketing, _source(srt).replace(LATER, f"{LATER} {NEW_CLAIM}"))
    doctor = _as(client, srt, "clinician", clock, "dr.kim@clinic.test")
    no_reason = client.post(f"/admin/templates/reject/{WELCOME}", data={"version": 2, "reason": "  ", "csrf_token": doctor})
    assert no_reason.status_code == 422 and "Say why it is rejected" in no_reason.text
    with srt.sessions() as session:
        assert session.scalar(select(TemplateVersion.status).where(
            TemplateVersion.name == WELCOME, TemplateVersion.version == 2)) == TemplateStatus.DRAFT
    reason = "We have no source for 'most people within a week'."
    assert client.post(f"/admin/templates/reject/{WELCOME}", data={"version": 2, "reason": reason,
                                                                    "csrf_token": doctor}).status_code == 303
    # marketing opens the rejected version to fix it: the editor says it was rejected, and why
    sign_in_as(client, srt, add_user(srt, "marketing", "m2@clinic.test"), clock.now)
    marketing = client.cookies  # noqa: F841 (the session above is now the client's)
    editor = client.get(f"/admin/templates/edit/{WELCOME}?from=2")
    assert "rejected" in editor.text and "no source for" in _text(editor.text)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', editor.text)[1]
    assert 'name="based_on" value="2"' in editor.text
    still = _source(srt).replace(LATER, f"{LATER} {NEW_CLAIM} Really.")
    assert _save(client, csrf, still, based_on="2").status_code == 303
    sign_in_as(client, srt, add_user(srt, "clinician", "dr.lee@clinic.test"), clock.now)
    review = client.get(f"/admin/templates/review/{WELCOME}?v=3").text
    notice = _text(review.split('id="rejected-parent">', 1)[1].split("</p>", 1)[0])
    assert "built on version 2, which dr.kim@clinic.test rejected" in notice and "no source for" in notice
    assert "new claim — needs clinical review" in review and 'id="approve-button" disabled' in review


def test_a_draft_with_the_same_content_as_a_rejected_one_says_so(client, srt, clock):
    marketing = _as(client, srt, "marketing", clock)
    edited = _source(srt).replace("Warmly", "Cheers")
    _save(client, marketing, edited)
    doctor = _as(client, srt, "clinician", clock, "dr.kim@clinic.test")
    client.post(f"/admin/templates/reject/{WELCOME}", data={"version": 2, "reason": "Too casual for a clinic.",
                                                            "csrf_token": doctor})
    marketing = _as(client, srt, "marketing", clock, "m2@clinic.test")
    assert _save(client, marketing, edited).status_code == 303  # the browser kept the old text
    review = client.get(f"/admin/templates/review/{WELCOME}?v=3").text
    assert "Too casual for a clinic." in review and 'id="rejected-parent"' in review


def test_the_safety_paragraph_goes_live_only_after_a_clinician_approves_it(client, srt, clock):
    for name in (HOW, RESULTS):
        assert "Do not change or stop any medication" not in _source(srt, name)
    doctor = _as(client, srt, "clinician", clock, "dr.kim@clinic.test")
    review = client.get(f"/admin/templates/review/{RESULTS}?v=2")
    assert review.status_code == 200 and "clinician-pending" in review.text
    flagged = re.findall(r'<mark class="claim-new">([^<]+)</mark> — <strong>new claim', review.text)
    assert any("Do not change or stop any medication on your own" in s for s in flagged)
    assert client.post(f"/admin/templates/approve/{RESULTS}", data={"version": 2,
                                                                    "csrf_token": doctor}).status_code == 409
    for sentence in flagged:
        sentence = sentence.replace("&#39;", "'").replace("&#34;", '"')
        added = client.post("/admin/claims", data={"text": sentence, "source_kind": "citation",
                                                   "source": "Ketamine prescribing information (FDA label, 2022)",
                                                   "csrf_token": doctor})
        assert added.status_code == 303, added.text
    assert client.post(f"/admin/templates/approve/{RESULTS}", data={"version": 2,
                                                                    "csrf_token": doctor}).status_code == 303
    assert "Do not change or stop any medication on your own" in _source(srt, RESULTS)


def test_claims_page_lists_sources_and_approvers(client, srt, clock):
    doctor = _as(client, srt, "clinician", clock, "dr.kim@clinic.test")
    page = client.get("/admin/claims").text
    assert "approved claims" in page and "the clinic&#39;s page, section" in page
    bad = client.post("/admin/claims", data={"text": "Ketamine is safe for everyone.", "source_kind": "clinic_page",
                                             "csrf_token": doctor})
    assert bad.status_code == 422 and "is not allowed" in bad.text and "safe for everyone" in bad.text


def test_word_diff_marks_only_changed_words():
    pieces = word_diff("Ketamine can work within days.", "Ketamine will work within days.", [(0, 31, "new")])
    assert [(p.kind, p.text.strip()) for p in pieces if p.text.strip()] == [
        ("same", "Ketamine"), ("del", "can"), ("add", "will"), ("same", "work within days.")]
    assert all(p.flag == "new" for p in pieces if p.kind != "del")


def test_the_migrated_library_matches_the_file(srt):
    with srt.sessions() as session:
        assert {claim_key(c.text) for c in load_library(session).claims} == \
            {claim_key(c.text) for c in library_from_file(POLICY).claims}


def test_clinician_pending_block_is_stripped_only_between_markers():
    source = "a\n{#- clinician-pending: x -#}\nB\n{#- end clinician-pending -#}\nc\n"
    assert live_part(source) == "a\nc\n"
    assert live_part("no markers") == "no markers"


def test_every_policy_file_of_the_claims_rule_ships(tmp_path):
    for name in ("medical_terms.txt", "absolute_language.yaml", "approved_claims.yaml"):
        assert (POLICY / name).is_file()
    assert Path(POLICY).resolve() == (ROOT / "policy").resolve()


def test_users_page_gives_an_admin_the_clinicians_duties(client, srt, clock):
    colleague = add_user(srt, "admin", "dr.admin@clinic.test")
    csrf = _as(client, srt, "admin", clock)
    given = client.post(f"/admin/users/{colleague.id}/clinician", data={"clinician": "on", "csrf_token": csrf})
    assert given.status_code == 303
    with srt.sessions() as session:
        assert is_clinician(session.get(User, colleague.id))
        assert session.scalar(select(AuditEntry.detail).where(AuditEntry.action == "user_clinician_changed")) == \
            {"user": "dr.admin@clinic.test", "clinician": True}
    assert "+ clinician" in client.get("/admin/users").text


def test_a_figure_in_an_approved_claim_is_an_approved_number(client, srt, clock):
    sentence = "Most patients have 6 infusions over 2 weeks."
    csrf = _as(client, srt, "marketing", clock)
    edited = _source(srt).replace(MARKER, f"{MARKER} {sentence}")

    def rules() -> set[str]:
        body = client.post(f"/admin/templates/preview/{WELCOME}", headers={"X-CSRF-Token": csrf},
                           json={"source": edited}).json()
        return {p["rule"] for p in body["problems"]}

    assert "approved-claim" in rules()  # an unapproved figure: not even a draft
    with srt.sessions() as session, session.begin():
        add_claim(session, sentence, "citation", "Clinic treatment protocol, 2025", clock.now, "dr@clinic.test",
                  clinician=True)
    assert rules() == set()
