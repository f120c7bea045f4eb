""""Forgot password?": ask for an emailed link, then choose a new password from it.

The rule is `accounts.password_reset`; this module throttles requests (per address and per network,
`accounts.throttle`, the sign-in window), answers the same for every address, and hands the email to
the product's email sender after the response is sent (a `BackgroundTasks` job), so that neither the
answer nor its timing says whether the address has an account. In outbox mode the email is recorded
by the outbox sender, not sent. Pages live under `/admin/login/` so the sign-in form token applies.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, Response

from patient_drip.accounts.password_reset import (
    ResetEmail,
    ResetLinkError,
    complete_reset,
    make_reset_token,
    request_reset,
    reset_message,
    user_for_reset_token,
)
from patient_drip.accounts.passwords import MIN_PASSWORD
from patient_drip.accounts.signin import network_key
from patient_drip.accounts.throttle import count_attempt
from patient_drip.contacts.fields import FieldError
from patient_drip.providers.types import Channel, SendError
from patient_drip.runtime import Runtime
from patient_drip.web.admin.common import redirect
from patient_drip.web.admin.login import form_page, form_token_ok
from patient_drip.web.deps import client_ip

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)
# Reset emails per address per window: enough for a typo and a retry, too few to flood an inbox.
RESETS_PER_ADDRESS = 3


def _send(rt: Runtime, email: ResetEmail) -> None:
    sender = rt.senders.get(Channel.EMAIL)
    if sender is None:
        log.error("password reset requested but no email sender is configured")
        return
    try:
        sender.send(reset_message(email, rt.settings.clinic_name, rt.settings.password_reset_minutes))
    except SendError as exc:
        log.error("could not send a password-reset email: %s", exc)


@router.get("/login/forgot", response_class=HTMLResponse)
def forgot_form(request: Request) -> HTMLResponse:
    return form_page(request, "admin/forgot.html", {"sent": False, "error": ""})


@router.post("/login/forgot", response_class=HTMLResponse)
def forgot_submit(request: Request, background: BackgroundTasks, email: Annotated[str, Form(max_length=320)] = "",
                  csrf_token: Annotated[str, Form(max_length=200)] = "") -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    if not form_token_ok(request, csrf_token):
        return form_page(request, "admin/forgot.html", {"sent": False, "error": "The form expired. Please try again."},
                         status_code=403)
    address = email.strip().lower()
    if not address:
        return form_page(request, "admin/forgot.html", {"sent": False, "error": "Enter your email address."},
                         status_code=422)
    with rt.sessions() as session:
        decision = count_attempt(session, [(f"reset:{address}", RESETS_PER_ADDRESS),
                                           (network_key(client_ip(request)), rt.settings.login_network_limit)],
                                 now, rt.settings.login_window_minutes * 60)
        session.commit()
    if not decision.allowed:
        minutes = max(1, round(decision.retry_after / 60))
        return form_page(request, "admin/forgot.html",
                         {"sent": False, "error": f"Too many reset requests. Try again in about {minutes} minutes."},
                         status_code=429, retry_after=decision.retry_after)
    with rt.sessions() as session:
        user = request_reset(session, address, now)
        if user is not None:
            token = make_reset_token(rt.session_secret, user, now)
            background.add_task(_send, rt, ResetEmail(user.email, f"{rt.settings.public_url}/admin/login/reset?token="
                                                                  f"{quote(token, safe='')}"))
        session.commit()
    return form_page(request, "admin/forgot.html", {"sent": True, "error": ""})


def _reset_page(request: Request, token: str, *, error: str = "", errors: dict[str, str] | None = None,
                status_code: int = 200) -> HTMLResponse:
    return form_page(request, "admin/reset.html", {"token": token, "error": error, "errors": errors or {},
                                                    "min_password": MIN_PASSWORD}, status_code=status_code)


@router.get("/login/reset", response_class=HTMLResponse)
def reset_form(request: Request, token: str = "") -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    with rt.sessions() as session:
        try:
            user_for_reset_token(session, rt.session_secret, token, request.app.state.clock(),
                                 rt.settings.password_reset_minutes)
        except ResetLinkError as exc:
            return _reset_page(request, "", error=str(exc), status_code=400)
    return _reset_page(request, token)


@router.post("/login/reset", response_class=HTMLResponse)
def reset_submit(request: Request, token: Annotated[str, Form(max_length=400)] = "",
                 new: Annotated[str, Form(max_length=1000)] = "", confirm: Annotated[str, Form(max_length=1000)] = "",
                 csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    rt: Runtime = request.app.state.rt
    now: datetime = request.app.state.clock()
    if not form_token_ok(request, csrf_token):
        return _reset_page(request, token, error="The form expired. Please try again.", status_code=403)
    with rt.sessions() as session:
        try:
            complete_reset(session, rt.session_secret, token, new, confirm, now, rt.settings.password_reset_minutes)
        except ResetLinkError as exc:
            return _reset_page(request, "", error=str(exc), status_code=400)
        except FieldError as exc:
            return _reset_page(request, token, errors={exc.field: exc.message}, status_code=422)
        session.commit()
    return redirect("/admin/login", "password_reset")
