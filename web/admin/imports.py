"""CSV import in the browser: upload → choose which field each column holds (recognised names
preselected: `contacts.column_mapping`) with the first rows shown → every row checked before anything
is written, with the problems listed and downloadable → import in a background thread with a
progress bar (polled by admin.js) → per-row report (also downloadable as CSV).

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
from patient_drip.contacts.column_mapping import FIELD_LABELS, IGNORE, KNOWN_COLUMNS, MappingError, check, remap, suggest
from patient_drip.contacts.import_rows import ImportFileError, RowError, read_rows, validate_rows
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
    header: list[str] = field(default_factory=list)  # the column names as the file has them
    chosen: list[str] = field(default_factory=list)  # the field each column holds (`column_mapping`)
    original: str = ""  # the file as uploaded; `text` is it with our names once the columns are chosen
    checked: bool = False  # every row was checked with the chosen columns
    ready_rows: int = 0
    problems: list[RowError] = field(default_factory=list)

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
    """Read the file and show its columns; nothing is imported yet."""
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
        header = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        return _form(request, user, f"line 1: not a CSV header: {exc}", 400, campaign)
    if not [name for name in header if name.strip()]:
        return _form(request, user, "The file is empty; the first line must name the columns, such as "
                                    "first_name,email,phone.", 400, campaign)
    total = max(0, sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1)
    job = ImportJob(secrets.token_urlsafe(16), user.id, (file.filename or "upload.csv")[:200], text, campaign, total,
                    header=header, chosen=suggest(header), original=text)
    _jobs(request).add(job)
    return _columns_page(request, user, job)


def _sample(job: ImportJob) -> list[list[str]]:
    reader = csv.reader(io.StringIO(job.original, newline=""))
    try:
        return [row for row in itertools.islice(reader, 1, PREVIEW_ROWS + 1)]
    except csv.Error as exc:
        return [[f"unreadable CSV row: {exc}"]]


def _columns_page(request: Request, user: CurrentUser, job: ImportJob, problems: list[str] | None = None,
                  status_code: int = 200) -> HTMLResponse:
    return render(request, "admin/import_preview.html", {
        "job": job, "sample": _sample(job), "campaign": _rt(request).campaign(job.campaign_id),
        "fields": [(name, FIELD_LABELS[name]) for name in KNOWN_COLUMNS], "ignore": IGNORE,
        "problems": problems or [],
    }, user=user, status_code=status_code)


def _not_found(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "admin/not_found.html", {"what": "This import"}, user=user, status_code=404)


@router.get("/import/{job_id}/columns", response_model=None)
def import_columns(request: Request, job_id: str, user: StaffUser) -> Response:
    """Choose the columns again (before the import started)."""
    job = _jobs(request).get(job_id, user)
    if job is None:
        return _not_found(request, user)
    if job.state != "ready":
        return redirect(f"/admin/import/{job.id}")
    return _columns_page(request, user, job)


@router.post("/import/{job_id}/check", response_model=None)
async def import_check(request: Request, job_id: str, user: StaffUser) -> Response:
    """Check every row with the chosen columns and show what would be imported; nothing is written."""
    job = _jobs(request).get(job_id, user)
    if job is None:
        return _not_found(request, user)
    if job.state != "ready":
        return redirect(f"/admin/import/{job.id}")
    form = await request.form()
    chosen = [str(form.get(f"column_{i}", IGNORE))[:40] for i in range(len(job.header))]
    job.chosen, job.checked = chosen, False
    try:
        check(job.header, chosen)
        job.text = remap(job.original, chosen)
        _header, rows = read_rows(io.StringIO(job.text, newline=""))
        results = validate_rows(list(rows), _rt(request).settings.clinic_timezone)
    except MappingError as exc:
        return _columns_page(request, user, job, exc.problems, 400)
    except (ImportFileError, csv.Error) as exc:
        return _columns_page(request, user, job, [str(exc)], 400)
    job.problems = [result for result in results if isinstance(result, RowError)]
    job.ready_rows = len(results) - len(job.problems)
    job.checked = True
    return render(request, "admin/import_check.html", {
        "job": job, "campaign": _rt(request).campaign(job.campaign_id),
        "columns": [(name, FIELD_LABELS[field]) for name, field in zip(job.header, chosen) if field],
        "skipped": [name for name, field in zip(job.header, chosen) if not field],
    }, user=user)


@router.get("/import/{job_id}/problems.csv")
def import_problems(request: Request, job_id: str, user: StaffUser) -> Response:
    """The check's problems, one row each, to fix in the spreadsheet."""
    job = _jobs(request).get(job_id, user)
    if job is None or not job.checked:
        return Response("Not found", status_code=404, media_type="text/plain")
    return _errors_csv(job.problems, f"import-problems-{job.id[:8]}.csv")


def _errors_csv(errors: list[RowError], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(["line", "field", "problem"])
    for error in errors:
        writer.writerow([error.line, error.field, error.message])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.post("/import/{job_id}/start")
def import_start(request: Request, job_id: str, user: StaffUser, now: NowDep) -> Response:
    job = _jobs(request).get(job_id, user)
    if job is None:
        return _not_found(request, user)
    if job.state == "ready" and not job.checked:  # every row is checked before anything is written
        return redirect(f"/admin/import/{job.id}/columns")
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
    return _errors_csv(list(job.report.errors), f"import-errors-{job.id[:8]}.csv")
