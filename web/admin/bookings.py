"""Bookings for front-desk staff: what the scheduling tools told us, newest first — people we could
not match to a contact (to match by hand), no-shows to call, cancellations — with the message each
booking is credited to and by which rule."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from patient_drip.models import Booking, BookingKind, Contact
from patient_drip.web.admin.auth import StaffUser
import patient_drip.web.admin.labels as labels
from patient_drip.web.admin.common import render
from patient_drip.web.deps import ReadSessionDep

router = APIRouter(prefix="/admin", include_in_schema=False)

PAGE = 100
FILTERS = {"": "All", "unmatched": "Not matched to a contact", **{str(k): k.replace("_", "-").capitalize()
                                                                    for k in BookingKind}}
ATTRIBUTION = labels.ATTRIBUTION


@router.get("/bookings", response_class=HTMLResponse)
def bookings_page(request: Request, user: StaffUser, session: ReadSessionDep,
                  show: Annotated[str, Query(max_length=20)] = "") -> HTMLResponse:
    show = show if show in FILTERS else ""
    query = select(Booking, Contact).outerjoin(Contact, Contact.id == Booking.contact_id)
    if show == "unmatched":
        query = query.where(Booking.contact_id.is_(None))
    elif show:
        query = query.where(Booking.kind == show)
    rows = session.execute(query.order_by(Booking.received_at.desc(), Booking.id.desc()).limit(PAGE)).all()
    return render(request, "admin/bookings.html", {"rows": rows, "show": show, "filters": FILTERS,
                                                   "attribution": ATTRIBUTION}, user=user)
