"""The app factory: `create_app` builds the whole HTTP surface for one runtime.

Middleware (security headers), the static files, the error handlers every route shares, and the
routers: public pages (`public`), provider webhooks (`webhooks`), scheduler webhooks (`booking_webhooks`), `/metrics` and the
staff UI and JSON API (`admin`). Only entry points (the CLI, tests, scripts) import this module; the
routes take what they share from `deps`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, OperationalError

from patient_drip.runtime import Runtime, utcnow
from patient_drip.web import admin, booking_webhooks, metrics, public, webhooks
from patient_drip.web.deps import WEB_DIR
from patient_drip.web.error_pages import install_error_pages
from patient_drip.web.limits import BodyLimit

log = logging.getLogger("drip.web")

_PRIVATE_PREFIXES = ("/admin", "/api/v1", "/u/")


def create_app(rt: Runtime, *, clock: Callable[[], datetime] = utcnow, with_admin: bool = True) -> FastAPI:
    """The whole HTTP surface for one runtime. `clock` is replaced by tests with a virtual one;
    `with_admin=False` serves the public pages alone (no webhooks, metrics or staff UI)."""
    app = FastAPI(title="patient-drip", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.rt = rt
    app.state.clock = clock
    app.mount("/static", StaticFiles(directory=str(WEB_DIR / "static")), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # Browsers ask for /favicon.ico whatever the page says; the same small SVG as the pages' icon.
        return Response((WEB_DIR / "static" / "favicon.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})

    # Added before the headers middleware, so it runs inside it: a 413 carries the security headers too.
    app.add_middleware(BodyLimit, settings=rt.settings)

    hsts = rt.settings.public_url.startswith("https://")  # served over TLS (behind a proxy): browsers stay on it

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith(_PRIVATE_PREFIXES):
            # Patient data (the staff API) and a patient's own choices (the preference page): no
            # browser or proxy cache may keep a copy.
            response.headers.setdefault("Cache-Control", "no-store")
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def value_out_of_range(request: Request, exc: Exception) -> Response:
        """A value from the request that the database cannot even compare or store (an id beyond
        64 bits: SQLite raises OverflowError, PostgreSQL DataError; a NUL character: DataError):
        the request is wrong, not the server. Answered in FastAPI's validation-error shape, which
        every operation documents."""
        log.info("value out of range in %s %s (%s)", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"detail": [{"loc": ["request"], "type": "value_error",
                                         "msg": "a value in the request cannot be used: a number out of range, "
                                                "or a character (such as NUL) that cannot be stored"}]},
                            status_code=422)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> Response:
        """The database is restarting, unreachable or (SQLite) locked past the busy timeout: say
        "try again" with 503 + Retry-After (providers retry their webhooks on it), never a 500.
        The transaction was rolled back, so nothing is stored half-way. The log names the error
        class only: the exception text carries SQL parameters, which can be patient data."""
        log.warning("database unavailable for %s %s (%s)", request.method, request.url.path,
                    type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        message = "The service is busy right now. Please try again in a minute."
        if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(("/api/", "/webhooks/")):
            return HTMLResponse(f"<!doctype html><title>Busy</title><p>{message}</p>", status_code=503,
                                headers={"Retry-After": "30"})
        return JSONResponse({"error": message}, status_code=503, headers={"Retry-After": "30"})

    install_error_pages(app, admin.staff_error_page if with_admin else None)
    app.include_router(public.router)
    if with_admin:
        app.include_router(webhooks.router)
        app.include_router(booking_webhooks.router)
        app.include_router(metrics.router)
        admin.mount(app, rt)
    return app
