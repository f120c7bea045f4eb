"""The signed-in person's own account: API tokens (scopes limited by the role, an expiry; shown once,
stored as SHA-256; listed and revocable) and password."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from patient_drip.accounts.api_tokens import create_api_token, revoke_api_token
from patient_drip.accounts.scopes import SCOPE_HELP, Scope, default_expiry, expiry_choices, parse_scopes, scopes_for_role
from patient_drip.web.admin.auth import AnyUser, issue_session, set_session_cookie
from patient_drip.web.admin.common import redirect, render
from patient_drip.models import ApiToken, User
from patient_drip.accounts.passwords import MIN_PASSWORD
from patient_drip.accounts.users import change_own_password
from patient_drip.contacts.fields import FieldError
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, get_now

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page(request: Request, user: CurrentUser, session: SessionDep, *, new_token: str = "",
          errors: dict[str, str] | None = None, values: dict[str, Any] | None = None,
          status_code: int = 200) -> HTMLResponse:
    tokens = list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())))
    max_days = request.app.state.rt.settings.api_token_max_days
    allowed = scopes_for_role(user.role)
    row = session.get(User, user.id)
    return render(request, "admin/account.html", {
        "tokens": tokens, "new_token": new_token, "errors": errors or {}, "min_password": MIN_PASSWORD,
        "scopes": [(scope.value, SCOPE_HELP[scope]) for scope in Scope if scope in allowed],
        "token_scopes": {t.id: sorted(s.value for s in parse_scopes(t.scopes)) for t in tokens},
        "expiry_choices": expiry_choices(max_days), "values": values or {"days": default_expiry(max_days)},
        "now": get_now(request),  # which tokens have expired
        "mfa_enabled": row is not None and row.totp_secret is not None,
    }, user=user, status_code=status_code)


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, user: AnyUser, session: ReadSessionDep) -> HTMLResponse:
    return _page(request, user, session)


@router.post("/account/tokens", response_class=HTMLResponse)
def token_create(request: Request, user: AnyUser, session: SessionDep, now: NowDep,
                 name: Annotated[str, Form(max_length=100)] = "",
                 scopes: Annotated[list[str] | None, Form()] = None,
                 days: Annotated[str, Form(max_length=6)] = "") -> HTMLResponse:
    chosen = scopes or []
    max_days = request.app.state.rt.settings.api_token_max_days
    # Left out (a script): the default lifetime. Not a number: -1, which the service refuses as "not
    # one of the choices" (a field error on the form, not a 422).
    lifetime = default_expiry(max_days) if not days else int(days) if days.isascii() and days.isdigit() else -1
    values = {"name": name, "scopes": chosen, "days": lifetime}
    try:
        token = create_api_token(session, user.id, name, chosen, lifetime, now, user.actor,
                                 max_days=max_days)
    except FieldError as exc:
        session.rollback()
        return _page(request, user, session, errors={exc.field: exc.message}, values=values, status_code=400)
    session.commit()
    return _page(request, user, session, new_token=token)  # shown once, on this response only


@router.post("/account/tokens/{token_id}/revoke")
def token_revoke(request: Request, token_id: int, user: AnyUser, session: SessionDep, now: NowDep) -> Response:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        return render(request, "admin/not_found.html", {"what": "This token"}, user=user, status_code=404)
    if revoke_api_token(session, token, now, user.actor):
        session.commit()
    return redirect("/admin/account", "token_revoked")


@router.post("/account/password", response_class=HTMLResponse)
def password_change(request: Request, user: AnyUser, session: SessionDep, now: NowDep,
                    current: Annotated[str, Form(max_length=1000)], new: Annotated[str, Form(max_length=1000)],
                    confirm: Annotated[str, Form(max_length=1000)]) -> Response:
    row = session.get(User, user.id)
    if row is None:
        return _page(request, user, session, errors={"current": "This is not your current password."}, status_code=400)
    try:
        change_own_password(session, row, current, new, confirm, now, user.actor)  # ends every other session
    except FieldError as exc:
        return _page(request, user, session, errors={exc.field: exc.message}, status_code=400)
    value = issue_session(request.app.state.rt, session, row, now)  # this device stays signed in
    session.commit()
    response = redirect("/admin/account", "password_changed")
    set_session_cookie(response, request.app.state.rt, value)
    return response
