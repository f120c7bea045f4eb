"""Staff-side builders: users with a pre-computed password hash, signed-in test clients, API
tokens, and runtimes on an initialised database (what `drip init` leaves); plus the `srt` and
`client` fixtures of the admin and API tests (import them where used)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from patient_drip import db
from patient_drip.accounts.mfa import ALWAYS_REQUIRED, TOTP_STEP_SECONDS
from patient_drip.accounts.users import hash_password
from patient_drip.content.claim_library import seed_library
from patient_drip.content.template_store import sync_from_files
from sqlalchemy import delete

from patient_drip.keys import KEY_CHECK_ROW
from patient_drip.models import ApiToken, KeyValue, User
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.accounts.api_tokens import new_api_token, token_digest
from patient_drip.accounts.scopes import Scope, format_scopes, scopes_for_role
from patient_drip.web.admin.auth import SESSION_COOKIE, issue_session
from patient_drip.web.app import create_app
from support.builders import START, VirtualClock, make_settings
from support.databases import TEMPLATES

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # once per test session: argon2 is deliberately slow
BASE_URL = "https://clinic.test"
ROLES = ("admin", "staff", "marketing", "clinician")


def add_user(rt: Runtime, role: str, email: str | None = None, *, name: str = "", now: datetime = START,
             disabled: bool = False, clinician: bool = False, mfa: bool | None = None) -> User:
    """A staff user whose password is PASSWORD (inserted directly; create_user is tested on its own).
    `clinician`: also holds the clinician's duties (an admin who is the clinic's clinician).

    With `mfa` (by default: when the role always requires it, admin and clinician) the user has a TOTP
    second factor already set up; `totp_code` gives its codes."""
    with_mfa = role in ALWAYS_REQUIRED if mfa is None else mfa
    with rt.sessions() as session, session.begin():
        user = User(email=email or f"{role}@clinic.test", name=name or role.capitalize(), password_hash=_HASH,
                    role=role, disabled=disabled, clinician=clinician, created_at=now,
                    totp_secret=pyotp.random_base32(32) if with_mfa else None, mfa_enabled_at=now if with_mfa else None)
        session.add(user)
        session.flush()
        session.expunge(user)
        return user


def token_for(rt: Runtime, role: str, *, email: str | None = None, revoked: bool = False, disabled: bool = False,
              now: datetime | None = None, scopes: Iterable[str] | None = None,
              expires_at: datetime | None = None, user: User | None = None) -> dict[str, str]:
    """Authorization headers with a bearer token for a new user with `role` (or for `user`), stored
    as the Account page stores one. By default it holds every scope the role may hold and expires
    90 days after `now` (START)."""
    owner = user or add_user(rt, role, email, disabled=disabled)
    created = now or START
    token = new_api_token()
    held = format_scopes(Scope(s) for s in scopes) if scopes is not None else format_scopes(scopes_for_role(role))
    with rt.sessions() as session, session.begin():
        session.add(ApiToken(user_id=owner.id, name="test", token_hash=token_digest(token), scopes=held,
                             created_at=created, expires_at=expires_at or created + timedelta(days=90),
                             revoked_at=created if revoked else None))
    return {"Authorization": f"Bearer {token}"}


def totp_code(rt: Runtime, user_id: int, now: datetime) -> str:
    """The code the user's authenticator app shows at `now` (as the app computes it, with pyotp)."""
    with rt.sessions() as session:
        secret = session.get(User, user_id).totp_secret
    assert secret, "this user has no second factor"
    return pyotp.TOTP(secret).at(now)


def next_totp_time(rt: Runtime, user_id: int, now: datetime) -> datetime:
    """`now`, or the start of the next 30-second step when this step's code was already used (a code
    is accepted once): what a person does by waiting for the app's next code."""
    with rt.sessions() as session:
        last = session.get(User, user_id).totp_last_step
    step = int(now.timestamp()) // TOTP_STEP_SECONDS
    if last is None or step > last:
        return now
    return datetime.fromtimestamp((last + 1) * TOTP_STEP_SECONDS, tz=now.tzinfo)


def make_client(rt: Runtime, clock: VirtualClock) -> TestClient:
    """A test client of the whole app at BASE_URL that does not follow redirects."""
    return TestClient(create_app(rt, clock=clock), base_url=BASE_URL, follow_redirects=False)


def sign_in_as(client: TestClient, rt: Runtime, user: User, now: datetime) -> str:
    """Give `client` a session for `user` (the same signed cookie the login form issues). Returns the
    CSRF token for that session."""
    with rt.sessions() as session, session.begin():
        value = issue_session(rt, session, session.get(User, user.id), now)
    client.cookies.set(SESSION_COOKIE, value, domain="clinic.test", path="/admin")
    return csrf_of(client)


def csrf_of(client: TestClient) -> str:
    """The CSRF token of the client's session, as the pages carry it."""
    page = client.get("/admin/account")
    assert page.status_code == 200, page.status_code
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def login_form_token(client: TestClient) -> str:
    """The form token of a fresh sign-in page."""
    page = client.get("/admin/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _initialise(url: str) -> None:
    """What `drip init` does to a migrated database, but the first admin: import the templates and
    load the claims library."""
    settings = make_settings(url)
    rt = build_runtime(settings)
    with rt.sessions() as session, session.begin():
        sync_from_files(session, settings.templates_dir, START, "drip init")
        seed_library(session, settings.policy_dir, START)
        # Each copy of this template is a new installation: its first runtime records its keys'
        # fingerprint (a test may give it other keys than the default test key).
        session.execute(delete(KeyValue).where(KeyValue.key == KEY_CHECK_ROW))
    rt.close()


def runtime_for(url: str, **overrides: object) -> Runtime:
    """A runtime on an initialised database (schema + templates), like after `drip init`. A SQLite
    file that does not exist yet is copied from one initialised once per run."""
    settings = make_settings(url, **overrides)
    path = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite:///") and not path.exists():
        TEMPLATES.copy_sqlite(path, TEMPLATES.derived_sqlite("initialised", _initialise))
        return build_runtime(settings)
    db.upgrade(settings.database_url)
    rt = build_runtime(settings)
    with rt.sessions() as session, session.begin():
        sync_from_files(session, settings.templates_dir, START, "drip init")
        seed_library(session, settings.policy_dir, START)
    return rt


@pytest.fixture
def srt(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on a SQLite file (most UI behaviour does not depend on the database)."""
    runtime = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    yield runtime
    runtime.close()


@pytest.fixture
def client(srt: Runtime, clock: VirtualClock) -> Iterator[TestClient]:
    """A test client (`make_client`) on `srt`."""
    with make_client(srt, clock) as test_client:
        yield test_client
