"""What routes share: FastAPI dependencies and request helpers. Imports no routes.

The runtime, a session (IMMEDIATE on SQLite, for routes that write) and a read session (DEFERRED,
for pages that only read), the clock, the client's address, the page templates and the public page
renderer; the signed-in person (`CurrentUser`), the two authentication errors, the bearer-token
check with its scope every `/api/v1` route and `/metrics` depend on, and `record_read` (the audit
of a read of patient data, in its own write transaction). Every route module (public pages, webhooks,
metrics, `admin/`) imports from here and `app.py` imports them: no route module imports `app.py`,
so the web package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.orm import Session

from patient_drip.accounts.api_tokens import TokenRefused, check_api_token
from patient_drip.accounts.scopes import SCOPE_HELP, Scope, roles_for_scope
from patient_drip.accounts.users import Role, is_clinician
from patient_drip.contacts.read_audit import ReadKind, audit_read
from patient_drip.runtime import Runtime
from patient_drip.web import i18n

WEB_DIR = Path(__file__).resolve().parent

# One template environment for the public and the staff pages (`web/templates/`, not the message
# `templates/`); `admin.common` adds the staff pages' filters to it.
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
i18n.install(templates.env)  # the public pages in the visitor's language (`web.i18n`)

ALL_ROLES = tuple(role.value for role in Role)


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
    phone = settings.clinic_phone
    base = {"clinic_name": settings.clinic_name, "clinic_phone": phone, "clinic_address": settings.clinic_address,
            # The clinic's number as a link, for translated sentences that name it (`web.i18n`).
            "clinic_phone_link": Markup('<a href="tel:{}">{}</a>').format(phone.replace(" ", ""), phone),
            # The page's language (`web.i18n.page_language`); pages about a person pass theirs.
            "language": i18n.page_language(query=request.query_params.get("lang"),
                                           accept_language=request.headers.get("accept-language"))}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


# -- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentUser:
    """The signed-in person, detached from any database session."""

    id: int
    email: str
    name: str
    role: str
    csrf: str = ""
    via_api: bool = False
    clinician: bool = False  # holds the clinician's duties (`accounts.users.is_clinician`)
    must_enrol: bool = False  # signed in only to enrol a second factor (see admin.auth.require)

    def can(self, *roles: str) -> bool:
        """Admins can do everything; others only what their role is listed for."""
        return self.role == Role.ADMIN or self.role in roles

    @property
    def actor(self) -> str:
        """How this person appears in the audit log and as template author/approver."""
        return self.email

    @property
    def label(self) -> str:
        """The name to show (the email when no name is set)."""
        return self.name or self.email


class NotAuthenticated(Exception):
    """No valid session (or API token): the handler redirects to the login page or answers 401."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason  # said after "Not authenticated" on the API (e.g. the token expired)
        super().__init__(reason or "not authenticated")


class Forbidden(Exception):
    """Signed in, but the role does not allow this (or the CSRF token is missing/wrong), or an API
    token lacks the scope a route needs (then `headers` carries RFC 6750's `insufficient_scope`)."""

    def __init__(self, message: str = "Your role does not allow this page or action.",
                 headers: dict[str, str] | None = None) -> None:
        self.message = message
        self.headers = headers
        super().__init__(message)


bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiToken", bearerFormat="drip_<random>",
    description=("A personal API token created on the staff UI's Account page (`Authorization: Bearer drip_...`). "
                 "Each operation lists the scope it needs; a token holds the scopes chosen when it was made, "
                 "limited by its owner's role, and expires.\n\n"
                 + "\n".join(f"- `{scope.value}`: {SCOPE_HELP[scope]} (roles: {', '.join(roles_for_scope(scope))})"
                             for scope in Scope)),
)


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """Who an API token acts for, and which scopes it may use right now."""

    user: CurrentUser
    scopes: frozenset[Scope]


def api_caller_for_token(rt: Runtime, token: str, now: datetime) -> ApiCaller | str:
    """The caller this API token acts for, or the reason it opens nothing (its use is recorded)."""
    with rt.sessions() as session:
        checked = check_api_token(session, token, now)
        if isinstance(checked, TokenRefused):
            return checked.reason
        user = checked.user
        caller = ApiCaller(CurrentUser(user.id, user.email, user.name, user.role, via_api=True,
                                       clinician=is_clinician(user)), checked.scopes)
        session.commit()
        return caller


def api_require(scope: Scope | None) -> Callable[..., CurrentUser]:
    """Dependency for `/api/v1` and `/metrics`: a valid bearer token that holds `scope` (None: any
    valid token, for `/api/v1/me` only), whose owner's role still allows it.

    401 (`NotAuthenticated`) for a missing, unknown, revoked or expired token or a disabled owner;
    403 (`Forbidden`) naming the missing scope, or the role, when the token cannot use `scope`. The
    scope also goes into the operation's OpenAPI security requirement."""
    roles = roles_for_scope(scope) if scope is not None else ALL_ROLES  # read by the role-matrix test
    needed = [scope.value] if scope is not None else []

    # A default, not `Annotated[...]`: annotations are strings here (postponed), and FastAPI resolves
    # them in the module's globals, where `needed` does not exist.
    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme, scopes=needed),
                   ) -> CurrentUser:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise NotAuthenticated()
        caller = api_caller_for_token(get_runtime(request), credentials.credentials, get_now(request))
        if isinstance(caller, str):
            raise NotAuthenticated(caller)
        if scope is None:
            return caller.user
        challenge = {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope.value}"'}
        if caller.user.role not in roles:
            raise Forbidden(f"Your role ({caller.user.role}) may not use the {scope.value} scope that this needs.",
                            headers=challenge)
        if scope not in caller.scopes:
            raise Forbidden(f"This token lacks the {scope.value} scope; create a token with it on the Account page.",
                            headers=challenge)
        return caller.user

    dependency.__name__ = f"api_require_{scope.value.replace(':', '_') if scope else 'token'}"
    dependency.drip_auth = True  # type: ignore[attr-defined]  # the route-protection test looks for it
    dependency.drip_scope = scope  # type: ignore[attr-defined]  # the every-route-has-a-scope test reads it
    return dependency


def record_read(request: Request, user: CurrentUser, kind: ReadKind, now: datetime, *, count: int,
                contact_id: int | None = None, what: str = "") -> None:
    """Audit one read of patient data through `contacts.read_audit.audit_read`, in its own short
    write transaction: the pages that read use a DEFERRED read session, which must not write (on
    SQLite, turning a read transaction into a write can fail when another writer went first)."""
    # Through a token the actor is "email (api)", as the API's changes are recorded.
    actor = f"{user.actor} (api)" if user.via_api else user.actor
    with get_runtime(request).sessions() as session:
        audit_read(session, actor, kind, now, count=count, contact_id=contact_id, what=what)
        session.commit()
