"""The clinic's claims library: the medical claims a clinician approved, each with its source.

Every medical sentence a patient reads must match an approved claim here (`content.claims`). The
rules, each one function that every entry point (the staff UI's claims page and review page,
`drip init`) calls:

- `add_claim` — a clinician approves a new wording with its source: the clinic's page (and which
  part of it) or a citation they enter. Refused: an empty text, absolute language (never
  approvable), a sentence already in the library, a missing source, someone who is not a clinician.
- `edit_claim` — new wording for a claim is a new version; the old one is superseded (kept).
- `retire_claim` — a clinician withdraws a claim, with a reason; messages that say it are flagged
  again.
- `seed_library` — `drip init` loads the shipped ``policy/approved_claims.yaml`` once, when the
  library is empty: the clinic page's quotes and the shipped messages' wording of them; and
  ``policy/approved_claims.es.yaml`` once, when the library has no Spanish claim yet.

Each claim is worded in one language (`ClaimRecord.language`). A message is checked against the
claims of its own language only (`load_library(session, language)`): a Spanish claim is a
clinician's approval of a translation, and an English claim approves no Spanish sentence.

Every change is audited (who, what, when); each version records who approved it and when.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import yaml
from anyascii import anyascii
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.content.absolutes import find_absolutes, load_absolute_rules
from patient_drip.content.claims import ClaimLibrary, LibraryClaim, claim_key
from patient_drip.content.languages import DEFAULT_LANGUAGE, LANGUAGES, is_language, policy_file_name
from patient_drip.models import ClaimRecord, ClaimSource, ClaimStatus, audit

__all__ = [
    "ClaimError",
    "add_claim",
    "claim_versions",
    "current_claims",
    "edit_claim",
    "library_from_file",
    "load_library",
    "retire_claim",
    "seed_library",
]

MAX_TEXT = 600
SEED_APPROVER = "initial import (policy/approved_claims.yaml)"
SHIPPED_POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"
CLINIC_PAGE_LABEL = "the clinic's page"


class ClaimError(Exception):
    """A change to the claims library that the rules refuse; the message says what to change."""


def load_library(session: Session, language: str = DEFAULT_LANGUAGE) -> ClaimLibrary:
    """Every approved claim in `language`, for the check of a message in that language."""
    rows = session.execute(select(ClaimRecord.id, ClaimRecord.text).where(ClaimRecord.status == ClaimStatus.APPROVED,
                                                                           ClaimRecord.language == language)
                           .order_by(ClaimRecord.id))
    return ClaimLibrary(tuple(LibraryClaim(i, t) for i, t in rows))


def current_claims(session: Session, *, include_retired: bool = True) -> list[ClaimRecord]:
    """The newest version of every claim (approved, or retired when asked), newest first."""
    newest = select(ClaimRecord.claim_key, func.max(ClaimRecord.version).label("v")).group_by(ClaimRecord.claim_key).subquery()
    query = select(ClaimRecord).join(newest, (ClaimRecord.claim_key == newest.c.claim_key)
                                     & (ClaimRecord.version == newest.c.v))
    if not include_retired:
        query = query.where(ClaimRecord.status == ClaimStatus.APPROVED)
    return list(session.scalars(query.order_by(ClaimRecord.approved_at.desc(), ClaimRecord.id.desc())))


def claim_versions(session: Session, key: str) -> list[ClaimRecord]:
    """Every version of one claim, newest first."""
    return list(session.scalars(select(ClaimRecord).where(ClaimRecord.claim_key == key)
                                .order_by(ClaimRecord.version.desc())))


def _newest(session: Session, key: str) -> ClaimRecord:
    versions = claim_versions(session, key)
    if not versions:
        raise ClaimError(f"there is no claim {key!r}")
    return versions[0]


def _checked(session: Session, text: str, source_kind: str, source: str, *, clinician: bool,
             replacing: str | None = None, language: str = DEFAULT_LANGUAGE) -> tuple[str, ClaimSource, str]:
    if not clinician:
        raise ClaimError("only a clinician can approve medical claims")
    text = " ".join(text.split())
    if not text:
        raise ClaimError("write the claim's wording")
    if len(text) > MAX_TEXT:
        raise ClaimError(f"a claim is one sentence: at most {MAX_TEXT} characters")
    if not is_language(language):
        raise ClaimError(f"choose the claim's language: {', '.join(LANGUAGES)}")
    refused = find_absolutes(text, load_absolute_rules(language=language))
    if refused:
        raise ClaimError(refused[0].message + "; such wording cannot be approved")
    try:
        kind = ClaimSource(source_kind)
    except ValueError:
        raise ClaimError("choose where the claim comes from: the clinic's page or a citation") from None
    source = " ".join(source.split())
    if kind == ClaimSource.CITATION and len(source) < 5:
        raise ClaimError("enter the citation the claim comes from (authors, title, journal, year or a link)")
    if kind == ClaimSource.CLINIC_PAGE and not source:
        source = CLINIC_PAGE_LABEL
    key = claim_key(text)
    for row in session.scalars(select(ClaimRecord).where(ClaimRecord.status == ClaimStatus.APPROVED,
                                                         ClaimRecord.language == language)):
        if claim_key(row.text) == key and row.claim_key != replacing:
            raise ClaimError(f"this claim is already in the library (claim {row.claim_key}, version {row.version})")
    return text, kind, source[:500]


def add_claim(session: Session, text: str, source_kind: str, source: str, now: datetime, actor: str, *,
              clinician: bool, note: str = "", language: str = DEFAULT_LANGUAGE) -> ClaimRecord:
    """A clinician approves a new claim (version 1) worded in `language` ("en", "es"; a Spanish one
    is checked with the Spanish absolute wording too). Raises `ClaimError` (see the module docstring)."""
    text, kind, source = _checked(session, text, source_kind, source, clinician=clinician, language=language)
    number = (session.scalar(select(func.count(ClaimRecord.id))) or 0) + 1
    key = _free_key(session, _slug(text) or f"claim-{number}")
    row = ClaimRecord(claim_key=key, version=1, text=text, source_kind=kind, source=source,
                      status=ClaimStatus.APPROVED, note=note.strip()[:500], approved_by=actor, approved_at=now,
                      language=language)
    session.add(row)
    session.flush()
    audit(session, actor, "claim_added", now, claim=key, version=1, text=text, source=source, language=language)
    return row


def edit_claim(session: Session, key: str, text: str, source_kind: str, source: str, now: datetime, actor: str, *,
               clinician: bool, note: str = "") -> ClaimRecord:
    """New wording (or source) for claim `key`: a new approved version; the previous one is
    superseded and messages that still say it are flagged. Raises `ClaimError`."""
    current = _newest(session, key)
    if current.status == ClaimStatus.RETIRED:
        raise ClaimError("this claim is retired; add it again as a new claim")
    text, kind, source = _checked(session, text, source_kind, source, clinician=clinician, replacing=key,
                                  language=current.language)
    if text == current.text and source == current.source and kind == current.source_kind:
        raise ClaimError("nothing changed: edit the wording or the source")
    current.status = ClaimStatus.SUPERSEDED
    row = ClaimRecord(claim_key=key, version=current.version + 1, text=text, source_kind=kind, source=source,
                      status=ClaimStatus.APPROVED, note=note.strip()[:500], approved_by=actor, approved_at=now,
                      language=current.language)
    session.add(row)
    session.flush()
    audit(session, actor, "claim_edited", now, claim=key, version=row.version, text=text, previous=current.text)
    return row


def retire_claim(session: Session, key: str, now: datetime, actor: str, reason: str, *, clinician: bool) -> ClaimRecord:
    """Withdraw claim `key` (its newest version), with the reason. Raises `ClaimError`."""
    if not clinician:
        raise ClaimError("only a clinician can retire a claim")
    reason = " ".join(reason.split())
    if len(reason) < 5:
        raise ClaimError("say why the claim is retired")
    current = _newest(session, key)
    if current.status == ClaimStatus.RETIRED:
        raise ClaimError("this claim is already retired")
    current.status = ClaimStatus.RETIRED
    current.retired_by, current.retired_at = actor, now
    current.note = reason[:500]
    audit(session, actor, "claim_retired", now, claim=key, version=current.version, reason=reason[:500])
    return current


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", anyascii(text).casefold())  # "depresión" → "depresion"
    return "-".join(words[:6])[:60]


def _free_key(session: Session, base: str) -> str:
    key, n = base, 1
    while session.scalar(select(ClaimRecord.id).where(ClaimRecord.claim_key == key).limit(1)) is not None:
        n += 1
        key = f"{base}-{n}"
    return key


# --- the shipped library -----------------------------------------------------------------------


def _seed_entries(policy_dir: Path, language: str = DEFAULT_LANGUAGE) -> list[tuple[str, str, ClaimSource, str, str]]:
    """(key, text, source kind, source, note) of every claim in ``approved_claims.yaml`` (or its
    `language` version, ``approved_claims.es.yaml``, the shipped one when `policy_dir` has none):
    the number claims (`claims`) and the sentences (`library`). A translated claim names the
    English claim it translates (`translation_of`) in its note. Raises ValueError naming the file
    and entry."""
    path = policy_dir / policy_file_name("approved_claims.yaml", language)
    if language != DEFAULT_LANGUAGE and not path.is_file():
        path = SHIPPED_POLICY_DIR / path.name
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    entries = []
    for i, item in enumerate([*(doc.get("claims") or []), *(doc.get("library") or [])]):
        if not isinstance(item, dict) or not item.get("id") or not item.get("text"):
            raise ValueError(f"{path}: claim entry {i + 1} needs an id and a text")
        if language != DEFAULT_LANGUAGE and not item.get("translation_of"):
            raise ValueError(f"{path}: claim {item['id']!r} needs translation_of: the English claim it translates")
        note = f"translation of {item['translation_of']}" if item.get("translation_of") else ""
        if item.get("citation"):
            entries.append((str(item["id"]), str(item["text"]), ClaimSource.CITATION, str(item["citation"]), note))
        else:
            section = str(item.get("section") or "")
            if not section and item.get("source"):
                section = str(item["source"]).split("section ", 1)[-1]
            where = f"{CLINIC_PAGE_LABEL}, section {section}" if section else CLINIC_PAGE_LABEL
            entries.append((str(item["id"]), str(item["text"]), ClaimSource.CLINIC_PAGE, where, note))
    return entries


def library_from_file(policy_dir: Path, language: str = DEFAULT_LANGUAGE) -> ClaimLibrary:
    """The shipped library in `language`, without a database (`drip templates check` on the files)."""
    return ClaimLibrary(tuple(LibraryClaim(0, text) for _key, text, _kind, _source, _note
                              in _seed_entries(policy_dir, language)))


def seed_library(session: Session, policy_dir: Path, now: datetime) -> int:
    """Load the shipped claims of each language that has none in the library yet (the first
    `drip init`; for Spanish, the first `drip init` after the Spanish templates shipped); returns
    how many. A language whose library a clinician has started is never touched."""
    seeded = 0
    for language in LANGUAGES:
        if session.scalar(select(ClaimRecord.id).where(ClaimRecord.language == language).limit(1)) is not None:
            continue
        entries = _seed_entries(policy_dir, language)
        for key, text, kind, source, note in entries:
            session.add(ClaimRecord(claim_key=key, version=1, text=" ".join(text.split()), source_kind=kind,
                                    source=source[:500], status=ClaimStatus.APPROVED, note=note[:500],
                                    approved_by=SEED_APPROVER, approved_at=now, language=language))
        session.flush()
        audit(session, "drip init", "claims_library_seeded", now, claims=len(entries), language=language)
        seeded += len(entries)
    return seeded
