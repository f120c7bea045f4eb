"""Staff UI page timings at scale: 100,000 contacts in a SQLite file, a real `drip serve`, httpx.

    python bench/admin_pages.py                 # 100k contacts, 20 requests per page
    python bench/admin_pages.py --contacts 1000000 --requests 10

What it does:
1. Creates a fresh SQLite database (`drip init`-equivalent: migrations, templates, an admin user)
   and bulk-inserts contacts, consent records, enrollments, messages and events with SQL
   `executemany` (one enrollment per contact, about three messages each, mixed statuses), then
   ANALYZE so SQLite's planner knows the table sizes.
2. Starts `drip serve --no-scheduler` in a subprocess on a free port against that file.
3. Signs in through the login form and times each page with httpx: the dashboard (its first request
   counts the funnel over every message; later ones reuse that count while the database has not
   changed, so both are shown — the first view's time is the "max" of that row), the funnel page over
   two ranges and its CSV, a campaign page, the messages list and its filters, the contacts list
   (first page, a page deep in the table, filters by campaign and step and by date), searches (last-name
   prefix, email prefix, phone, status filter), one contact's page, and the API search.
   Then the audit log (three reads per contact were inserted) unfiltered and filtered by person,
   kind and a date range.
4. Prints a table: median, 95th percentile and max in milliseconds, plus rows returned.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

LAST_NAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
              "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
              "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
              "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
              "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Reyes",
              "Okafor", "Kowalski", "Novak", "Schmidt", "Rossi", "Silva", "Kim", "Park", "Chen", "Wang", "Patel"]
FIRST_NAMES = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn", "Dana",
               "Chris", "Pat", "Robin", "Maria", "James", "Linda", "Michael", "Sarah", "David", "Emma", "Noah"]
READ_KINDS = ("contact_viewed", "message_viewed", "contacts_listed", "replies_viewed")
STEPS = [("welcome-email", "email"), ("welcome-sms", "sms"), ("stress-brain-email", "email"),
         ("checkin-sms", "sms"), ("how-it-works-email", "email"), ("results-email", "email"),
         ("reminder-sms", "sms"), ("consult-email", "email")]
ADMIN_EMAIL, ADMIN_PASSWORD = "bench-admin@example.com", "bench-password-123"
ADMIN_TOTP_SECRET = "BENCHBENCHBENCHBENCHBENCHBENCH22"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def naive(moment: datetime) -> str:
    """How the UTCDateTime column stores a time on SQLite."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def build_database(path: Path, contacts: int, seed: int) -> dict[str, object]:
    """Schema, templates and admin as `drip init` makes them, then the bulk rows. Returns facts."""
    from patient_drip import db
    from patient_drip.runtime import build_runtime
    from patient_drip.settings import Settings
    from patient_drip.content.template_store import sync_from_files
    from patient_drip.accounts.users import create_user

    url = f"sqlite:///{path}"
    settings = Settings(database_url=url, secret_key="bench-secret", _env_file=None)  # type: ignore[call-arg]
    db.upgrade(url)
    rt = build_runtime(settings)
    now = datetime.now(timezone.utc)
    with rt.sessions() as session, session.begin():
        sync_from_files(session, settings.templates_dir, now, "bench")
        admin = create_user(session, ADMIN_EMAIL, ADMIN_PASSWORD, "admin", now, "bench")
        admin.totp_secret = ADMIN_TOTP_SECRET  # admins must have two-step sign-in; `sign_in` types its code
    rt.close()

    rng = random.Random(seed)
    import sqlite3

    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    contact_rows, consent_rows, enrollment_rows, message_rows, event_rows, audit_rows = [], [], [], [], [], []
    booking_rows: list[tuple[object, ...]] = []
    message_id = 0
    for contact_id in range(1, contacts + 1):
        created = now - timedelta(days=30) + timedelta(seconds=contact_id * 25 / max(contacts, 1) * 86400 / 25)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        contact_rows.append((contact_id, first, last, f"{first}.{last}.{contact_id}@example.com".lower(),
                             f"+1{rng.choice(['312', '773', '217', '630'])}{contact_id:07d}", "America/Chicago",
                             "bench", 1, 1, None, None, "", naive(created), naive(created), None))
        for channel in ("email", "sms"):
            consent_rows.append((contact_id, channel, "granted", "web_form", f"{channel}-v1", "bench consent",
                                 "127.0.0.1", "bench", "patient:web_form", "", naive(created)))
        roll = rng.random()
        steps_done = rng.randint(1, len(STEPS))
        if roll < 0.55:
            status, reason = "active", None
        elif roll < 0.70:
            status, reason, steps_done = "completed", None, len(STEPS)
        elif roll < 0.85:
            status, reason = "exited", "booked"
        elif roll < 0.95:
            status, reason = "exited", "unsubscribed"
        else:
            status, reason = "paused", None
        steps_done = min(steps_done, 3 + rng.randint(0, 1)) if status != "completed" else steps_done
        ended = naive(created + timedelta(days=steps_done)) if status in ("exited", "completed") else None
        due = naive(now + timedelta(hours=rng.randint(1, 72))) if status == "active" else None
        enrollment_rows.append((contact_id, contact_id, "ketamine-consult", status, reason, steps_done,
                                naive(created), due, None, ended, "bench"))
        event_rows.append((contact_id, contact_id, None, "enrolled", '{"campaign": "ketamine-consult"}',
                           naive(created)))
        for index in range(steps_done):
            message_id += 1
            step, channel = STEPS[index]
            sent = created + timedelta(days=index)
            delivered = naive(sent + timedelta(seconds=5)) if rng.random() < 0.9 else None
            clicked = naive(sent + timedelta(hours=2)) if rng.random() < 0.08 else None
            if channel == "email" and delivered and rng.random() < 0.25:  # the provider's open events
                event_rows.append((contact_id, contact_id, message_id, "email_open", "{}", delivered))
            message_rows.append((
                message_id, contact_id, contact_id, "ketamine-consult", step, channel,
                "delivered" if delivered else "sent", f"{first}.{last}@example.com" if channel == "email" else "+1",
                "Your consultation request" if channel == "email" else None, f"Hi {first}, ... (bench body)",
                "<p>bench</p>" if channel == "email" else None, f"{channel}/bench", "1", "outbox", None, 1, None,
                None, naive(sent), naive(sent), naive(sent), delivered, clicked, naive(sent)))
            event_rows.append((contact_id, contact_id, message_id, "message_sent", "{}", naive(sent)))
        if reason == "booked":  # the booking that ended it, credited to their last message
            booking_rows.append((contact_id, "calendly", "booked", f"bench-{contact_id}", message_id, "last_message",
                                 "ketamine-consult", STEPS[steps_done - 1][0], ended))
        # Three reads per contact by 20 staff over the 30 days: the audit page's filters at scale.
        for _ in range(3):
            read_at = created + timedelta(hours=rng.randint(0, 24 * 30))
            audit_rows.append((f"staff{rng.randint(1, 20)}@clinic.example", rng.choice(READ_KINDS), contact_id,
                               '{"rows": 1}', naive(min(read_at, now))))
    connection.executemany(
        "INSERT INTO contact (id, first_name, last_name, email, phone, timezone, source, email_consent, sms_consent,"
        " email_blocked, sms_blocked, preferred_channel, created_at, updated_at, erased_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", contact_rows)
    connection.executemany(
        "INSERT INTO consent_record (contact_id, channel, action, method, wording_version, wording_text, ip_address,"
        " user_agent, actor, note, occurred_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", consent_rows)
    connection.executemany(
        "INSERT INTO enrollment (id, contact_id, campaign_id, status, exit_reason, step_index, enrolled_at,"
        " next_due_at, claimed_by, ended_at, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)", enrollment_rows)
    connection.executemany(
        "INSERT INTO message (id, enrollment_id, contact_id, campaign_id, step_id, channel, status, to_address,"
        " subject, body_text, body_html, template_name, template_version, provider, provider_message_id, attempts,"
        " last_error, error_code, created_at, attempted_at, sent_at, delivered_at, clicked_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", message_rows)
    connection.executemany(
        "INSERT INTO event (contact_id, enrollment_id, message_id, kind, detail, occurred_at) VALUES (?,?,?,?,?,?)",
        event_rows)
    connection.executemany("INSERT INTO audit_log (actor, action, contact_id, detail, created_at) VALUES (?,?,?,?,?)",
                           audit_rows)
    connection.executemany(
        "INSERT INTO booking (contact_id, provider, kind, external_id, message_id, attribution, campaign_id, step_id,"
        " name, received_at) VALUES (?,?,?,?,?,?,?,?,'',?)", booking_rows)
    # Texts from patients (one contact in twenty, 2 % of those unanswered, a few possible crises), their
    # threads, and staff tasks (500 open, 5,000 done): what the inbox and the To do page read.
    texters = range(1, contacts + 1, 20)
    at = naive(datetime.now(timezone.utc) - timedelta(days=3))
    connection.executemany(
        "INSERT INTO inbound_message (contact_id, from_number, body, classification, crisis, received_at, handled_at,"
        " handled_by) VALUES (?,?,?,?,?,?,?,?)",
        [(cid, f"+1312{cid:07d}"[:12], "is it covered by insurance?", "crisis" if cid % 997 == 1 else "other",
          cid % 997 == 1, at, None if cid % 50 == 1 else at, None if cid % 50 == 1 else "staff1@clinic.example")
         for cid in texters])
    connection.executemany(
        "INSERT INTO conversation (contact_id, state, state_at, state_by, last_inbound_at, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?)",
        [(cid, "open" if cid % 50 == 1 else "done", at, "", at, at, at) for cid in texters])
    connection.executemany(
        "INSERT INTO staff_task (kind, contact_id, created_at, done_at, done_by) VALUES (?,?,?,?,?)",
        [("new_request" if i % 3 else "no_show", 1 + (i * 37) % contacts, at, None if i < 500 else at,
          None if i < 500 else "staff1@clinic.example") for i in range(5500)])
    connection.commit()
    connection.execute("ANALYZE")
    connection.commit()
    connection.close()
    return {"contacts": contacts, "messages": len(message_rows), "events": len(event_rows), "bookings": len(booking_rows),
            "insert_seconds": time.perf_counter() - started}


def start_server(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DRIP_DATABASE_URL": f"sqlite:///{path}", "DRIP_SECRET_KEY": "bench-secret",
           "DRIP_PUBLIC_URL": f"http://127.0.0.1:{port}", "DRIP_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-c", "import sys; from patient_drip.cli import main; sys.argv[0] = 'drip'; main()",
               "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"]
    output = log.open("wb")  # noqa: SIM115  (closed when the process ends)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"drip serve exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("drip serve did not start within 60 s")


def sign_in(client: httpx.Client) -> None:
    page = client.get("/admin/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, "no login form"
    response = client.post("/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
                                                 "csrf_token": token.group(1), "next": "/admin"})
    assert response.status_code == 303, f"sign-in failed: {response.status_code}"
    if response.headers["location"].startswith("/admin/login/code"):  # the second step, as the app would
        import pyotp

        response = client.post("/admin/login/code", data={"code": pyotp.TOTP(ADMIN_TOTP_SECRET).now(),
                                                          "csrf_token": token.group(1), "next": "/admin"})
        assert response.status_code == 303, f"second step failed: {response.status_code}"


def api_token(client: httpx.Client) -> str:
    account = client.get("/admin/account")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', account.text).group(1)  # type: ignore[union-attr]
    page = client.post("/admin/account/tokens", data={"name": "bench", "scopes": ["contacts:read"], "csrf_token": csrf})
    return re.search(r'id="new-token">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]


def rows_in(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(len(response.json().get("items", [])))
    if '<table id="audit">' in response.text:
        return str(response.text.count('<td class="nowrap">'))
    if '<table id="messages">' in response.text:
        return str(response.text.count('<td class="nowrap">'))
    count = len(re.findall(r'<th scope="row"><a href="/admin/contacts/\d+"', response.text))
    return str(count) if count else ""


def time_page(client: httpx.Client, url: str, requests: int, headers: dict[str, str] | None = None,
              warm: bool = True) -> tuple[list[float], httpx.Response]:
    if warm:
        client.get(url, headers=headers)
    samples = []
    response = None
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, f"{url}: {response.status_code}"
    assert response is not None
    return samples, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="how many contacts to insert")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--seed", type=int, default=5, help="random seed for the generated data")
    parser.add_argument("--keep", action="store_true", help="keep the database file (path is printed)")
    parser.add_argument("--port", type=int, default=0, help="port of the server (default: any free one)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="drip-bench-"))
    path = workdir / "bench.db"
    print(f"building {path} with {args.contacts:,} contacts …", flush=True)
    facts = build_database(path, args.contacts, args.seed)
    size = sum(p.stat().st_size for p in workdir.iterdir()) / 1e6
    print(f"  {facts['contacts']:,} contacts, {facts['messages']:,} messages, {facts['events']:,} events, "
          f"{facts['bookings']:,} bookings "
          f"inserted in {facts['insert_seconds']:.1f} s ({size:.0f} MB)")
    port = args.port or free_port()
    log = workdir / "serve.log"
    server = start_server(path, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            sign_in(client)
            headers = {"Authorization": f"Bearer {api_token(client)}"}
            now = datetime.now(timezone.utc)
            middle = args.contacts // 2
            sample_contact = args.contacts // 3
            pages = [
                ("dashboard (first view counts the funnel)", "/admin", None),
                ("dashboard (nothing changed since)", "/admin", None),
                ("funnel page, last 30 days", "/admin/funnel", None),
                ("funnel page, a 7-day range", f"/admin/funnel?from={(now - timedelta(days=20)).date()}"
                                               f"&to={(now - timedelta(days=14)).date()}", None),
                ("funnel CSV per day", "/admin/funnel.csv?by=day", None),
                ("campaign page (its own funnel)", "/admin/campaigns/ketamine-consult", None),
                ("messages, first page", "/admin/messages", None),
                ("messages: sms + delivered", "/admin/messages?channel=sms&status=delivered", None),
                ("messages: one step", "/admin/messages?step=results-email", None),
                ("messages: sent on one day", f"/admin/messages?from={(now - timedelta(days=15)).date()}"
                                              f"&to={(now - timedelta(days=15)).date()}", None),
                ("messages: person 'Smi'", "/admin/messages?q=Smi", None),
                ("messages: skipped (none)", "/admin/messages?status=skipped", None),
                ("contacts: campaign + last step", "/admin/contacts?campaign=ketamine-consult&step=stress-brain-email",
                 None),
                ("contacts: added on one day", f"/admin/contacts?from={(now - timedelta(days=15)).date()}"
                                               f"&to={(now - timedelta(days=15)).date()}", None),
                ("contacts list, first page", "/admin/contacts", None),
                ("contacts list, deep page (before=mid)", f"/admin/contacts?before={middle}", None),
                ("search last name prefix 'Smi'", "/admin/contacts?q=Smi", None),
                ("search 'maria smith'", "/admin/contacts?q=maria+smith", None),
                ("search email prefix", "/admin/contacts?q=alex.", None),
                ("search phone (national digits)", "/admin/contacts?q=312+000", None),
                ("filter status=paused", "/admin/contacts?status=paused", None),
                ("search 'Smi' + status=booked", "/admin/contacts?q=Smi&status=booked", None),
                ("contact page (timeline)", f"/admin/contacts/{sample_contact}", None),
                ("API GET /api/v1/contacts?q=Smi", "/api/v1/contacts?q=Smi", headers),
                ("audit log, first page", "/admin/audit", None),
                ("audit: who=staff7", "/admin/audit?who=staff7%40clinic.example", None),
                ("audit: kind=contact_viewed", "/admin/audit?kind=contact_viewed", None),
                ("audit: who + kind + 3 days", f"/admin/audit?who=staff7%40clinic.example&kind=message_viewed"
                                               f"&since={(now - timedelta(days=12)).date()}"
                                               f"&until={(now - timedelta(days=10)).date()}", None),
                ("audit: a rare action (no match)", "/admin/audit?kind=user_disabled", None),
                ("To do (500 open tasks, replies waiting)", "/admin/tasks", None),
                ("text inbox (open threads)", "/admin/replies", None),
                ("text inbox: done", "/admin/replies?show=done", None),
                ("one conversation", f"/admin/replies/contacts/{1 + 20 * 7}", None),
                ("contact edit page", f"/admin/contacts/{sample_contact}/edit", None),
                ("enroll form", "/admin/contacts/new", None),
                ("review queue", "/admin/review", None),
                ("bookings", "/admin/bookings", None),
                ("import form", "/admin/import", None),
                ("templates", "/admin/templates", None),
                ("template editor", "/admin/templates/edit/email/02-stress-brain.html", None),
                ("claims library", "/admin/claims", None),
                ("campaigns", "/admin/campaigns", None),
                ("users", "/admin/users", None),
                ("settings", "/admin/settings", None),
                ("account", "/admin/account", None),
            ]
            results = []
            for label, url, extra in pages:
                samples, response = time_page(client, url, args.requests, extra, warm=not label.startswith(
                    "dashboard (first view"))
                results.append((label, samples, rows_in(response)))
    except AssertionError as exc:
        raise SystemExit(f"{exc}\nserver log:\n{log.read_text(errors='replace')[-5000:]}") from None
    finally:
        server.terminate()
        server.wait(timeout=10)
    print()
    print(f"{'page':<42} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'rows':>5}")
    print("-" * 77)
    for label, samples, rows in results:
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        print(f"{label:<42} {statistics.median(samples):>10.1f} {p95:>8.1f} {max(samples):>8.1f} {rows:>5}")
    print(f"\n{args.requests} requests per page, sequential, over HTTP/1.1 on loopback; SQLite file, "
          f"one `drip serve` process (no scheduler).")
    if args.keep:
        print(f"database kept: {path}")
    else:
        for item in workdir.iterdir():
            item.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
