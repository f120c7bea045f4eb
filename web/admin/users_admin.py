"""Admins only: staff users (create, disable, enable, change role, reset password) and the audit log
(changes and reads, filtered by person, kind, date range and contact)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Select, select

from patient_drip.web.admin.auth import AdminUser
from patient_drip.web.admin.common import ROLE_HELP, clinic_zone, redirect, render
from patient_drip.contacts.read_audit import READ_KINDS
from patient_drip.accounts.users import (
    AccountError,
    change_role,
    create_user,
    disable_user,
    enable_user,
    generate_password,
    reset_password,
    set_clinician,
)
from patient_drip.contacts.fields import FieldError
from patient_drip.models import AuditEntry, User
from patient_drip.web.deps import NowDep, ReadSessionDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)
AUDIT_PAGE = 100


def _users_page(request: Request, user: AdminUser, session: SessionDep, *, values: dict[str, str] | None = None,
                errors: dict[str, str] | None = None, created: tuple[str, str] | None = None,
                status_code: int = 200) -> HTMLResponse:
    users = list(session.scalars(select(User).order_by(User.disabled, User.email)))
    return render(request, "admin/users.html", {
        "users": users, "roles": ROLE_HELP, "values": values or {"role": "staff"}, "errors": errors or {},
        "created": created,
    }, user=user, status_code=status_code)


@router.get("/users", response_class=HTMLResponse)
def user_list(request: Request, user: AdminUser, session: ReadSessionDep) -> HTMLResponse:
    return _users_page(request, user, session)


@router.post("/users", response_class=HTMLResponse)
def user_create(request: Request, user: AdminUser, session: SessionDep, now: NowDep,
                email: Annotated[str, Form(max_length=320)], role: Annotated[str, Form(max_length=20)],
                name: Annotated[str, Form(max_length=120)] = "",
                password: Annotated[str, Form(max_length=200)] = "") -> HTMLResponse:
    values = {"email": email, "role": role, "name": name}
    chosen = password or generate_password()
    try:
        created = create_user(session, email, chosen, role, now, user.actor, name=name.strip())
    except FieldError as exc:
        session.rollback()
        return _users_page(request, user, session, values=values, errors={exc.field: exc.message}, status_code=400)
    session.commit()
    # The generated password is shown once, on this response only (never stored in clear).
    return _users_page(request, user, session, created=(created.email, "" if password else chosen))


def _target(session: SessionDep, user_id: int) -> User | None:
    return session.get(User, user_id)


@router.post("/users/{user_id}/disable")
def user_disable(request: Request, user_id: int, user: AdminUser, session: SessionDep, now: NowDep) -> Response:
    target = _target(session, user_id)
    if target is None:
        return render(request, "admin/not_found.html", {"what": "This user"}, user=user, status_code=404)
    try:
        disable_user(session, target, now, user.actor, acting_user_id=user.id)
    except AccountError as exc:
        return _users_page(request, user, session, errors={"form": str(exc)}, status_code=400)
    session.commit()
    return redirect("/admin/users", "user_disabled")


@router.post("/users/{user_id}/enable")
def user_enable(request: Request, user_id: int, user: AdminUser, session: SessionDep, now: NowDep) -> Response:
    target = _target(session, user_id)
    if target is None:
        return render(request, "admin/not_found.html", {"what": "This user"}, user=user, status_code=404)
    enable_user(session, target, now, user.actor)
    session.commit()
    return redirect("/admin/users", "user_enabled")


@router.post("/users/{user_id}/role", response_class=HTMLResponse)
def user_change_role(request: Request, user_id: int, user: AdminUser, session: SessionDep, now: NowDep,
                     role: Annotated[str, Form(max_length=20)]) -> Response:
    target = _target(session, user_id)
    if target is None:
        return render(request, "admin/not_found.html", {"what": "This user"}, user=user, status_code=404)
    try:
        change_role(session, target, role, now, user.actor, acting_user_id=user.id)
    except FieldError as exc:
        # Shown above the table, next to the user it concerns, not on the "Add a user" form's role field.
        return _users_page(request, user, session, errors={"form": f"{target.email}: {exc.message}"}, status_code=400)
    except AccountError as exc:
        return _users_page(request, user, session, errors={"form": str(exc)}, status_code=400)
    session.commit()
    return redirect("/admin/users", "user_role_changed")


@router.post("/users/{user_id}/clinician", response_class=HTMLResponse)
def user_set_clinician(request: Request, user_id: int, user: AdminUser, session: SessionDep, now: NowDep,
                       clinician: Annotated[str, Form(max_length=5)] = "") -> Response:
    """Give a user (typically an admin) the clinician's duties besides their role, or take them away."""
    target = _target(session, user_id)
    if target is None:
        return render(request, "admin/not_found.html", {"what": "This user"}, user=user, status_code=404)
    try:
        set_clinician(session, target, clinician == "on", now, user.actor, acting_user_id=user.id)
    except AccountError as exc:
        return _users_page(request, user, session, errors={"form": str(exc)}, status_code=400)
    session.commit()
    return redirect("/admin/users", "user_clinician_changed")


@router.post("/users/{user_id}/password", response_class=HTMLResponse)
def user_reset_password(request: Request, user_id: int, user: AdminUser, session: SessionDep,
                        now: NowDep) -> HTMLResponse:
    target = _target(session, user_id)
    if target is None:
        return render(request, "admin/not_found.html", {"what": "This user"}, user=user, status_code=404)
    password = reset_password(session, target, now, user.actor)
    session.commit()
    return _users_page(request, user, session, created=(target.email, password))


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """The audit page's filters, parsed; `query_string` rebuilds them for the pager's links."""

    who: str = ""
    kind: str = ""
    since: date | None = None
    until: date | None = None
    contact: int | None = None

    def query_string(self, **extra: object) -> str:
        pairs = {"who": self.who, "kind": self.kind, "since": self.since.isoformat() if self.since else "",
                 "until": self.until.isoformat() if self.until else "", "contact": self.contact or "", **extra}
        return urlencode({key: value for key, value in pairs.items() if value not in ("", None)})


def _day(text: str, field: str, errors: dict[str, str]) -> date | None:
    """A YYYY-MM-DD date from the form, or None (and a message in `errors`) when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    # Bounded years: the first and last days of the calendar overflow once shifted to UTC.
    if day is None or not 1900 <= day.year <= 2999:
        errors[field] = f"{text[:20]!r} is not a date such as 2026-12-01."
        return None
    return day


def audit_query(wanted: AuditFilter, zone: ZoneInfo, before: int | None) -> Select[tuple[AuditEntry]]:
    """The entries `wanted` selects, newest first from `before` (keyset on id). Each filter is served
    by an index (`ix_audit_log_actor_id`, `ix_audit_log_action_id`, `created_at`, `contact_id`); dates
    are whole days in the clinic's zone, `until` included."""
    query = select(AuditEntry)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if wanted.who:
        # A person acts as their email on the pages and as "email (api)" through their tokens.
        query = query.where(AuditEntry.actor.in_([wanted.who, f"{wanted.who} (api)"]))
    if wanted.kind:
        query = query.where(AuditEntry.action == wanted.kind)
    if wanted.since is not None:
        query = query.where(AuditEntry.created_at >= datetime.combine(wanted.since, time(), zone))
    if wanted.until is not None:
        query = query.where(AuditEntry.created_at < datetime.combine(wanted.until + timedelta(days=1), time(), zone))
    if wanted.contact is not None:
        query = query.where(AuditEntry.contact_id == wanted.contact)
    return query.order_by(AuditEntry.id.desc())


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, user: AdminUser, session: ReadSessionDep, before: int | None = None,
              contact: Annotated[str, Query(max_length=40)] = "", who: Annotated[str, Query(max_length=320)] = "",
              kind: Annotated[str, Query(max_length=60)] = "", since: Annotated[str, Query(max_length=40)] = "",
              until: Annotated[str, Query(max_length=40)] = "") -> HTMLResponse:
    """Newest first, 100 a page, keyset on id; filtered by who acted, the kind of entry (a change
    or a read, e.g. `contact_viewed`), a date range and one contact, each through an index."""
    wanted_contact = contact.strip()
    # ASCII and bounded: `isdigit` alone admits "²" (int() raises) and ids beyond any column.
    contact_id = int(wanted_contact) if (wanted_contact.isascii() and wanted_contact.isdigit()
                                         and len(wanted_contact) <= 18) else None
    errors: dict[str, str] = {}
    wanted = AuditFilter(who=who.strip(), kind=kind.strip(), since=_day(since, "since", errors),
                         until=_day(until, "until", errors), contact=contact_id)
    zone = clinic_zone(request.app.state.rt)
    rows = list(session.scalars(audit_query(wanted, zone, before).limit(AUDIT_PAGE + 1)))
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    people = list(session.scalars(select(User.email).order_by(User.email)))
    return render(request, "admin/audit.html", {
        "rows": rows, "older": rows[-1].id if rows and more else None, "contact": contact_id,
        "first_page": before is None, "filters": wanted, "errors": errors, "people": people,
        "kinds": READ_KINDS, "values": {"since": since.strip()[:40], "until": until.strip()[:40]},
    }, user=user)
