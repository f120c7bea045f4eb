"""Versioned message templates: drafts by marketing, published only after a clinician approves.

The files in `templates/` are version 1 of each template. Messages are always rendered with the
published version at send time (`published_sources`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from patient_drip.models import audit
from patient_drip.models import TemplateStatus, TemplateVersion


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
    """First run: each file becomes published version 1. Later: a changed file becomes a new draft."""
    initial: list[str] = []
    drafts: list[str] = []
    unchanged = 0
    for name, source in template_files(templates_dir).items():
        current = latest(session, name)
        if current is None:
            session.add(TemplateVersion(
                name=name, version=1, source=source, content_hash=content_hash(source),
                status=TemplateStatus.PUBLISHED, author=actor, note="initial version from templates/",
                created_at=now, approved_by="initial import", approved_at=now,
            ))
            initial.append(name)
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


def save_draft(session: Session, name: str, source: str, now: datetime, author: str, note: str = "") -> TemplateVersion:
    """A new version that is not live until a clinician approves it."""
    current = latest(session, name)
    draft = TemplateVersion(
        name=name, version=(current.version + 1) if current else 1, source=source, content_hash=content_hash(source),
        status=TemplateStatus.DRAFT, author=author, note=note[:500], created_at=now,
    )
    session.add(draft)
    session.flush()
    audit(session, author, "template_draft_saved", now, template=name, version=draft.version)
    return draft


def approve(session: Session, version: TemplateVersion, now: datetime, approver: str) -> None:
    """Publish `version`; the previously published one is superseded. Authors cannot approve their own."""
    if version.status != TemplateStatus.DRAFT:
        raise TemplateStoreError(f"version {version.version} is {version.status}, not a draft")
    if version.author == approver:
        raise TemplateStoreError("a change must be approved by a clinician other than its author")
    current = published(session, version.name)
    if current is not None:
        current.status = TemplateStatus.SUPERSEDED
    version.status = TemplateStatus.PUBLISHED
    version.approved_by = approver
    version.approved_at = now
    session.flush()
    audit(session, approver, "template_published", now, template=version.name, version=version.version)


def reject(session: Session, version: TemplateVersion, now: datetime, reviewer: str, note: str = "") -> None:
    if version.status != TemplateStatus.DRAFT:
        raise TemplateStoreError(f"version {version.version} is {version.status}, not a draft")
    version.status = TemplateStatus.REJECTED
    version.approved_by = reviewer
    version.approved_at = now
    if note:
        version.note = note[:500]
    audit(session, reviewer, "template_rejected", now, template=version.name, version=version.version)


def rollback_draft(session: Session, name: str, to_version: int, now: datetime, author: str) -> TemplateVersion:
    """A new draft with an older version's content (it still needs a clinician's approval)."""
    old = session.scalar(select(TemplateVersion).where(TemplateVersion.name == name, TemplateVersion.version == to_version))
    if old is None:
        raise TemplateStoreError(f"{name} has no version {to_version}")
    return save_draft(session, name, old.source, now, author, note=f"roll back to version {to_version}")
