"""Attackers who send more than any route needs: bodies are refused (413, naming the limit) while
they stream in, so a 50 MB chunked post does not make the server hold 50 MB.

Issue 11, item 4. The server is `drip serve` in a child process, so its peak resident memory
(VmHWM in /proc/<pid>/status, reset before each attack through /proc/<pid>/clear_refs) is its own.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from patient_drip.providers.sandbox import SendGridSigner
from support.databases import TEMPLATES
from support.live import free_port, wait_until

ATTACK_BYTES = 50 * 1024 * 1024
# What the server may grow by while refusing one attack: a few read buffers, the response, the
# allocator's slack. The body itself (50 MB, twice over when joined) would be far above it.
ALLOWED_GROWTH_KIB = 12 * 1024
ROUTES = ["/api/consultations", "/webhooks/twilio/sms", "/webhooks/sendgrid/events", "/webhooks/booking"]
HEADERS = {  # what each route checks before it reads the body: the attack carries it
    "/api/consultations": {"Content-Type": "application/x-www-form-urlencoded"},
    "/webhooks/twilio/sms": {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA"},
    "/webhooks/sendgrid/events": {"Content-Type": "application/json",
                                  "X-Twilio-Email-Event-Webhook-Signature": "AAAA",
                                  "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time()))},
    "/webhooks/booking": {"Content-Type": "application/json", "X-Drip-Signature": "sha256=00",
                          "X-Drip-Timestamp": str(int(time.time()))},
}


class Server:
    """`drip serve --no-scheduler` on a migrated SQLite copy, with every webhook configured."""

    def __init__(self, tmp: Path) -> None:
        self.database = tmp / "drip.db"
        TEMPLATES.copy_sqlite(self.database)
        self.port = free_port()
        env = {**os.environ, "DRIP_DATABASE_URL": f"sqlite:///{self.database}", "DRIP_SECRET_KEY": "limits-test-secret",
               "DRIP_PUBLIC_URL": f"http://127.0.0.1:{self.port}", "TWILIO_AUTH_TOKEN": "limits-token",
               "SENDGRID_WEBHOOK_PUBLIC_KEY": SendGridSigner().public_key,
               "DRIP_BOOKING_WEBHOOK_SECRET": "limits-booking-secret"}
        drip = Path(sys.executable).with_name("drip")
        self.process = subprocess.Popen([str(drip), "serve", "--no-scheduler", "--port", str(self.port)], env=env,
                                        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._answers, timeout=30)

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.process.stderr.read().decode() if self.process.stderr else ""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def peak_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("limits"))
    yield running
    running.stop()


def raw_post(port: int, path: str, headers: dict[str, str], *, chunked_bytes: int = 0,
             declared_length: int | None = None, prefix: bytes = b"") -> tuple[int, bytes, int]:
    """POST over a plain socket, as an attacker's script would: either a chunked body of
    `chunked_bytes` (sent until the server stops reading; starting with `prefix`), or only a
    `Content-Length` header.
    Returns (status, response body, bytes of body the server let us send)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append("Transfer-Encoding: chunked" if declared_length is None else f"Content-Length: {declared_length}")
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    received = bytearray()

    def read() -> None:  # concurrently: the answer comes while we are still sending
        try:
            while chunk := connection.recv(65536):
                received.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read)
    sent = 0
    try:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reader.start()
        if prefix:
            connection.sendall(f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")
        piece = b"x" * 65536
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        try:
            while sent < chunked_bytes:
                connection.sendall(frame)
                sent += len(piece)
            if declared_length is None:
                connection.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: the rest of the body is refused
            pass
        reader.join(timeout=30)
    finally:
        connection.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), head[:100]
    return int(head.split()[1]), body, sent


def contacts_stored(server: Server) -> int:
    with sqlite3.connect(server.database) as connection:
        return int(connection.execute("SELECT count(*) FROM contact").fetchone()[0])


@pytest.mark.parametrize("path", ROUTES)
def test_a_large_chunked_body_is_refused_while_it_streams_without_the_server_holding_it(server, path):
    server.reset_peak()
    before = server.peak_kib()
    status, body, sent = raw_post(server.port, path, HEADERS[path], chunked_bytes=ATTACK_BYTES)
    growth = server.peak_kib() - before
    assert status == 413
    detail = json.loads(body)["detail"]
    assert "DRIP_MAX_BODY_" in detail and "larger than" in detail
    assert growth < ALLOWED_GROWTH_KIB, f"{path}: the server's peak grew by {growth} KiB"
    assert contacts_stored(server) == 0


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_content_length_over_the_limit_is_refused_before_any_body(server, path):
    started = time.monotonic()
    status, body, _sent = raw_post(server.port, path, HEADERS[path], declared_length=300 * 1024 * 1024)
    assert status == 413 and "larger than" in json.loads(body)["detail"]
    assert time.monotonic() - started < 5  # answered at once: it did not wait for 300 MB


MULTIPART = "multipart/form-data; boundary=attack"
FILE_PART = (b'--attack\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
             b"Content-Type: text/csv\r\n\r\nemail\r\n")


@pytest.mark.parametrize(("path", "size", "content_type", "setting"), [
    ("/admin/login", 2 * 1024 * 1024, MULTIPART, "DRIP_MAX_BODY_STAFF"),
    ("/api/v1/contacts", 2 * 1024 * 1024, "application/json", "DRIP_MAX_BODY_STAFF"),
    ("/admin/import", 21 * 1024 * 1024, MULTIPART, "DRIP_MAX_IMPORT_BYTES"),  # a file part, spooled to disk
])
def test_staff_and_other_routes_have_their_own_limits(server, path, size, content_type, setting):
    status, body, _sent = raw_post(server.port, path, {"Content-Type": content_type}, chunked_bytes=size,
                                   prefix=FILE_PART if content_type == MULTIPART else b"")
    assert status == 413 and setting in json.loads(body)["detail"]


def test_a_body_within_the_limit_still_reaches_the_route(server):
    response = httpx.post(f"http://127.0.0.1:{server.port}/webhooks/twilio/sms", data={"Body": "x" * 500_000},
                          headers={"X-Twilio-Signature": "AAAA"})
    assert response.status_code == 403  # the route read it and checked the signature: not a size refusal


# -- the template sandbox: memory as well as time ----------------------------------------------------

MEMORY_BOMB = "{% set x = [] %}{% for i in range(100000) %}{% set _ = x.extend(range(100000)) %}{% endfor %}{{ x|length }}"
DICT_BOMB = ("{% set d = {} %}{% for i in range(100000) %}{% set _ = d.update({i: 'x' * 100000}) %}{% endfor %}"
             "{{ d|length }}")
APPEND_BOMB = "{% set x = [] %}{% for i in range(100000) %}{% set _ = x.append('y' * 400000) %}{% endfor %}{{ x|length }}"
PEAK_SCRIPT = """
import resource, sys, time
from pathlib import Path
from patient_drip.content.rendering import Renderer, RenderError
renderer = Renderer(Path(sys.argv[1]), {"sms/bomb.txt": sys.argv[2]})
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    renderer.render_sms("sms/bomb.txt", {})
    outcome = "rendered"
except RenderError as exc:
    outcome = str(exc)
print(round(time.monotonic() - started, 3), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline, outcome,
      sep="\\t")
"""


@pytest.mark.parametrize("bomb", [MEMORY_BOMB, DICT_BOMB, APPEND_BOMB])
def test_a_template_that_fills_memory_is_refused_quickly_and_stays_small(bomb, tmp_path):
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path), bomb], capture_output=True,
                            text=True, timeout=60, check=True)
    seconds, growth_kib, outcome = result.stdout.strip().split("\t")
    assert outcome.startswith("sms/bomb.txt:1: template uses too much memory:"), outcome
    assert float(seconds) < 1.0  # not the 2 s time budget: counted, not timed out
    assert int(growth_kib) < 64 * 1024, f"peak grew by {growth_kib} KiB"


def test_the_preview_and_templates_check_refuse_the_memory_bomb(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from patient_drip.cli import main
    from support.builders import ROOT, VirtualClock
    from support.staff import add_user, make_client, runtime_for, sign_in_as

    rt = runtime_for(f"sqlite:///{tmp_path / 'drip.db'}")
    clock = VirtualClock()
    try:
        with make_client(rt, clock) as web:
            csrf = sign_in_as(web, rt, add_user(rt, "marketing"), clock.now)
            started = time.monotonic()
            response = web.post("/admin/templates/preview/sms/01-welcome.txt", json={"source": MEMORY_BOMB},
                                headers={"X-CSRF-Token": csrf})
            assert time.monotonic() - started < 3
        assert response.status_code == 200 and response.json()["ok"] is False
        assert "template uses too much memory" in json.dumps(response.json())
    finally:
        rt.close()
    templates = tmp_path / "templates"
    import shutil
    shutil.copytree(ROOT / "templates", templates)
    (templates / "sms" / "02-checkin.txt").write_text(MEMORY_BOMB)
    monkeypatch.setenv("DRIP_TEMPLATES_DIR", str(templates))
    monkeypatch.setenv("DRIP_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("DRIP_SECRET_KEY", "templates-check-secret")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["templates", "check"])
    assert result.exit_code == 1
    assert "sms/02-checkin.txt:1: template uses too much memory" in result.output, result.output
