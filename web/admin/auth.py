"""Sessions, roles and CSRF for the staff UI (the sign-in pages are `admin.login`).

- The session cookie is signed with the installation's secret (itsdangerous, its own salt, SHA-256)
  and holds the user id, a session generation, the id of a server-side session row
  (`accounts.sessions`) and a CSRF token. HttpOnly, SameSite=Lax, `Secure` when DRIP_PUBLIC_URL is
  https, path `/admin`. On every request the user row and the session row are read: a disabled user,
  a changed role, a session idle longer than DRIP_SESSION_IDLE_MINUTES or older than
  DRIP_SESSION_LIFETIME_HOURS take effect at once, on the server's clock.
- Signing out ends every session of the user (`accounts.sessions.end_all_sessions`), in every process:
  a copied cookie stops working too.
- A user whose role requires a second factor and who has none is signed in only to enrol: every
  route but the enrolment page and sign-out answers with a redirect there (`MustEnrol`).
- Every state-changing request (any method but GET/HEAD/OPTIONS) passes `require(...)`, which checks
  the CSRF token (form field `csrf_token` or header `X-CSRF-Token`) against the session's.
- The API's bearer tokens are checked by `web.deps.api_require` (`accounts.api_tokens` makes and
  looks them up); `describe_auth` recognises both kinds of check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from patient_drip.accounts.mfa import needs_enrolment
from patient_drip.accounts.sessions import (
    SessionPolicy,
    live_session,
    needs_touch,
    session_generation,
    start_session,
    touch_session,
)
from patient_drip.accounts.users import Role
from patient_drip.models import User
from patient_drip.runtime import Runtime
from patient_drip.accounts.users import is_clinician
from patient_drip.web.deps import ALL_ROLES, CurrentUser, Forbidden, NotAuthenticated, read_session

SESSION_COOKIE = "drip_session"
LOGIN_CSRF_COOKIE = "drip_login_csrf"
SESSION_SALT = "drip-admin-session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


# -- sessions -----------------------------------------------------------------------------------


def _serializer(rt: Runtime) -> URLSafeSerializer:
    return URLSafeSerializer(rt.session_secret, salt=SESSION_SALT, signer_kwargs={"digest_method": hashlib.sha256})


class MustEnrol(Exception):
    """Signed in, but the role requires a second factor and this user has none yet."""


def issue_session(rt: Runtime, session: Session, user: User, now: datetime) -> str:
    """A signed session cookie value for `user`, for a new server-side session (the caller commits
    and sets the cookie)."""
    payload = {"u": user.id, "g": session_generation(session, user.id), "c": secrets.token_urlsafe(24),
               "s": start_session(session, user.id, now)}
    return str(_serializer(rt).dumps(payload))


def cookie_secure(rt: Runtime) -> bool:
    return rt.settings.public_url.startswith("https://")


def set_session_cookie(response: Response, rt: Runtime, value: str) -> None:
    # The browser may keep it as long as a session can live; the server decides when it has ended.
    response.set_cookie(SESSION_COOKIE, value, max_age=rt.settings.session_lifetime_hours * 3600, path="/admin",
                        httponly=True, samesite="lax", secure=cookie_secure(rt))


def _read_session(request: Request) -> CurrentUser | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 1000:
        return None
    rt: Runtime = request.app.state.rt
    try:
        data = _serializer(rt).loads(raw)
    except (BadSignature, ValueError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not all(key in data for key in "ugcs") or not isinstance(data["s"], str):
        return None
    now: datetime = request.app.state.clock()
    policy = SessionPolicy.from_settings(rt.settings)
    with read_session(rt) as session:
        user = session.get(User, data["u"]) if isinstance(data["u"], int) else None
        if user is None or user.disabled or data["g"] != session_generation(session, user.id):
            return None
        row = live_session(session, data["s"], user.id, now, policy)
        if row is None:
            return None
        touch = needs_touch(row, now)
        current = CurrentUser(user.id, user.email, user.name, user.role, csrf=str(data["c"]),
                              clinician=is_clinician(user))
        if needs_enrolment(session, user):
            current = replace(current, must_enrol=True)
    if touch:  # a write, at most once a minute per session: not in the read transaction
        with rt.sessions() as session:
            touch_session(session, data["s"], now)
            session.commit()
    return current


def session_user(request: Request) -> CurrentUser | None:
    """The signed-in user for this request (read once, then cached on the request)."""
    if not hasattr(request.state, "admin_user"):
        request.state.admin_user = _read_session(request)
    return request.state.admin_user  # type: ignore[no-any-return]


async def check_csrf(request: Request, user: CurrentUser) -> None:
    """The request carries the session's CSRF token (header for fetch(), form field for forms)."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else ""
    if not sent or not user.csrf or not hmac.compare_digest(sent, user.csrf):
        raise Forbidden("This form has expired or did not come from this site. Reload the page and try again.")


def require(*roles: str, enrolling: bool = False) -> Callable[[Request], Awaitable[CurrentUser]]:
    """Dependency: a signed-in user whose role is one of `roles` (admins always pass).

    On any state-changing method it also checks the CSRF token, so no POST route can skip it. A user
    who must enrol a second factor first gets `MustEnrol`, except on the routes made with
    `enrolling=True` (the enrolment page and sign-out)."""

    async def dependency(request: Request) -> CurrentUser:
        # The user lookup is database work: off the event loop (a SQLite transaction may wait for
        # the write lock, and waiting on the loop would stall every other request).
        user = await run_in_threadpool(session_user, request)
        if user is None:
            raise NotAuthenticated()
        if user.must_enrol and not enrolling:
            raise MustEnrol()
        if not user.can(*roles):
            raise Forbidden()
        if request.method not in SAFE_METHODS:
            await check_csrf(request, user)
        return user

    dependency.__name__ = f"require_{'_'.join(roles) or 'any'}{'_enrolling' if enrolling else ''}"
    dependency.drip_auth = True  # type: ignore[attr-defined]  # the route-protection test looks for it
    return dependency


def require_clinician() -> Callable[[Request], Awaitable[CurrentUser]]:
    """Dependency: a signed-in user who holds the clinician's duties (`accounts.users.is_clinician`);
    an admin who is not also a clinician is refused. CSRF as in `require`."""
    roles = (Role.CLINICIAN,)  # for route introspection (tests/test_attackers.py); the flag decides
    inner = require(*ALL_ROLES)

    async def dependency(request: Request) -> CurrentUser:
        user = await inner(request)
        if not user.clinician or not roles:
            raise Forbidden("Only a clinician can do this: medical wording needs clinical review. An admin can be "
                            "given the clinician's duties on the Users page.")
        return user

    dependency.__name__ = "require_clinician"
    dependency.drip_auth = True  # type: ignore[attr-defined]
    return dependency


AnyUser = Annotated[CurrentUser, Depends(require(*ALL_ROLES))]
StaffUser = Annotated[CurrentUser, Depends(require(Role.STAFF))]
MarketingUser = Annotated[CurrentUser, Depends(require(Role.MARKETING))]
# The inbox (patients' texts, replying, crisis threads): the front desk and clinicians; not marketing.
InboxUser = Annotated[CurrentUser, Depends(require(Role.STAFF, Role.CLINICIAN))]
ClinicianUser = Annotated[CurrentUser, Depends(require(Role.CLINICIAN))]  # may open clinical pages
# Holds the clinician's duties (role clinician, or the clinician flag): approves templates and
# manages the claims library. An admin without the flag is refused.
ApprovingClinician = Annotated[CurrentUser, Depends(require_clinician())]
TemplateViewer = Annotated[CurrentUser, Depends(require(Role.MARKETING, Role.CLINICIAN))]
AdminUser = Annotated[CurrentUser, Depends(require(Role.ADMIN))]
# Signed in, possibly only to enrol a second factor: the enrolment page and sign-out.
EnrollingUser = Annotated[CurrentUser, Depends(require(*ALL_ROLES, enrolling=True))]


# -- where to send people ------------------------------------------------------------------------


def safe_next(value: str | None) -> str:
    """Only redirect inside the staff UI after sign-in (no open redirect)."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin"


def login_url_for(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/admin/login?next={quote(target, safe='')}"


def describe_auth(route_call: Any) -> bool:
    """True when a dependency callable is one of ours that authenticates (used by tests)."""
    return bool(getattr(route_call, "drip_auth", False))
