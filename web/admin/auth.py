"""Sign-in, sessions, roles, CSRF and login throttling for the staff UI.

- The session is a cookie signed with the installation's secret (itsdangerous, its own salt, SHA-256)
  holding the user id, a session generation, a CSRF token and the issue time. HttpOnly, SameSite=Lax,
  `Secure` when DRIP_PUBLIC_URL is https, path `/admin`, valid 12 hours. The user row is read on
  every request, so disabling a user or changing a role takes effect at once.
- Signing out bumps the user's session generation (stored in the `kv` table), which ends every
  session of that user in every process: a copied cookie stops working too.
- Every state-changing request (any method but GET/HEAD/OPTIONS) passes `require(...)`, which checks
  the CSRF token (form field `csrf_token` or header `X-CSRF-Token`) against the session's. The login
  form has its own pre-session token (double-submit cookie).
- Failed sign-ins are counted per email+IP (5 per 15 minutes) and per IP (30 per 15 minutes) in
  this process's memory; over the limit the form answers 429 without checking the password.
- The API's bearer tokens are checked by `web.deps.api_require` (`accounts.api_tokens` makes and
  looks them up); `describe_auth` recognises both kinds of check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.web.admin.common import redirect, render
from patient_drip.contacts.fields import FieldError, normalize_email
from patient_drip.models import audit
from patient_drip.models import User
from patient_drip.runtime import Runtime
from patient_drip.accounts.sessions import end_all_sessions, session_generation
from patient_drip.accounts.users import Role, hash_password, verify_password
from patient_drip.web.deps import ALL_ROLES, CurrentUser, Forbidden, NotAuthenticated, client_ip, read_session

SESSION_COOKIE = "drip_session"
LOGIN_CSRF_COOKIE = "drip_login_csrf"
SESSION_SALT = "drip-admin-session"
SESSION_MAX_AGE = timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A real argon2 hash, verified when the email is unknown so that timing does not reveal which
    addresses have accounts."""
    return hash_password(secrets.token_urlsafe(16))


# -- login throttling ---------------------------------------------------------------------------


class LoginThrottle:
    """Failed sign-ins per key in a sliding window, in memory (one process; enough for `drip serve`)."""

    def __init__(self, per_account: int = 5, per_ip: int = 30, window_seconds: float = 900) -> None:
        self.per_account, self.per_ip, self.window = per_account, per_ip, window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, moment: float) -> deque[float]:
        hits = self._failures.setdefault(key, deque())
        while hits and hits[0] <= moment - self.window:
            hits.popleft()
        return hits

    def retry_after(self, email: str, ip: str, moment: float) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        with self._lock:
            waits = []
            for key, limit in ((f"acct:{email}|{ip}", self.per_account), (f"ip:{ip}", self.per_ip)):
                hits = self._recent(key, moment)
                if len(hits) >= limit:
                    waits.append(int(hits[0] + self.window - moment) + 1)
            return max(waits, default=0)

    def failed(self, email: str, ip: str, moment: float) -> None:
        with self._lock:
            for key in (f"acct:{email}|{ip}", f"ip:{ip}"):
                self._recent(key, moment).append(moment)
            if len(self._failures) > 20_000:  # bound memory under a spray of addresses
                for stale in [k for k, v in self._failures.items() if not v]:
                    del self._failures[stale]

    def succeeded(self, email: str, ip: str) -> None:
        with self._lock:
            self._failures.pop(f"acct:{email}|{ip}", None)


# -- sessions -----------------------------------------------------------------------------------


def _serializer(rt: Runtime) -> URLSafeSerializer:
    return URLSafeSerializer(rt.session_secret, salt=SESSION_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def issue_session(rt: Runtime, session: Session, user: User, now: datetime) -> str:
    """A signed session cookie value for `user` (the caller sets the cookie)."""
    payload = {"u": user.id, "g": session_generation(session, user.id), "c": secrets.token_urlsafe(24),
               "t": int(now.timestamp())}
    return str(_serializer(rt).dumps(payload))


def cookie_secure(rt: Runtime) -> bool:
    return rt.settings.public_url.startswith("https://")


def set_session_cookie(response: Response, rt: Runtime, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=int(SESSION_MAX_AGE.total_seconds()), path="/admin",
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
    if not isinstance(data, dict) or not all(key in data for key in "ugct"):
        return None
    now: datetime = request.app.state.clock()
    issued = data["t"]
    if not isinstance(issued, int) or not 0 <= now.timestamp() - issued < SESSION_MAX_AGE.total_seconds():
        return None
    with read_session(rt) as session:
        user = session.get(User, data["u"]) if isinstance(data["u"], int) else None
        if user is None or user.disabled or data["g"] != session_generation(session, user.id):
            return None
        return CurrentUser(user.id, user.email, user.name, user.role, csrf=str(data["c"]))


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


def require(*roles: str) -> Callable[[Request], Awaitable[CurrentUser]]:
    """Dependency: a signed-in user whose role is one of `roles` (admins always pass).

    On any state-changing method it also checks the CSRF token, so no POST route can skip it."""

    async def dependency(request: Request) -> CurrentUser:
        # The user lookup is database work: off the event loop (a SQLite transaction may wait for
        # the write lock, and waiting on the loop would stall every other request).
        user = await run_in_threadpool(session_user, request)
        if user is None:
            raise NotAuthenticated()
        if not user.can(*roles):
            raise Forbidden()
        if request.method not in SAFE_METHODS:
            await check_csrf(request, user)
        return user

    dependency.__name__ = f"require_{'_'.join(roles) or 'any'}"
    dependency.drip_auth = True  # type: ignore[attr-defined]  # the route-protection test looks for it
    return dependency


AnyUser = Annotated[CurrentUser, Depends(require(*ALL_ROLES))]
StaffUser = Annotated[CurrentUser, Depends(require(Role.STAFF))]
MarketingUser = Annotated[CurrentUser, Depends(require(Role.MARKETING))]
ClinicianUser = Annotated[CurrentUser, Depends(require(Role.CLINICIAN))]
TemplateViewer = Annotated[CurrentUser, Depends(require(Role.MARKETING, Role.CLINICIAN))]
AdminUser = Annotated[CurrentUser, Depends(require(Role.ADMIN))]


# -- login / logout -----------------------------------------------------------------------------

router = APIRouter(prefix="/admin", include_in_schema=False)


def _safe_next(value: str | None) -> str:
    """Only redirect inside the staff UI after sign-in (no open redirect)."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin"


def _login_page(request: Request, *, next_url: str, email: str = "", error: str = "", status_code: int = 200,
                retry_after: int = 0) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "admin/login.html", {"next_url": next_url, "email": email, "error": error,
                                                    "login_csrf": token}, status_code=status_code)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/admin/login", httponly=True,
                        samesite="strict", secure=cookie_secure(request.app.state.rt))
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/admin") -> Response:  # noqa: A002
    if session_user(request) is not None:
        return redirect(_safe_next(next))
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, email: Annotated[str, Form(max_length=320)] = "",
          password: Annotated[str, Form(max_length=1000)] = "", csrf_token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/admin") -> Response:  # noqa: A002
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    next_url = _safe_next(next)
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not csrf_token or not cookie_token or not hmac.compare_digest(csrf_token, cookie_token):
        return _login_page(request, next_url=next_url, email=email, status_code=403,
                           error="The sign-in form expired. Please try again.")
    try:
        address = normalize_email(email) if email.strip() else ""
    except FieldError:
        address = email.strip().lower()
    ip = client_ip(request)
    throttle: LoginThrottle = request.app.state.admin.throttle
    wait = throttle.retry_after(address, ip, now.timestamp())
    if wait:
        minutes = max(1, round(wait / 60))
        return _login_page(request, next_url=next_url, email=email, status_code=429, retry_after=wait,
                           error=f"Too many failed sign-ins. Try again in about {minutes} minute"
                                 f"{'s' if minutes != 1 else ''}, or ask an administrator to reset your password.")
    with rt.sessions() as session:
        user = session.scalar(select(User).where(User.email == address)) if address else None
        valid = verify_password(user.password_hash if user else _dummy_hash(), password)
        if user is None or not valid or user.disabled:
            throttle.failed(address, ip, now.timestamp())
            message = ("This account is disabled. Ask an administrator." if user is not None and valid
                       else "Email or password is not right.")
            return _login_page(request, next_url=next_url, email=email, status_code=401, error=message)
        throttle.succeeded(address, ip)
        audit(session, user.email, "signed_in", now, ip=ip)
        value = issue_session(rt, session, user, now)
        session.commit()
    response = redirect(next_url)
    set_session_cookie(response, rt, value)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
    return response


@router.post("/logout")
def logout(request: Request, user: AnyUser) -> Response:
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    with rt.sessions() as session, session.begin():
        end_all_sessions(session, user.id, now)
        audit(session, user.actor, "signed_out", now)
    response = redirect("/admin/login", "signed_out")
    response.delete_cookie(SESSION_COOKIE, path="/admin", secure=cookie_secure(rt), httponly=True, samesite="lax")
    return response


def login_url_for(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/admin/login?next={quote(target, safe='')}"


def describe_auth(route_call: Any) -> bool:
    """True when a dependency callable is one of ours that authenticates (used by tests)."""
    return bool(getattr(route_call, "drip_auth", False))
