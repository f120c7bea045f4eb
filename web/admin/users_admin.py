"""Admins only: staff users (create, disable, enable, reset password) and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from patient_drip.web.admin.auth import AdminUser
from patient_drip.web.admin.common import ROLE_HELP, redirect, render
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


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, user: AdminUser, session: ReadSessionDep, before: int | None = None,
              contact: str = "") -> HTMLResponse:
    """Newest first, 100 a page, keyset on id; optionally one contact's entries (indexed)."""
    wanted = contact.strip()
    # ASCII and bounded: `isdigit` alone admits "²" (int() raises) and ids beyond any column.
    contact_id = int(wanted) if wanted.isascii() and wanted.isdigit() and len(wanted) <= 18 else None
    query = select(AuditEntry)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if contact_id is not None:
        query = query.where(AuditEntry.contact_id == contact_id)
    rows = list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(AUDIT_PAGE + 1)))
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    return render(request, "admin/audit.html", {"rows": rows, "older": rows[-1].id if rows and more else None,
                                                 "contact": contact_id, "first_page": before is None}, user=user)
