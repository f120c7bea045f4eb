"""The sign-in pages: password, then the second factor when the user has one; sign-out.

Both steps go through `accounts.signin` (throttled per account and per network before anything is
checked; 429 with Retry-After). Between the two steps the browser holds a short-lived signed cookie
(`drip_mfa_pending`, 5 minutes, path `/admin/login`) naming the user who passed the password step;
it is not a session and opens nothing else. The forms are protected by a pre-session double-submit
token (`drip_login_csrf`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer

from patient_drip.accounts.mfa import has_mfa
from patient_drip.accounts.sessions import end_all_sessions, session_generation
from patient_drip.accounts.signin import (
    Outcome,
    SignInResult,
    ThrottlePolicy,
    check_code_step,
    check_password_step,
    record_sign_in,
)
from patient_drip.contacts.fields import FieldError, normalize_email
from patient_drip.models import User, audit
from patient_drip.runtime import Runtime
from patient_drip.web.admin.auth import (
    SESSION_COOKIE,
    EnrollingUser,
    cookie_secure,
    issue_session,
    safe_next,
    session_user,
    set_session_cookie,
)
from patient_drip.web.admin.common import redirect, render
from patient_drip.web.deps import client_ip, read_session

LOGIN_CSRF_COOKIE = "drip_login_csrf"
PENDING_COOKIE = "drip_mfa_pending"
PENDING_SALT = "drip-admin-mfa-pending"
PENDING_SECONDS = 300

router = APIRouter(prefix="/admin", include_in_schema=False)


def _throttled_message(wait: int) -> str:
    minutes = max(1, round(wait / 60))
    return (f"Too many failed sign-ins. Try again in about {minutes} minute{'s' if minutes != 1 else ''}, "
            "or ask an administrator to reset your password.")


def form_page(request: Request, template: str, context: dict[str, object], *, status_code: int = 200,
              retry_after: int = 0) -> HTMLResponse:
    """A page of the sign-in forms (before any session), with their double-submit form token."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, template, {**context, "login_csrf": token}, status_code=status_code)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/admin/login", httponly=True,
                        samesite="strict", secure=cookie_secure(request.app.state.rt))
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _login_page(request: Request, *, next_url: str, email: str = "", error: str = "", status_code: int = 200,
                retry_after: int = 0) -> HTMLResponse:
    return form_page(request, "admin/login.html", {"next_url": next_url, "email": email, "error": error},
                      status_code=status_code, retry_after=retry_after)


def _code_page(request: Request, *, next_url: str, error: str = "", status_code: int = 200,
               retry_after: int = 0) -> HTMLResponse:
    return form_page(request, "admin/login_code.html", {"next_url": next_url, "error": error},
                      status_code=status_code, retry_after=retry_after)


def form_token_ok(request: Request, sent: str) -> bool:
    """The pre-session double-submit token of the sign-in forms matches its cookie."""
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    # Bytes: compare_digest refuses str with non-ASCII characters (a 500 for a typed 'é').
    return bool(sent and cookie_token and hmac.compare_digest(sent.encode(), cookie_token.encode()))


def _pending_serializer(rt: Runtime) -> URLSafeSerializer:
    return URLSafeSerializer(rt.session_secret, salt=PENDING_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def _read_pending(request: Request, now: datetime) -> int | None:
    """The user who passed the password step in this browser in the last 5 minutes, if any (and
    whose sessions were not ended since: a password reset or sign-out everywhere voids it too)."""
    raw = request.cookies.get(PENDING_COOKIE, "")
    if not raw or len(raw) > 500:
        return None
    try:
        data = _pending_serializer(request.app.state.rt).loads(raw)
    except (BadSignature, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("t"), int):
        return None
    if not 0 <= now.timestamp() - data["t"] < PENDING_SECONDS:
        return None
    with read_session(request.app.state.rt) as session:
        if data.get("g") != session_generation(session, data["u"]):
            return None
    return int(data["u"])


def _signed_in(request: Request, user_id: int, next_url: str, now: datetime, factor: str = "") -> Response:
    rt: Runtime = request.app.state.rt
    with rt.sessions() as session:
        user = session.get(User, user_id)
        assert user is not None  # the step just found it
        record_sign_in(session, user, client_ip(request), now, factor)
        value = issue_session(rt, session, user, now)
        session.commit()
    response = redirect(next_url)
    set_session_cookie(response, rt, value)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
    response.delete_cookie(PENDING_COOKIE, path="/admin/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/admin") -> Response:  # noqa: A002
    if session_user(request) is not None:
        return redirect(safe_next(next))
    return _login_page(request, next_url=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, email: Annotated[str, Form(max_length=320)] = "",
          password: Annotated[str, Form(max_length=1000)] = "", csrf_token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/admin") -> Response:  # noqa: A002
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    next_url = safe_next(next)
    if not form_token_ok(request, csrf_token):
        return _login_page(request, next_url=next_url, email=email, status_code=403,
                           error="The sign-in form expired. Please try again.")
    try:
        address = normalize_email(email) if email.strip() else ""
    except FieldError:
        address = email.strip().lower()
    result = check_password_step(rt.sessions, address, password, client_ip(request), now,
                                 ThrottlePolicy.from_settings(rt.settings))
    if result.outcome is Outcome.THROTTLED:
        return _login_page(request, next_url=next_url, email=email, status_code=429, retry_after=result.retry_after,
                           error=_throttled_message(result.retry_after))
    if result.outcome is not Outcome.OK or result.user_id is None:
        message = ("This account is disabled. Ask an administrator." if result.outcome is Outcome.DISABLED
                   else "Email or password is not right.")
        return _login_page(request, next_url=next_url, email=email, status_code=401, error=message)
    with rt.sessions() as session:
        user = session.get(User, result.user_id)
        second_step = user is not None and has_mfa(user)
    if not second_step:
        return _signed_in(request, result.user_id, next_url, now)
    response = redirect(f"/admin/login/code?next={quote(next_url, safe='/')}")
    with rt.sessions() as session:
        generation = session_generation(session, result.user_id)
    pending = _pending_serializer(rt).dumps({"u": result.user_id, "t": int(now.timestamp()), "g": generation})
    response.set_cookie(PENDING_COOKIE, str(pending), max_age=PENDING_SECONDS, path="/admin/login", httponly=True, samesite="strict",
                        secure=cookie_secure(rt))
    return response


@router.get("/login/code", response_class=HTMLResponse)
def code_form(request: Request, next: str = "/admin") -> Response:  # noqa: A002
    if _read_pending(request, request.app.state.clock()) is None:
        return redirect(f"/admin/login?next={quote(safe_next(next), safe='/')}")
    return _code_page(request, next_url=safe_next(next))


@router.post("/login/code", response_class=HTMLResponse)
def code_submit(request: Request, code: Annotated[str, Form(max_length=100)] = "",
                csrf_token: Annotated[str, Form(max_length=200)] = "",
                next: Annotated[str, Form(max_length=2000)] = "/admin") -> Response:  # noqa: A002
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    next_url = safe_next(next)
    user_id = _read_pending(request, now)
    if user_id is None:
        return _login_page(request, next_url=next_url, status_code=401,
                           error="Please start again: enter your email and password (the sign-in took too long, or was ended).")
    if not form_token_ok(request, csrf_token):
        return _code_page(request, next_url=next_url, status_code=403, error="The form expired. Please try again.")
    result: SignInResult = check_code_step(rt.sessions, user_id, code, client_ip(request), now,
                                           ThrottlePolicy.from_settings(rt.settings))
    if result.outcome is Outcome.THROTTLED:
        return _code_page(request, next_url=next_url, status_code=429, retry_after=result.retry_after,
                          error=_throttled_message(result.retry_after))
    if result.outcome is not Outcome.OK:
        return _code_page(request, next_url=next_url, status_code=401,
                          error="That code is not right (or was already used). Enter the current 6-digit code "
                                "from your app, or one of your recovery codes.")
    return _signed_in(request, user_id, next_url, now, result.factor)


@router.post("/logout")
def logout(request: Request, user: EnrollingUser) -> Response:
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    with rt.sessions() as session, session.begin():
        end_all_sessions(session, user.id, now)
        audit(session, user.actor, "signed_out", now)
    response = redirect("/admin/login", "signed_out")
    response.delete_cookie(SESSION_COOKIE, path="/admin", secure=cookie_secure(rt), httponly=True, samesite="lax")
    return response


