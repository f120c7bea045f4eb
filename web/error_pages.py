"""Error pages a person can read: 404, 405, 400 and 500 as HTML in the clinic's style for browsers, on
the public pages and the staff app alike; machines (`/api/`, `/webhooks/`, `/metrics`, a client that
asks for JSON) keep FastAPI's JSON answers, which the API documents.

A staff page whose address holds a value of the wrong kind (`/admin/contacts/abc`) is a page that does
not exist: 404, not a validation report. The staff app supplies its own renderer (`StaffPage`), so
this module imports nothing of `web.admin`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from patient_drip.web.deps import page

log = logging.getLogger("drip.web")

MACHINE_PREFIXES = ("/api/", "/webhooks/", "/metrics", "/healthz")
# (title, what to say); the page adds where to go from here
MESSAGES: dict[int, tuple[str, str]] = {
    400: ("That address cannot be used", "Part of the address is not in a form we understand."),
    404: ("Page not found", "There is no page at this address. It may have been copied only in part."),
    405: ("Page not found", "This address cannot be opened this way."),
    500: ("Something went wrong", "Something went wrong on our side and it has been logged. Please try again "
                                  "in a moment."),
}
# Renders a staff-styled error page: (request, status, title, message) -> response
StaffPage = Callable[[Request, int, str, str], Response]


def wants_html(request: Request) -> bool:
    """A browser asking for a page, not a program asking for data."""
    if request.url.path.startswith(MACHINE_PREFIXES):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/json" not in accept


def error_page(request: Request, status: int, staff_page: StaffPage | None) -> Response:
    title, message = MESSAGES.get(status, MESSAGES[404 if status < 500 else 500])
    if staff_page is not None and request.url.path.startswith("/admin"):
        try:
            return staff_page(request, status, title, message)
        except Exception:  # noqa: BLE001 - the staff layout needs the database; the public page does not
            log.warning("staff error page could not be drawn; answering with the public one")
    return page(request, "error.html", {"title": title, "message": message, "status": status}, status)


def install_error_pages(app: FastAPI, staff_page: StaffPage | None) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in MESSAGES and wants_html(request):
            return error_page(request, exc.status_code, staff_page)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.method == "GET" and wants_html(request):
            in_path = any(error.get("loc", ("",))[0] == "path" for error in exc.errors())
            return error_page(request, 404 if in_path else 400, staff_page)
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(500)
    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette logs the exception itself (with its stack) after this answer; the page says nothing of it.
        if wants_html(request):
            return error_page(request, 500, staff_page)
        return JSONResponse({"error": MESSAGES[500][1]}, status_code=500)



