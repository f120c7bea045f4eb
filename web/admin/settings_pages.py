"""Admins only: the running configuration (secrets never shown) and pausing a channel for everyone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import SecretStr

from patient_drip.web.admin.auth import AdminUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.dispatch.pauses import pause_channel, paused_channels, resume_channel
from patient_drip.models import Channel
from patient_drip.runtime import Runtime
from patient_drip.settings import env_name
from patient_drip.web.deps import NowDep, ReadSessionDep, SessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)


def settings_rows(rt: Runtime) -> list[tuple[str, str, str]]:
    """(environment variable, value, description) for every setting; secrets show only whether set."""
    rows = []
    for name, field in type(rt.settings).model_fields.items():
        value = getattr(rt.settings, name)
        if isinstance(value, SecretStr) or name == "secret_key":
            shown = "set" if value is not None and (not isinstance(value, SecretStr) or value.get_secret_value()) \
                else "not set"
        else:
            shown = str(value)
            if name == "database_url" and "@" in shown:  # hide a password in the URL
                scheme, _, rest = shown.partition("://")
                shown = f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
        rows.append((env_name(name), shown, field.description or ""))
    return rows


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, user: AdminUser, session: ReadSessionDep) -> HTMLResponse:
    rt: Runtime = request.app.state.rt
    return render(request, "admin/settings.html", {"rows": settings_rows(rt), "paused": paused_channels(session),
                                                    "channels": [c.value for c in Channel]}, user=user)


@router.post("/settings/channels/{channel}")
def channel_pause(request: Request, channel: str, user: AdminUser, session: SessionDep, now: NowDep,
                  action: Annotated[str, Form()]) -> Response:
    if channel not in {c.value for c in Channel} or action not in ("pause", "resume"):
        return render(request, "admin/not_found.html", {"what": "This channel"}, user=user, status_code=404)
    if action == "pause":
        pause_channel(session, Channel(channel), f"paused by {user.actor}", now, user.actor)
    else:
        resume_channel(session, Channel(channel), now, user.actor)
    session.commit()
    return redirect("/admin/settings", f"channel_{action}d")
