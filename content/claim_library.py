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
  library is empty: the clinic page's quotes and the shipped messages' wording of them.

Every change is audited (who, what, when); each version records who approved it and when.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.content.absolutes import find_absolutes, load_absolute_rules
from patient_drip.content.claims import ClaimLibrary, LibraryClaim, claim_key
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
CLINIC_PAGE_LABEL = "the clinic's page"


class ClaimError(Exception):
    """A change to the claims library that the rules refuse; the message says what to change."""


def load_library(session: Session) -> ClaimLibrary:
    """Every approved claim, for the check."""
    rows = session.execute(select(ClaimRecord.id, ClaimRecord.text).where(ClaimRecord.status == ClaimStatus.APPROVED)
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
             replacing: str | None = None) -> tuple[str, ClaimSource, str]:
    if not clinician:
        raise ClaimError("only a clinician can approve medical claims")
    text = " ".join(text.split())
    if not text:
        raise ClaimError("write the claim's wording")
    if len(text) > MAX_TEXT:
        raise ClaimError(f"a claim is one sentence: at most {MAX_TEXT} characters")
    refused = find_absolutes(text, load_absolute_rules())
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
    for row in session.scalars(select(ClaimRecord).where(ClaimRecord.status == ClaimStatus.APPROVED)):
        if claim_key(row.text) == key and row.claim_key != replacing:
            raise ClaimError(f"this claim is already in the library (claim {row.claim_key}, version {row.version})")
    return text, kind, source[:500]


def add_claim(session: Session, text: str, source_kind: str, source: str, now: datetime, actor: str, *,
              clinician: bool, note: str = "") -> ClaimRecord:
    """A clinician approves a new claim (version 1). Raises `ClaimError` (see the module docstring)."""
    text, kind, source = _checked(session, text, source_kind, source, clinician=clinician)
    number = (session.scalar(select(func.count(ClaimRecord.id))) or 0) + 1
    key = _free_key(session, _slug(text) or f"claim-{number}")
    row = ClaimRecord(claim_key=key, version=1, text=text, source_kind=kind, source=source,
                      status=ClaimStatus.APPROVED, note=note.strip()[:500], approved_by=actor, approved_at=now)
    session.add(row)
    session.flush()
    audit(session, actor, "claim_added", now, claim=key, version=1, text=text, source=source)
    return row


def edit_claim(session: Session, key: str, text: str, source_kind: str, source: str, now: datetime, actor: str, *,
               clinician: bool, note: str = "") -> ClaimRecord:
    """New wording (or source) for claim `key`: a new approved version; the previous one is
    superseded and messages that still say it are flagged. Raises `ClaimError`."""
    current = _newest(session, key)
    if current.status == ClaimStatus.RETIRED:
        raise ClaimError("this claim is retired; add it again as a new claim")
    text, kind, source = _checked(session, text, source_kind, source, clinician=clinician, replacing=key)
    if text == current.text and source == current.source and kind == current.source_kind:
        raise ClaimError("nothing changed: edit the wording or the source")
    current.status = ClaimStatus.SUPERSEDED
    row = ClaimRecord(claim_key=key, version=current.version + 1, text=text, source_kind=kind, source=source,
                      status=ClaimStatus.APPROVED, note=note.strip()[:500], approved_by=actor, approved_at=now)
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
    words = re.findall(r"[a-z0-9]+", text.casefold())
    return "-".join(words[:6])[:60]


def _free_key(session: Session, base: str) -> str:
    key, n = base, 1
    while session.scalar(select(ClaimRecord.id).where(ClaimRecord.claim_key == key).limit(1)) is not None:
        n += 1
        key = f"{base}-{n}"
    return key


# --- the shipped library -----------------------------------------------------------------------


def _seed_entries(policy_dir: Path) -> list[tuple[str, str, ClaimSource, str]]:
    """(key, text, source kind, source) of every claim in ``approved_claims.yaml``: the number
    claims (`claims`) and the sentences (`library`). Raises ValueError naming the file and entry."""
    path = policy_dir / "approved_claims.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    entries = []
    for i, item in enumerate([*(doc.get("claims") or []), *(doc.get("library") or [])]):
        if not isinstance(item, dict) or not item.get("id") or not item.get("text"):
            raise ValueError(f"{path}: claim entry {i + 1} needs an id and a text")
        if item.get("citation"):
            entries.append((str(item["id"]), str(item["text"]), ClaimSource.CITATION, str(item["citation"])))
        else:
            section = str(item.get("section") or "")
            if not section and item.get("source"):
                section = str(item["source"]).split("section ", 1)[-1]
            where = f"{CLINIC_PAGE_LABEL}, section {section}" if section else CLINIC_PAGE_LABEL
            entries.append((str(item["id"]), str(item["text"]), ClaimSource.CLINIC_PAGE, where))
    return entries


def library_from_file(policy_dir: Path) -> ClaimLibrary:
    """The shipped library, without a database (`drip templates check` on the files)."""
    return ClaimLibrary(tuple(LibraryClaim(0, text) for _key, text, _kind, _source in _seed_entries(policy_dir)))


def seed_library(session: Session, policy_dir: Path, now: datetime) -> int:
    """Load the shipped claims when the library is empty (first `drip init`); returns how many.
    A library a clinician has started is never touched."""
    if session.scalar(select(ClaimRecord.id).limit(1)) is not None:
        return 0
    entries = _seed_entries(policy_dir)
    for key, text, kind, source in entries:
        session.add(ClaimRecord(claim_key=key, version=1, text=" ".join(text.split()), source_kind=kind,
                                source=source[:500], status=ClaimStatus.APPROVED, note="", approved_by=SEED_APPROVER,
                                approved_at=now))
    session.flush()
    audit(session, "drip init", "claims_library_seeded", now, claims=len(entries))
    return len(entries)
