"""CSV import in the browser: upload → preview of the first rows → import in a background thread
with a progress bar (polled by admin.js) → per-row error report (also downloadable as CSV).

Jobs live in this process's memory under a random id (enough for one `drip serve` process); only
the person who uploaded a file can see its job.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from patient_drip.web.admin.auth import StaffUser
from patient_drip.web.admin.common import redirect, render
from patient_drip.contacts.csv_safe import csv_writer
from patient_drip.contacts.import_rows import KNOWN_COLUMNS, ImportFileError, read_rows
from patient_drip.contacts.importer import ImportReport, import_csv
from patient_drip.runtime import Runtime
from patient_drip.web.deps import CurrentUser, NowDep

log = logging.getLogger("drip.admin.import")
router = APIRouter(prefix="/admin", include_in_schema=False)

PREVIEW_ROWS = 5
MAX_JOBS = 50


@dataclass
class ImportJob:
    id: str
    owner: int
    filename: str
    text: str
    campaign_id: str
    total: int
    created: float = field(default_factory=time.monotonic)
    state: str = "ready"  # ready → running → done | failed
    processed: int = 0
    report: ImportReport | None = None
    error: str = ""

    def status(self) -> dict[str, Any]:
        report = self.report
        return {
            "state": self.state, "processed": self.processed, "total": self.total,
            "percent": int(100 * self.processed / self.total) if self.total else (100 if self.state == "done" else 0),
            "enrolled": report.enrolled if report else 0, "failed": report.failed if report else 0,
            "error": self.error,
        }


class ImportJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, ImportJob] = {}
        self._lock = threading.Lock()

    def add(self, job: ImportJob) -> None:
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.state in ("done", "failed", "ready")),
                              key=lambda j: j.created)
            while len(self._jobs) >= MAX_JOBS and finished:
                self._jobs.pop(finished.pop(0).id, None)
            self._jobs[job.id] = job

    def claim(self, job: ImportJob) -> bool:
        """Move a job from ready to running exactly once (a double-clicked Start imports once)."""
        with self._lock:
            if job.state != "ready":
                return False
            job.state = "running"
            return True

    def get(self, job_id: str, user: CurrentUser) -> ImportJob | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == user.id else None


def _jobs(request: Request) -> ImportJobs:
    return request.app.state.admin.imports  # type: ignore[no-any-return]


def _rt(request: Request) -> Runtime:
    return request.app.state.rt  # type: ignore[no-any-return]


def run_import(rt: Runtime, job: ImportJob, now: datetime, actor: str) -> None:
    """The background thread's body: the same importer as `drip import`, progress per chunk."""
    job.state = "running"

    def progress(rows: int) -> None:
        job.processed += rows

    try:
        job.report = import_csv(rt, io.StringIO(job.text, newline=""), rt.campaign(job.campaign_id), now, actor,
                                progress=progress)
        job.processed = job.report.rows
        job.state = "done"
    except ImportFileError as exc:
        job.error, job.state = str(exc), "failed"
    except Exception as exc:  # a crash must show on the page, not vanish with the thread
        log.exception("import %s failed", job.id)
        job.error, job.state = f"the import stopped: {type(exc).__name__}: {exc}", "failed"
    finally:
        job.text = ""  # the file is no longer needed; free the memory


def _form(request: Request, user: CurrentUser, error: str = "", status_code: int = 200,
          campaign: str = "") -> HTMLResponse:
    return render(request, "admin/import.html", {"error": error, "campaigns": _rt(request).campaigns,
                                                  "campaign": campaign, "columns": KNOWN_COLUMNS},
                  user=user, status_code=status_code)


@router.get("/import", response_class=HTMLResponse)
def import_form(request: Request, user: StaffUser) -> HTMLResponse:
    return _form(request, user)


@router.post("/import", response_class=HTMLResponse)
async def import_upload(request: Request, user: StaffUser, file: Annotated[UploadFile, File()],
                        campaign: Annotated[str, Form()] = "") -> Response:
    """Read the file and show a preview; nothing is imported yet."""
    rt = _rt(request)
    if campaign not in rt.campaigns:
        return _form(request, user, "Choose the campaign to enroll these contacts in.", 400, campaign)
    # The request body was limited while it streamed in (web.limits, this setting plus the form's
    # framing); this names the file's own limit in the page.
    largest = rt.settings.max_import_bytes
    data = await file.read(largest + 1)
    if len(data) > largest:
        return _form(request, user, f"The file is larger than {largest / (1024 * 1024):g} MB "
                                    "(DRIP_MAX_IMPORT_BYTES); split it.", 413, campaign)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _form(request, user, "The file is not UTF-8 text. In your spreadsheet, save it as "
                                    "“CSV UTF-8 (comma delimited)”.", 400, campaign)
    try:
        header, rows = read_rows(io.StringIO(text, newline=""))
        sample = list(itertools.islice(rows, PREVIEW_ROWS))
    except (ImportFileError, csv.Error) as exc:
        return _form(request, user, str(exc), 400, campaign)
    total = max(0, sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1)
    job = ImportJob(secrets.token_urlsafe(16), user.id, (file.filename or "upload.csv")[:200], text, campaign, total)
    _jobs(request).add(job)
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    return render(request, "admin/import_preview.html", {
        "job": job, "header": header, "sample": sample, "unknown": unknown, "campaign": rt.campaign(campaign),
    }, user=user)


@router.post("/import/{job_id}/start")
def import_start(request: Request, job_id: str, user: StaffUser, now: NowDep) -> Response:
    job = _jobs(request).get(job_id, user)
    if job is None:
        return render(request, "admin/not_found.html", {"what": "This import"}, user=user, status_code=404)
    if _jobs(request).claim(job):
        thread = threading.Thread(target=run_import, args=(_rt(request), job, now, user.actor),
                                  name=f"import-{job.id[:6]}", daemon=True)
        thread.start()
    return redirect(f"/admin/import/{job.id}")


@router.get("/import/{job_id}", response_class=HTMLResponse)
def import_progress(request: Request, job_id: str, user: StaffUser) -> HTMLResponse:
    job = _jobs(request).get(job_id, user)
    if job is None:
        return render(request, "admin/not_found.html", {"what": "This import"}, user=user, status_code=404)
    return render(request, "admin/import_progress.html", {
        "job": job, "status": job.status(), "campaign": _rt(request).campaigns.get(job.campaign_id)}, user=user)


@router.get("/import/{job_id}/status")
def import_status(request: Request, job_id: str, user: StaffUser) -> JSONResponse:
    job = _jobs(request).get(job_id, user)
    if job is None:
        return JSONResponse({"detail": "no such import"}, status_code=404)
    return JSONResponse(job.status(), headers={"Cache-Control": "no-store"})


@router.get("/import/{job_id}/errors.csv")
def import_errors(request: Request, job_id: str, user: StaffUser) -> Response:
    job = _jobs(request).get(job_id, user)
    if job is None or job.report is None:
        return Response("Not found", status_code=404, media_type="text/plain")
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(["line", "field", "problem"])
    for error in job.report.errors:
        writer.writerow([error.line, error.field, error.message])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="import-errors-{job.id[:8]}.csv"', "Cache-Control": "no-store"})
