"""`GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand (no extra dependency).

Two kinds of numbers:

* **from the database, computed on each scrape** — right whichever process is scraped and however
  many workers run: the queue (enrollments due now, and how late the oldest is), send records
  still in flight or waiting for reconciliation or staff, and paused channels. Each query is an
  index range scan (`ix_enrollment_next_due_at`, `ix_message_status_attempted`).
* **this process's own counters** — provider calls by channel and result, and provider latency
  (a histogram), from the dispatching `drip serve`'s own scheduler does. A `drip worker` has no
  web server, so its counters are not exposed; the database numbers cover every worker.

Access: a staff API token with the `metrics` scope (`Authorization: Bearer drip_…`, any role may
hold it — make one for the monitoring system on the Account page, with that scope only). The numbers hold no patient data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

from patient_drip.dispatch.counters import COUNTERS, DispatchCounters
from patient_drip.dispatch.pauses import paused_channels
from patient_drip.models import Channel, Enrollment, EnrollmentStatus, Message, MessageStatus
from patient_drip.runtime import Runtime
from patient_drip.accounts.scopes import Scope
from patient_drip.web.deps import CurrentUser, api_require, get_now, get_runtime

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Statuses worth watching (small sets, counted through the status index); sent/delivered are not
# counted here: that is the funnel (`drip stats`), and a full count would scan every message.
WATCHED_STATUSES = (MessageStatus.SENDING, MessageStatus.RETRYING, MessageStatus.UNKNOWN, MessageStatus.NEEDS_REVIEW)

router = APIRouter(include_in_schema=False)
# Any role may hold the `metrics` scope (the numbers hold no patient data); a token made for
# monitoring should hold only it.
MetricsReader = Annotated[CurrentUser, Depends(api_require(Scope.METRICS))]


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, _reader: MetricsReader) -> PlainTextResponse:
    """Prometheus metrics (text format 0.0.4); needs a staff API token."""
    return PlainTextResponse(render(get_runtime(request), get_now(request)), media_type=CONTENT_TYPE)


def render(rt: Runtime, now: datetime, counters: DispatchCounters = COUNTERS) -> str:
    """The whole exposition: database gauges first, then this process's counters."""
    out = _Exposition()
    with rt.sessions() as session:
        due = session.scalar(select(func.count()).select_from(Enrollment).where(Enrollment.next_due_at <= now)) or 0
        oldest = session.scalar(select(func.min(Enrollment.next_due_at)).where(Enrollment.next_due_at <= now))
        scheduled = session.scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.next_due_at > now)) or 0
        statuses = dict(session.execute(
            select(Message.status, func.count()).where(Message.status.in_([str(s) for s in WATCHED_STATUSES]))
            .group_by(Message.status)).all())
        paused = paused_channels(session)
        active = session.scalar(select(func.count()).select_from(Enrollment).where(
            Enrollment.status == EnrollmentStatus.ACTIVE)) or 0
    out.gauge("drip_queue_due", "Enrollments whose next message is due now (the dispatch queue).", due)
    out.gauge("drip_queue_lag_seconds", "How late the oldest due message is (0 when the queue is empty).",
              max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    out.gauge("drip_queue_scheduled", "Enrollments with a message scheduled later.", scheduled)
    out.gauge("drip_enrollments_active", "Active enrollments.", active)
    out.family("drip_messages_by_status", "gauge",
               "Send records in a state that needs watching (sending = in flight or its worker died; "
               "unknown = awaiting reconciliation; needs_review = staff must decide at /admin/review).")
    for status in WATCHED_STATUSES:
        out.sample("drip_messages_by_status", {"status": str(status)}, statuses.get(str(status), 0))
    out.family("drip_channel_paused", "gauge", "1 when a channel is paused (provider refused our credentials).")
    for channel in Channel:
        out.sample("drip_channel_paused", {"channel": str(channel)}, int(channel in paused))
    snapshot = counters.snapshot()
    out.family("drip_messages_total", "counter",
               "Provider calls made by this process, by channel and result "
               "(sent, transient, permanent, ambiguous, auth, error).")
    messages: dict[tuple[str, str], int] = snapshot["messages"]  # type: ignore[assignment]
    for channel in Channel:
        for result in ("sent", "transient", "permanent", "ambiguous", "auth", "error"):
            out.sample("drip_messages_total", {"channel": str(channel), "result": result},
                       messages.get((str(channel), result), 0))
    out.family("drip_provider_latency_seconds", "histogram", "Provider call duration in this process, by channel.")
    buckets: dict[str, list[int]] = snapshot["latency_buckets"]  # type: ignore[assignment]
    counts: dict[str, int] = snapshot["latency_count"]  # type: ignore[assignment]
    sums: dict[str, float] = snapshot["latency_sum"]  # type: ignore[assignment]
    for channel in Channel:
        per_bucket = buckets.get(str(channel), [0] * len(DispatchCounters.LATENCY_BUCKETS))
        for bound, count in zip(DispatchCounters.LATENCY_BUCKETS, per_bucket):
            out.sample("drip_provider_latency_seconds_bucket", {"channel": str(channel), "le": _number(bound)}, count)
        out.sample("drip_provider_latency_seconds_bucket", {"channel": str(channel), "le": "+Inf"},
                   counts.get(str(channel), 0))
        out.sample("drip_provider_latency_seconds_sum", {"channel": str(channel)}, sums.get(str(channel), 0.0))
        out.sample("drip_provider_latency_seconds_count", {"channel": str(channel)}, counts.get(str(channel), 0))
    out.family("drip_dispatch_passes_total", "counter", "Dispatch passes run by this process.")
    out.sample("drip_dispatch_passes_total", {}, snapshot["passes"])  # type: ignore[arg-type]
    return out.text()


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text)
        self.sample(name, {}, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        label_text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels.items())
        self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
