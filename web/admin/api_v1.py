"""The staff JSON API (`/api/v1`) for integrations: contacts, enroll, unsubscribe, booked, messages.

Authentication: `Authorization: Bearer <token>` with a personal token created on the staff UI's
Account page. Each route needs one scope (`accounts.scopes`); a token holds the scopes chosen when
it was made, never beyond its user's role, and expires. Reads of patient data are audited
(`contacts.read_audit`). Errors are `{"detail": "..."}` (401, 403, 404, 409), or FastAPI's
validation shape for 422 (also used for a field our own validation rejects, e.g. a bad phone).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from patient_drip.web.admin.contact_actions import ActionError, booked, create_contact, enroll_contact, unsubscribe_contact
from patient_drip.web.admin.contact_queries import STATUS_FILTERS, find_contacts
from patient_drip.contacts.fields import FieldError, normalize_email, normalize_phone
from patient_drip.contacts.enrollment import AlreadyEnrolled, EnrollmentError
from patient_drip.models import ConsentMethod, Contact, Enrollment, Message
from patient_drip.runtime import Runtime
from patient_drip.dispatch.funnel import campaign_summaries
from patient_drip.accounts.scopes import SCOPE_HELP, Scope, roles_for_scope
from patient_drip.contacts.read_audit import ReadKind
from patient_drip.web.deps import CurrentUser, NowDep, ReadSessionDep, SessionDep, api_require, client_ip, record_read

API_DESCRIPTION = """\
Public endpoints (consultation form, preference pages, booking links, provider webhooks) and the
staff JSON API under `/api/v1`.

**Staff API authentication:** create a personal API token on the staff UI's *Account* page
(`/admin/account`) and send it as `Authorization: Bearer drip_…`. Each operation needs one
**scope** (listed in its security requirement); a token holds the scopes chosen when it was made,
never more than its owner's role allows, and expires (at most `DRIP_API_TOKEN_MAX_DAYS`). A token
without the scope gets 403 naming it (`WWW-Authenticate: Bearer error="insufficient_scope"`). A token
stops working when it expires or is revoked, and when its owner's password is changed or reset, the
owner is disabled or their role changes. Every read of patient data is recorded in the audit log.

| scope | what it opens | roles that may hold it |
|---|---|---|
""" + "\n".join(f"| `{scope.value}` | {SCOPE_HELP[scope]} | {', '.join(roles_for_scope(scope))} |"
                for scope in Scope) + "\n\n`GET /api/v1/me` needs a valid token and no scope.\n"


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, in words a person can act on.")


Unauthorized = {"model": ErrorOut, "description": "Missing, unknown, revoked or expired API token (or the user is "
                                                  "disabled)."}
Refused = {"model": ErrorOut, "description": "The token lacks the scope this needs (named in `detail`), or its "
                                             "user's role may not use it."}
NotFound = {"model": ErrorOut, "description": "No such contact (or it was erased)."}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: Unauthorized, 403: Refused}

router = APIRouter(prefix="/api/v1", tags=["staff API"], responses=AUTH_ERRORS)

# Every route names the scope it needs (tests/test_api_tokens.py fails on a route without one).
AnyToken = Annotated[CurrentUser, Depends(api_require(None))]  # /me only: who the token belongs to
ContactsRead = Annotated[CurrentUser, Depends(api_require(Scope.CONTACTS_READ))]
ContactsWrite = Annotated[CurrentUser, Depends(api_require(Scope.CONTACTS_WRITE))]
MessagesRead = Annotated[CurrentUser, Depends(api_require(Scope.MESSAGES_READ))]
CampaignsRead = Annotated[CurrentUser, Depends(api_require(Scope.CAMPAIGNS_READ))]
StatsRead = Annotated[CurrentUser, Depends(api_require(Scope.STATS_READ))]

ChannelName = Literal["email", "sms"]


# -- models -------------------------------------------------------------------------------------


class MeOut(BaseModel):
    email: str
    name: str
    role: Literal["admin", "staff", "marketing", "clinician"]


class EnrollmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    campaign_id: str
    status: Literal["active", "paused", "completed", "exited"]
    exit_reason: str | None = Field(None, description="booked, unsubscribed, staff, unreachable or erased")
    step_index: int = Field(description="How many steps have been done (0 = none yet).")
    enrolled_at: datetime
    next_due_at: datetime | None = Field(None, description="When the next step is due (UTC); null when none is.")
    ended_at: datetime | None = None


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None = Field(description="E.164, e.g. +13125550142")
    timezone: str
    source: str
    language: str = Field(description="Language of their messages and automatic replies: `en` or `es`.")
    interest: str = Field(description="What they want to learn about: `depression`, `bipolar`, `unsure`, or empty.")
    email_consent: bool
    sms_consent: bool
    email_blocked: str | None = Field(description="Why email must not be used (opt-out, bounce...), or null.")
    sms_blocked: str | None = Field(description="Why SMS must not be used (STOP, invalid number...), or null.")
    created_at: datetime
    updated_at: datetime
    enrollments: list[EnrollmentOut] = []


class ContactSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    created_at: datetime


class ContactList(BaseModel):
    items: list[ContactSummary]
    next_before: int | None = Field(description="Pass as `before` to get the next (older) page; null on the last.")


class ContactCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "first_name": "Dana", "last_name": "Reyes", "email": "dana@example.com", "phone": "(312) 555-0188",
        "consent": ["email", "sms"], "campaign": "ketamine-consult"}]})

    first_name: str = Field("", max_length=100)
    last_name: str = Field("", max_length=100)
    email: str | None = Field(None, max_length=320, description="Email or phone (or both) is required.")
    phone: str | None = Field(None, max_length=40, description="Any usual format; US numbers without +1 are fine.")
    timezone: str | None = Field(None, max_length=64, description="IANA zone; derived from the phone when omitted.")
    preferred_channel: Literal["", "email", "sms", "phone"] = ""
    language: Literal["", "en", "es"] = Field("", description=(
        "Language of their messages, pages and automatic text replies; empty: English for a new contact, "
        "unchanged for an existing one. Consent in `consent` is recorded with that language's wording."))
    interest: Literal["", "depression", "bipolar", "unsure"] = Field("", description=(
        "What they want to learn about (picks the condition email's variant); empty: not said / unchanged."))
    source: str = Field("api", max_length=64)
    consent: list[ChannelName] = Field(default_factory=list, description=(
        "Channels the person agreed to, with the clinic's current consent wording (recorded with method `api`)."))
    campaign: str | None = Field(None, description="Enroll in this campaign at once (needs consent on a channel).")


class ContactCreated(BaseModel):
    created: bool = Field(description="False when a contact with this email (else phone) existed and was updated.")
    enrolled: bool
    contact: ContactOut


class EnrollIn(BaseModel):
    campaign: str = Field(examples=["ketamine-consult"])
    consent: list[ChannelName] = Field(default_factory=list, description="Consent to record before enrolling.")


class UnsubscribeIn(BaseModel):
    channel: Literal["email", "sms", "all"] = "all"


class UnsubscribeOut(BaseModel):
    changed: list[ChannelName] = Field(description="Channels that were stopped now (empty: already stopped).")
    contact: ContactOut


class BookedOut(BaseModel):
    ended_enrollments: int = Field(description="How many running sequences stopped.")
    contact: ContactOut


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    campaign_id: str
    step_id: str
    channel: ChannelName
    status: str = Field(description="sending, retrying, unknown, sent, delivered, failed, bounced, skipped, "
                                    "needs_review")
    to_address: str | None
    subject: str | None
    body_text: str | None = Field(description="The SMS text, or the email's plain-text part, exactly as sent.")
    body_html: str | None = Field(None, description="The email HTML as sent (only with include_html=true).")
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    clicked_at: datetime | None
    last_error: str | None


class MessageList(BaseModel):
    items: list[MessageOut]
    next_before: int | None


class StepOut(BaseModel):
    id: str
    channel: ChannelName
    delay_seconds: int
    template: str


class CampaignOut(BaseModel):
    id: str
    name: str
    description: str
    steps: list[StepOut]


class StepFunnelOut(BaseModel):
    step: str
    channel: str
    sent: int
    delivered: int
    clicked: int
    booked: int
    skipped: int
    failed: int


class CampaignFunnelOut(BaseModel):
    campaign: str
    enrolled: int
    active: int
    completed: int
    booked: int
    unsubscribed: int
    other_exits: int
    booking_rate: float
    steps: list[StepFunnelOut]


# -- helpers ------------------------------------------------------------------------------------


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def _actor(user: CurrentUser) -> str:
    return f"{user.email} (api)"


def _contact_out(session: Session, contact: Contact) -> ContactOut:
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id)
                                       .order_by(Enrollment.id)))
    out = ContactOut.model_validate(contact)
    out.enrollments = [EnrollmentOut.model_validate(e) for e in enrollments]
    return out


def _get_contact(session: Session, contact_id: int) -> Contact | None:
    contact = session.get(Contact, contact_id)
    return contact if contact is not None and contact.erased_at is None else None


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


def _action_failed(exc: Exception, default_field: str) -> JSONResponse:
    """The response for an error raised by a contact action (the session is already rolled back)."""
    if isinstance(exc, FieldError):
        return _field_error(exc.field, exc.message)
    if isinstance(exc, ActionError):
        return _field_error(exc.field or default_field, exc.message)
    if isinstance(exc, AlreadyEnrolled):
        return _error(409, str(exc))
    return _field_error("consent", str(exc))


def _field_error(field: str, message: str) -> JSONResponse:
    """A field our validation rejected, in FastAPI's documented 422 shape."""
    return JSONResponse({"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
                        status_code=422)


def _missing() -> JSONResponse:
    return _error(404, "No such contact.")


def _query_text(**parts: object) -> str:
    """A list read's query as the audit row keeps it: the parameters that were given."""
    return " ".join(f"{key}={value}" for key, value in parts.items() if value not in (None, ""))


# -- routes -------------------------------------------------------------------------------------


@router.get("/me", response_model=MeOut, summary="Who this token belongs to")
def me(user: AnyToken) -> MeOut:
    return MeOut(email=user.email, name=user.name, role=user.role)  # type: ignore[arg-type]


@router.get("/contacts", response_model=ContactList, summary="Search contacts (newest first, keyset paginated)")
def list_contacts(request: Request, session: ReadSessionDep, user: ContactsRead, now: NowDep,
                  q: Annotated[str, Query(max_length=200, description=(
                      "Name, email or phone prefix: `smi`, `Alex Smith`, `dana@`, `312555`."))] = "",
                  email: Annotated[str | None, Query(max_length=320, description="Exact email.")] = None,
                  phone: Annotated[str | None, Query(max_length=40, description="Exact phone, any format.")] = None,
                  status: Annotated[Literal["", "active", "paused", "completed", "booked", "unsubscribed",
                                            "not_enrolled"], Query(description="Enrollment status filter.")] = "",
                  before: Annotated[int | None, Query(description="`next_before` of the previous page.")] = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> ContactList | JSONResponse:
    if email or phone:
        try:
            condition = (Contact.email == normalize_email(email)) if email else (Contact.phone == normalize_phone(phone or ""))
        except FieldError as exc:
            return JSONResponse({"detail": [{"loc": ["query", exc.field], "msg": exc.message, "type": "value_error"}]},
                                status_code=422)
        found = list(session.scalars(select(Contact).where(condition, Contact.erased_at.is_(None))))
        record_read(request, user, ReadKind.CONTACTS_LISTED, now, count=len(found),
                    what="email lookup" if email else "phone lookup")
        return ContactList(items=[ContactSummary.model_validate(c) for c in found], next_before=None)
    page = find_contacts(session, query=q, status=status if status in STATUS_FILTERS else "", before=before,
                         limit=limit)
    record_read(request, user, ReadKind.CONTACTS_LISTED, now, count=len(page.contacts),
                what=_query_text(q=q, status=status, before=before))
    return ContactList(items=[ContactSummary.model_validate(c) for c in page.contacts], next_before=page.older)


@router.post("/contacts", response_model=ContactCreated, status_code=201,
             summary="Create (or update) a contact, record consent, optionally enroll",
             responses={200: {"model": ContactCreated, "description": "An existing contact was updated."},
                        409: {"model": ErrorOut, "description": "Already enrolled in that campaign."}})
def create_contact_api(request: Request, body: ContactCreate, session: SessionDep, user: ContactsWrite,
                       now: NowDep) -> ContactCreated | JSONResponse:
    rt = _rt(request)
    try:
        result = create_contact(session, rt, body.model_dump(), body.consent, body.campaign, ConsentMethod.API, now,
                                _actor(user), source=body.source or "api", ip=client_ip(request),
                                user_agent=request.headers.get("user-agent"))
        session.commit()
    except (FieldError, ActionError, EnrollmentError) as exc:  # AlreadyEnrolled is an EnrollmentError
        session.rollback()
        return _action_failed(exc, "body")
    payload = ContactCreated(created=result.created, enrolled=result.enrollment is not None,
                             contact=_contact_out(session, result.contact))
    if not result.created:
        return JSONResponse(payload.model_dump(mode="json"), status_code=200)
    return payload


@router.get("/contacts/{contact_id}", response_model=ContactOut, summary="One contact with its enrollments",
            responses={404: NotFound})
def get_contact(request: Request, contact_id: int, session: ReadSessionDep, user: ContactsRead,
                now: NowDep) -> ContactOut | JSONResponse:
    contact = _get_contact(session, contact_id)
    if contact is None:
        return _missing()
    out = _contact_out(session, contact)
    record_read(request, user, ReadKind.CONTACT_VIEWED, now, count=1, contact_id=contact.id)
    return out


@router.post("/contacts/{contact_id}/enroll", response_model=EnrollmentOut, status_code=201,
             summary="Enroll a contact in a campaign",
             responses={404: NotFound, 409: {"model": ErrorOut, "description": "Already enrolled in that campaign."}})
def enroll_api(request: Request, contact_id: int, body: EnrollIn, session: SessionDep, user: ContactsWrite,
               now: NowDep) -> EnrollmentOut | JSONResponse:
    contact = _get_contact(session, contact_id)
    if contact is None:
        return _missing()
    try:
        enrollment = enroll_contact(session, _rt(request), contact, body.campaign, body.consent, ConsentMethod.API,
                                    now, _actor(user), source="api", ip=client_ip(request),
                                    user_agent=request.headers.get("user-agent"))
        session.commit()
    except (ActionError, EnrollmentError) as exc:
        session.rollback()
        return _action_failed(exc, "campaign")
    return EnrollmentOut.model_validate(enrollment)


@router.post("/contacts/{contact_id}/unsubscribe", response_model=UnsubscribeOut,
             summary="Stop email, SMS or everything for a contact", responses={404: NotFound})
def unsubscribe_api(request: Request, contact_id: int, body: UnsubscribeIn, session: SessionDep, user: ContactsWrite,
                    now: NowDep) -> UnsubscribeOut | JSONResponse:
    contact = _get_contact(session, contact_id)
    if contact is None:
        return _missing()
    changed = unsubscribe_contact(session, _rt(request), contact, body.channel, ConsentMethod.API, now, _actor(user))
    session.commit()
    return UnsubscribeOut(changed=changed, contact=_contact_out(session, contact))  # type: ignore[arg-type]


@router.post("/contacts/{contact_id}/booked", response_model=BookedOut,
             summary="The contact booked: stop every sequence", responses={404: NotFound})
def booked_api(request: Request, contact_id: int, session: SessionDep, user: ContactsWrite,
               now: NowDep) -> BookedOut | JSONResponse:
    contact = _get_contact(session, contact_id)
    if contact is None:
        return _missing()
    ended = booked(session, _rt(request), contact, now, _actor(user), source="api")
    session.commit()
    return BookedOut(ended_enrollments=ended, contact=_contact_out(session, contact))


@router.get("/contacts/{contact_id}/messages", response_model=MessageList,
            summary="Messages sent to a contact, newest first", responses={404: NotFound})
def messages_api(request: Request, contact_id: int, session: ReadSessionDep, user: MessagesRead, now: NowDep,
                 before: Annotated[int | None, Query(description="`next_before` of the previous page.")] = None,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50,
                 include_html: Annotated[bool, Query(description="Include each email's HTML.")] = False,
                 ) -> MessageList | JSONResponse:
    if _get_contact(session, contact_id) is None:
        return _missing()
    query = select(Message).where(Message.contact_id == contact_id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(session.scalars(query.order_by(Message.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        item = MessageOut.model_validate(row)
        if not include_html:
            item.body_html = None
        items.append(item)
    record_read(request, user, ReadKind.MESSAGES_LISTED, now, count=len(items), contact_id=contact_id)
    return MessageList(items=items, next_before=rows[-1].id if rows and more else None)


@router.get("/campaigns", response_model=list[CampaignOut], summary="Campaigns and their steps")
def campaigns_api(request: Request, user: CampaignsRead) -> list[CampaignOut]:
    return [CampaignOut(id=c.id, name=c.name, description=c.description, steps=[
        StepOut(id=s.id, channel=s.channel.value, delay_seconds=int(s.delay.total_seconds()),  # type: ignore[arg-type]
                template=s.template) for s in c.message_steps]) for c in _rt(request).campaigns.values()]


@router.get("/stats", response_model=list[CampaignFunnelOut], summary="The funnel per campaign and step")
def stats_api(request: Request, session: ReadSessionDep, user: StatsRead) -> list[CampaignFunnelOut]:
    summaries = campaign_summaries(session, _rt(request).campaigns)
    return [CampaignFunnelOut(
        campaign=s.campaign, enrolled=s.enrolled, active=s.active, completed=s.completed, booked=s.booked,
        unsubscribed=s.unsubscribed, other_exits=s.other_exits, booking_rate=round(s.booking_rate, 4),
        steps=[StepFunnelOut(step=f.step, channel=f.channel, sent=f.sent, delivered=f.delivered, clicked=f.clicked,
                             booked=f.booked, skipped=f.skipped, failed=f.failed) for f in s.steps],
    ) for s in summaries]


def customize_openapi(app: FastAPI) -> None:
    """Describe the API and its token in the schema served at /openapi.json."""
    app.description = API_DESCRIPTION
    app.openapi_tags = [
        {"name": "staff API", "description": "For integrations; bearer token of a staff user (see above)."},
        {"name": "public", "description": "The patient-facing pages and endpoints."},
        {"name": "webhooks", "description": "Provider and booking-tool callbacks, signature-checked."},
    ]
    app.openapi_schema = None
