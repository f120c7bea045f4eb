"""What every staff page shares: the page renderer, time formatting, notices, the role vocabulary.

Pages are server-rendered Jinja2 from `web/templates/admin/` (not the message `templates/`);
the CSP allows only our own scripts and styles, so templates use classes, never `style=`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from patient_drip.accounts.users import Role
from patient_drip.runtime import Runtime
import patient_drip.web.admin.labels as labels
from patient_drip.web.deps import CurrentUser, templates


# Fixed notices shown after a redirect (`?done=key`): user input is never reflected into them.
NOTICES = {
    "signed_out": "You are signed out.",
    "password_reset": "Your password is changed and every session of yours was signed out. Sign in with it now.",
    "enrolled": "Enrolled. The first message goes out within the send window.",
    "enrolled_existing": "Enrolled. This person was already a contact; their details were updated.",
    "unsubscribed": "Unsubscribed. Messages on that channel have stopped.",
    "already_unsubscribed": "That channel was already stopped; nothing changed.",
    "booked": "Marked as booked. Their follow-up sequence has stopped.",
    "already_booked": "A booking already stands for this person; nothing changed.",
    "resubscribed_email": "Emails can reach this person again; their consent is recorded with the wording shown. "
                          "Sequences that stopped stay stopped.",
    "resubscribed_sms": "Text messages can reach this person again; their consent is recorded with the wording "
                        "shown. Sequences that stopped stay stopped.",
    "contact_updated": "Details saved.",
    "contact_updated_number": "Details saved. Texts stop until the person agrees to texts on the new number.",
    "contact_unchanged": "Nothing was changed.",
    "timing_saved": "Timing saved as a new version. New enrollments follow it; people already in the sequence "
                    "keep the timing they started with.",
    "people_moved": "Moved to the version in force. Each person's next step follows its timing; nobody is sent "
                    "a step twice.",
    "paused": "Paused. Nothing more is sent until you resume.",
    "resumed": "Resumed. The sequence continues from the next unsent step.",
    "handled": "Reply marked as handled.",
    "crisis_still_open": "Reply marked as handled. The sequence stays paused: another possible-crisis reply "
                         "from this person is still open.",
    "draft_saved": "Draft saved. A clinician must approve it before it goes live.",
    "approved": "Approved. This version is now live: new messages use it.",
    "rejected": "Draft rejected. The live version is unchanged.",
    "rolled_back": "Roll-back saved as a new draft. A clinician must approve it before it goes live.",
    "claim_added": "Claim added to the library, approved by you. Messages may now say it.",
    "claim_edited": "New wording saved as a new version, approved by you. Messages with the old wording are flagged again.",
    "claim_retired": "Claim retired. Messages that say it are flagged for clinical review again.",
    "user_clinician_changed": "Clinician duties changed. It applies from their next request.",
    "user_created": "User created.",
    "user_disabled": "User disabled. They can no longer sign in and their API tokens stop working.",
    "user_enabled": "User enabled.",
    "user_role_changed": "Role changed. It applies from their next request.",
    "token_revoked": "Token revoked.",
    "password_changed": "Password changed. Other sessions of yours were signed out.",
    "channel_paused": "Channel paused for everyone.",
    "review_marked_sent": "Marked as sent. Nothing more is sent for that step.",
    "review_sent_again": "Queued to be sent again (the same message, within the send window); the sequence "
                         "then carries on where it was.",
    "channel_resumed": "Channel resumed.",
    "task_taken": "The task is yours now.",
    "task_done": "Done. The task is kept below with your name and the time.",
}

ROLE_HELP = {
    Role.ADMIN: "everything, including users and settings",
    Role.STAFF: "contacts, enrolling, unsubscribing, booked, replies, messages to review",
    Role.MARKETING: "templates, campaigns and the funnel (no contact details)",
    Role.CLINICIAN: "approves template changes and manages the claims library; views templates and campaigns",
}


def clinic_zone(rt: Runtime) -> ZoneInfo:
    return ZoneInfo(rt.settings.clinic_timezone)


def render(request: Request, name: str, context: dict[str, Any], *, user: CurrentUser | None = None,
           status_code: int = 200) -> HTMLResponse:
    """A staff page: the layout gets the user (for the nav), the CSRF token and the notice."""
    rt: Runtime = request.app.state.rt
    zone = clinic_zone(rt)
    done = request.query_params.get("done", "")
    base = {
        "clinic_name": rt.settings.clinic_name,
        "user": user,
        "csrf": user.csrf if user else "",
        "notice": NOTICES.get(done, ""),
        "path": request.url.path,
        "nav_active": _nav_key(request.url.path),
        "zone": zone,
        "Role": Role,
        "delivery": rt.settings.delivery,
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"  # pages hold patient data: never cache them
    return response


def _nav_key(path: str) -> str:
    if path.startswith("/admin/contacts/new"):
        return "enroll"
    if path.startswith(("/admin/contacts", "/admin/messages")):
        return "contacts"
    for key in ("import", "replies", "review", "templates", "claims", "campaigns", "users", "audit", "settings",
                "account", "bookings", "tasks"):
        if path.startswith(f"/admin/{key}"):
            return key
    return "dashboard" if path.rstrip("/") == "/admin" else ""


def redirect(url: str, done: str | None = None) -> RedirectResponse:
    """303 after a POST; `done` selects a fixed notice on the next page."""
    if done:
        url += ("&" if "?" in url else "?") + urlencode({"done": done})
    return RedirectResponse(url, status_code=303)


def fmt_local(value: datetime | None, zone: ZoneInfo, with_zone: bool = True) -> str:
    if value is None:
        return ""
    local = value.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M" + (" %Z" if with_zone else ""))


def _local_filter(value: datetime | None, zone: ZoneInfo | None = None) -> str:
    return fmt_local(value, zone or ZoneInfo("UTC"))


def _offset_filter(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"day {days}"]
    if hours or minutes:
        parts.append(f"+{hours}h{minutes:02d}" if minutes else f"+{hours}h")
    return " ".join(parts)


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "–"


templates.env.filters["local"] = _local_filter
templates.env.filters["offset"] = _offset_filter
templates.env.globals["percent"] = _percent
# Every stored code as words (`admin.labels`), for every template.
templates.env.globals["label"] = labels.label
templates.env.globals["enrollment_label"] = labels.enrollment_label
templates.env.globals["block_label"] = labels.block_label
templates.env.globals["humanise"] = labels.humanise
templates.env.filters["phone"] = labels.phone_link
templates.env.filters["national_phone"] = labels.national_phone
