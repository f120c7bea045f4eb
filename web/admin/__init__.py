"""The staff web app (`/admin`) and the staff JSON API (`/api/v1`), mounted by `create_app`.

One router per resource; every private route depends on `admin.auth.require(...)` (session +
role + CSRF) or `web.deps.api_require(...)` (bearer token + role). Imports `web.deps` and its own
modules, never the app factory. In-process state (CSV import jobs, preview cache)
lives on `app.state.admin`: fine for one `drip serve` process, which is how the UI is deployed.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from patient_drip.runtime import Runtime
from patient_drip.web.admin import (
    account,
    api_v1,
    bookings,
    campaigns,
    claims_pages,
    contacts,
    conversation,
    dashboard,
    funnel,
    imports,
    login,
    messages,
    mfa_setup,
    password_reset,
    replies,
    review,
    settings_pages,
    tasks,
    templates_editor,
    users_admin,
)
from patient_drip.web.admin.auth import MustEnrol, login_url_for, session_user
from patient_drip.web.admin.common import render
from patient_drip.web.admin.funnel_view import FunnelCache
from patient_drip.web.admin.imports import ImportJobs
from patient_drip.web.deps import Forbidden, NotAuthenticated


class PreviewCache:
    """Rendered email previews by random key, so a sandboxed iframe can load them by URL.

    (An `srcdoc` iframe would inherit the app's CSP, which forbids the inline styles emails use.)"""

    def __init__(self, size: int = 200, ttl_seconds: float = 1800) -> None:
        self.size, self.ttl = size, ttl_seconds
        self._items: OrderedDict[str, tuple[int, float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, user_id: int, html: str) -> str:
        key = secrets.token_urlsafe(18)
        with self._lock:
            self._items[key] = (user_id, time.monotonic(), html)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return key

    def get(self, user_id: int, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
        if item is None or item[0] != user_id or time.monotonic() - item[1] > self.ttl:
            return None
        return item[2]


@dataclass
class AdminState:
    previews: PreviewCache = field(default_factory=PreviewCache)
    imports: ImportJobs = field(default_factory=ImportJobs)
    funnel_cache: FunnelCache = field(default_factory=FunnelCache)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/api/") or ("application/json" in accept and "text/html" not in accept)


def staff_error_page(request: Request, status: int, title: str, message: str) -> Response:
    """A 404/400/500 inside the staff app, in its layout (with the nav when someone is signed in)."""
    return render(request, "admin/error.html", {"title": title, "message": message}, user=session_user(request),
                  status_code=status)


def mount(app: FastAPI, rt: Runtime) -> None:
    """Add the staff UI and API routers, their in-process state and their error pages."""
    app.state.admin = AdminState()
    for module in (login, password_reset, mfa_setup, dashboard, funnel, messages, contacts, imports, replies,
                   conversation, review, templates_editor, claims_pages, campaigns, users_admin, settings_pages, account,
                   bookings, tasks):
        app.include_router(module.router)
    app.include_router(api_v1.router)
    api_v1.customize_openapi(app)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if request.url.path.startswith("/api/"):
            detail = f"Not authenticated: {exc.reason}." if exc.reason else \
                "Not authenticated: send Authorization: Bearer <API token>."
            return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if _wants_json(request):
            return JSONResponse({"detail": "Your session has ended. Sign in again."}, status_code=401)
        target = login_url_for(request) if request.method == "GET" else "/admin/login"
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(MustEnrol)
    async def must_enrol(request: Request, exc: MustEnrol) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "Set up two-step sign-in first (Account → Two-step sign-in)."},
                                status_code=403)
        return RedirectResponse("/admin/account/mfa", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=403, headers=exc.headers)
        return render(request, "admin/forbidden.html", {"message": exc.message}, user=session_user(request),
                      status_code=403)
