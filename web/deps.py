"""What routes share: FastAPI dependencies and request helpers. Imports no routes.

The runtime, a session (IMMEDIATE on SQLite, for routes that write) and a read session (DEFERRED,
for pages that only read), the clock, the client's address, the page templates and the public page
renderer. Every route module (public pages, webhooks,
metrics, `admin/`) imports from here and `app.py` imports them: no route module imports `app.py`,
so the web package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from patient_drip.runtime import Runtime

WEB_DIR = Path(__file__).resolve().parent

# One template environment for the public and the staff pages (`web/templates/`, not the message
# `templates/`); `admin.common` adds the staff pages' filters to it.
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))

# -- runtime, sessions, clock -------------------------------------------------------------------


def get_runtime(request: Request) -> Runtime:
    """The runtime `create_app` was built with."""
    return request.app.state.rt  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """A session for a route that writes (IMMEDIATE on SQLite: it takes the write lock at once)."""
    with get_runtime(request).sessions() as session:
        yield session


@contextmanager
def read_session(rt: Runtime) -> Iterator[Session]:
    """A session for reading only. On SQLite its transaction is DEFERRED (db.py makes transactions
    IMMEDIATE by default, which takes the write lock): a page view, the sign-in check or the
    funnel count then never holds up the dispatcher or a webhook (WAL lets readers and one writer
    work at once). Never write through it."""
    with rt.sessions() as session:
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """`read_session` as a dependency."""
    with read_session(get_runtime(request)) as session:
        yield session


def get_now(request: Request) -> datetime:
    """The app's clock (tests replace it with a virtual one)."""
    return request.app.state.clock()  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_session)]
# For GET pages: they only read. State-changing routes use SessionDep.
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
NowDep = Annotated[datetime, Depends(get_now)]


def client_ip(request: Request) -> str:
    """The connecting client's address ("unknown" when the server does not know it)."""
    return request.client.host if request.client else "unknown"


def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A public page from `web/templates/`, with the clinic's name, phone and address filled in."""
    settings = get_runtime(request).settings
    base = {"clinic_name": settings.clinic_name, "clinic_phone": settings.clinic_phone,
            "clinic_address": settings.clinic_address}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
