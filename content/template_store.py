"""Versioned message templates: drafts by marketing, published only after a clinician approves.

The files in `templates/` are version 1 of each template. Messages are always rendered with the
published version at send time (`published_sources`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.models import audit
from patient_drip.models import TemplateStatus, TemplateVersion


# A passage of a shipped template that a clinician has not approved yet (the safety paragraph):
# `{#- clinician-pending: why -#} ... {#- end clinician-pending -#}`. The live (published) form of
# the file leaves it out; the whole file is saved as a draft for clinical review.
PENDING_BLOCK = re.compile(r"\{#-?\s*clinician-pending\b.*?#\}.*?\{#-?\s*end clinician-pending\s*-?#\}\n?", re.S)


def live_part(source: str) -> str:
    """`source` without its clinician-pending passages: what may go live before a clinician approves."""
    return PENDING_BLOCK.sub("", source)


def live_files(templates_dir: Path) -> dict[str, str]:
    """Every template file as it may go live (`live_part`), by name: what `drip simulate` and
    `drip templates check` render, the same as a fresh `drip init` publishes."""
    return {name: live_part(source) for name, source in template_files(templates_dir).items()}


class TemplateStoreError(Exception):
    """A template operation that is not allowed; the message says why."""


def content_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def template_files(templates_dir: Path) -> dict[str, str]:
    """Every template file (layouts included) by its name under the folder."""
    return {
        str(path.relative_to(templates_dir)): path.read_text(encoding="utf-8")
        for path in sorted(templates_dir.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def latest(session: Session, name: str) -> TemplateVersion | None:
    return session.scalar(
        select(TemplateVersion).where(TemplateVersion.name == name).order_by(TemplateVersion.version.desc()).limit(1)
    )


def published(session: Session, name: str) -> TemplateVersion | None:
    return session.scalar(
        select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.status == TemplateStatus.PUBLISHED)
    )


def versions(session: Session, name: str) -> list[TemplateVersion]:
    return list(session.scalars(
        select(TemplateVersion).where(TemplateVersion.name == name).order_by(TemplateVersion.version.desc())
    ))


def published_sources(session: Session) -> dict[str, str]:
    """Name → source of every published version: what the renderer uses instead of the files."""
    rows = session.execute(
        select(TemplateVersion.name, TemplateVersion.source).where(TemplateVersion.status == TemplateStatus.PUBLISHED)
    )
    return {name: source for name, source in rows}


def publication_stamp(session: Session) -> str:
    """Changes whenever any template is published (cheap to poll before reloading)."""
    # Ids only grow, so a new publication always raises the newest published id (times can tie).
    count, newest = session.execute(
        select(func.count(TemplateVersion.id), func.max(TemplateVersion.id))
        .where(TemplateVersion.status == TemplateStatus.PUBLISHED)
    ).one()
    return f"{count}:{newest}"


@dataclass(frozen=True, slots=True)
class SyncResult:
    initial: list[str]
    drafts: list[str]
    unchanged: int


def sync_from_files(session: Session, templates_dir: Path, now: datetime, actor: str) -> SyncResult:
    """First run: each file becomes published version 1 — without its clinician-pending passages,
    and a file that has some is also saved whole as draft 2, for a clinician to review. Later: a
    changed file becomes a new draft."""
    initial: list[str] = []
    drafts: list[str] = []
    unchanged = 0
    for name, source in template_files(templates_dir).items():
        current = latest(session, name)
        if current is None:
            live = live_part(source)
            session.add(TemplateVersion(
                name=name, version=1, source=live, content_hash=content_hash(live),
                status=TemplateStatus.PUBLISHED, author=actor, note="initial version from templates/",
                created_at=now, approved_by="initial import", approved_at=now,
            ))
            initial.append(name)
            if live != source:
                session.flush()
                save_draft(session, name, source, now, actor, based_on=1,
                           note="adds a clinician-pending passage (safety paragraph): needs clinical review")
                drafts.append(name)
        elif current.content_hash != content_hash(source) and not _same_as_any(session, name, source):
            save_draft(session, name, source, now, actor, note="imported from templates/ by drip templates sync")
            drafts.append(name)
        else:
            unchanged += 1
    session.flush()
    return SyncResult(initial, drafts, unchanged)


def _same_as_any(session: Session, name: str, source: str) -> bool:
    digest = content_hash(source)
    return session.scalar(
        select(TemplateVersion.id).where(TemplateVersion.name == name, TemplateVersion.content_hash == digest).limit(1)
    ) is not None


def save_draft(session: Session, name: str, source: str, now: datetime, author: str, note: str = "",
               based_on: int | None = None) -> TemplateVersion:
    """A new version that is not live until a clinician approves it. `based_on`: the version the
    author started from (its review page says so when that one was rejected)."""
    current = latest(session, name)
    draft = TemplateVersion(
        name=name, version=(current.version + 1) if current else 1, source=source, content_hash=content_hash(source),
        status=TemplateStatus.DRAFT, author=author, note=note[:500], created_at=now, based_on=based_on,
    )
    session.add(draft)
    session.flush()
    audit(session, author, "template_draft_saved", now, template=name, version=draft.version)
    return draft


def approve(session: Session, version: TemplateVersion, now: datetime, approver: str, *, clinician: bool,
            open_claims: Sequence[str] = ()) -> None:
    """Publish `version`; the previously published one is superseded.

    Refused (`TemplateStoreError`, saying what to do) unless: the approver holds the clinician's
    duties (`clinician`, from `accounts.users.is_clinician`), is not the author, the version is a
    draft, and `open_claims` is empty — the sentences of its rendered text that are new claims or
    refused wording (`content.claims.check_claims`): a clinician adds a new claim to the claims
    library first, so every live medical sentence is a library claim with its source."""
    if not clinician:
        raise TemplateStoreError("only a clinician can approve a template: medical wording needs clinical review")
    if version.status != TemplateStatus.DRAFT:
        raise TemplateStoreError(f"version {version.version} is {version.status}, not a draft")
    if version.author == approver:
        raise TemplateStoreError("a change must be approved by a clinician other than its author")
    if open_claims:
        raise TemplateStoreError(
            f"{len(open_claims)} sentence{'s' if len(open_claims) != 1 else ''} still need{'s' if len(open_claims) == 1 else ''}"
            " clinical review: add each to the claims library (or reject the draft with a reason) before approving")
    current = published(session, version.name)
    if current is not None:
        current.status = TemplateStatus.SUPERSEDED
    version.status = TemplateStatus.PUBLISHED
    version.approved_by = approver
    version.approved_at = now
    session.flush()
    audit(session, approver, "template_published", now, template=version.name, version=version.version)


MIN_REASON = 10


def reject(session: Session, version: TemplateVersion, now: datetime, reviewer: str, reason: str, *,
           clinician: bool) -> None:
    """Reject a draft, with the reason the author will read (at least 10 characters). Refused
    (`TemplateStoreError`) for someone without the clinician's duties, for a version that is not
    a draft, and without a reason. The author's own note is kept."""
    if not clinician:
        raise TemplateStoreError("only a clinician can reject a template")
    if version.status != TemplateStatus.DRAFT:
        raise TemplateStoreError(f"version {version.version} is {version.status}, not a draft")
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON:
        raise TemplateStoreError("say why it is rejected (at least 10 characters): the author needs to know what to change")
    version.status = TemplateStatus.REJECTED
    version.approved_by = reviewer
    version.approved_at = now
    version.review_note = reason[:500]
    audit(session, reviewer, "template_rejected", now, template=version.name, version=version.version, reason=reason[:500])


def rejected_parent(session: Session, version: TemplateVersion) -> TemplateVersion | None:
    """The rejected version this one was built on — its `based_on`, or an earlier version with the
    same content — or None. The review page shows it with the reason."""
    candidates = []
    if version.based_on is not None:
        candidates.append(session.scalar(select(TemplateVersion).where(
            TemplateVersion.name == version.name, TemplateVersion.version == version.based_on)))
    candidates.append(session.scalar(select(TemplateVersion).where(
        TemplateVersion.name == version.name, TemplateVersion.content_hash == version.content_hash,
        TemplateVersion.version < version.version, TemplateVersion.status == TemplateStatus.REJECTED)
        .order_by(TemplateVersion.version.desc()).limit(1)))
    return next((c for c in candidates if c is not None and c.status == TemplateStatus.REJECTED), None)


def rollback_draft(session: Session, name: str, to_version: int, now: datetime, author: str) -> TemplateVersion:
    """A new draft with an older version's content (it still needs a clinician's approval)."""
    old = session.scalar(select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.version == to_version))
    if old is None:
        raise TemplateStoreError(f"{name} has no version {to_version}")
    return save_draft(session, name, old.source, now, author, note=f"roll back to version {to_version}",
                      based_on=to_version)
