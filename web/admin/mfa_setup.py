"""The signed-in person's second factor: enrol a TOTP app (QR code and the secret as text), see how
many recovery codes are left, make new ones. Reachable by a user who must enrol before anything
else (`EnrollingUser`). The rules are `accounts.mfa`'s; this module only shows them.

The secret being enrolled travels in a hidden field between the page and the form post (it is the
person's own, sent only to them over their session, and stored only once a code proves their app has
it). The QR code is an inline SVG made by segno (pure Python); the CSP allows no inline styles, and
segno's SVG has none.
"""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from patient_drip.accounts.mfa import (
    enable_totp,
    enrolment_uri,
    has_mfa,
    new_totp_secret,
    replace_recovery_codes,
    roles_requiring_mfa,
    unused_recovery_codes,
)
from patient_drip.contacts.fields import FieldError
from patient_drip.models import User, audit
from patient_drip.web.admin.auth import AnyUser, EnrollingUser
from patient_drip.web.admin.common import render
from patient_drip.web.deps import CurrentUser, NowDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page(request: Request, user: CurrentUser, session: SessionDep, *, secret: str = "", codes: list[str] | None = None,
          errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    row = session.get(User, user.id)
    assert row is not None  # the session check just read it
    context: dict[str, object] = {
        "enrolled": has_mfa(row), "required": row.role in roles_requiring_mfa(session), "codes": codes or [],
        "remaining": unused_recovery_codes(session, row.id), "errors": errors or {}, "secret": "", "uri": "", "qr": "",
    }
    if not has_mfa(row):
        secret = secret or new_totp_secret()
        uri = enrolment_uri(secret, row.email, request.app.state.rt.settings.clinic_name)
        qr = segno.make(uri, error="m").svg_inline(scale=4, title="QR code for your authenticator app")
        context.update(secret=secret, uri=uri, qr=Markup(qr))  # noqa: S704 - segno's own SVG, no user text in markup
    return render(request, "admin/mfa.html", context, user=user, status_code=status_code)


@router.get("/account/mfa", response_class=HTMLResponse)
def mfa_page(request: Request, user: EnrollingUser, session: SessionDep) -> HTMLResponse:
    return _page(request, user, session)


@router.post("/account/mfa", response_class=HTMLResponse)
def mfa_enrol(request: Request, user: EnrollingUser, session: SessionDep, now: NowDep,
              secret: Annotated[str, Form(max_length=64)] = "", code: Annotated[str, Form(max_length=20)] = "") -> Response:
    row = session.get(User, user.id)
    assert row is not None
    try:
        codes = enable_totp(session, row, secret, code, now, user.actor)
    except FieldError as exc:
        session.rollback()
        return _page(request, user, session, secret=secret if exc.field == "code" else "",
                     errors={exc.field: exc.message}, status_code=400)
    session.commit()
    return _page(request, user, session, codes=codes)  # shown once, on this response only


@router.post("/account/mfa/recovery-codes", response_class=HTMLResponse)
def mfa_new_codes(request: Request, user: AnyUser, session: SessionDep, now: NowDep) -> Response:
    row = session.get(User, user.id)
    assert row is not None
    if not has_mfa(row):
        return _page(request, user, session, errors={"code": "Set up two-step sign-in first."}, status_code=400)
    codes = replace_recovery_codes(session, row, now)
    audit(session, user.actor, "mfa_recovery_codes_replaced", now)
    session.commit()
    return _page(request, user, session, codes=codes)
