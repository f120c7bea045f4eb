"""Real servers for tests: a free loopback port, waiting for a condition, and our web app served by
uvicorn in a thread (so the provider sandbox, a browser or httpx can reach it over HTTP)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn

from patient_drip.providers.sandbox import SandboxServer
from patient_drip.runtime import Runtime, build_runtime
from patient_drip.web.app import create_app
from support.builders import sandbox_settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_url() -> str:
    """`http://127.0.0.1:<free port>`: a public URL for a `LiveApp`."""
    return f"http://127.0.0.1:{free_port()}"


def wait_until(predicate: Callable[[], bool], timeout: float = 8.0, interval: float = 0.05) -> None:
    """Return once `predicate()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


class LiveApp:
    """Our web app for `rt`, served by uvicorn in a thread on the port of `rt.settings.public_url`.

    A context manager: entering returns once uvicorn accepts connections, leaving stops it. With
    `access_log=True` uvicorn logs every request through the root logger's handlers (as `drip
    serve` does once our logging is configured) instead of its own."""

    def __init__(self, rt: Runtime, clock: Callable[[], datetime], *, access_log: bool = False) -> None:
        self.port = int(rt.settings.public_url.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = access_log
        logging_options: dict[str, object] = (
            {"log_config": None, "log_level": "info", "access_log": True} if access_log else {"log_level": "warning"}
        )
        config = uvicorn.Config(create_app(rt, clock=clock), host="127.0.0.1", port=self.port,
                                **logging_options)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"live-app-{self.port}", daemon=True)

    def __enter__(self) -> LiveApp:
        if self.access_log:
            # A uvicorn started earlier in this process (the sandbox's) gave the shared "uvicorn"
            # loggers handlers of their own that do not propagate: send them to ours, as
            # `log_config=None` means.
            for name in ("uvicorn", "uvicorn.access"):
                logging.getLogger(name).handlers = []
                logging.getLogger(name).propagate = True
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("web app did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def live_sandbox_runtime(database_url: str, sandbox: SandboxServer, **overrides: object) -> Runtime:
    """A runtime in providers mode against `sandbox` (`sandbox_settings`) on the migrated database
    at `database_url`, its public URL on a free loopback port, with the sandbox's inbound-SMS and
    event webhooks pointed there. Serve it with `LiveApp` so the callbacks arrive; close it after."""
    settings = sandbox_settings(database_url, sandbox, **{"public_url": loopback_url(), **overrides})
    rt = build_runtime(settings)
    sandbox.configure(twilio_inbound_url=f"{settings.public_url}/webhooks/twilio/sms",
                      sendgrid_event_url=f"{settings.public_url}/webhooks/sendgrid/events")
    return rt


@contextmanager
def live_staff_client(app: LiveApp, rt: Runtime, user_id: int, now: datetime) -> Iterator[tuple[httpx.Client, str]]:
    """An HTTP client of `app` signed in as the user `user_id` (the signed cookie the login form
    issues, made directly: sign-in has its own tests) and the CSRF token its pages carry."""
    import re

    from patient_drip.models import User
    from patient_drip.web.admin.auth import SESSION_COOKIE, issue_session

    with rt.sessions() as session, session.begin():
        value = issue_session(rt, session, session.get(User, user_id), now)
    with httpx.Client(base_url=app.url, headers={"Cookie": f"{SESSION_COOKIE}={value}"}, timeout=10) as client:
        page = client.get("/admin/account")
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert page.status_code == 200 and match, page.status_code
        yield client, match.group(1)


@contextmanager
def drip_process(args: list[str], env: dict[str, str], log_path: Path, *, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `drip …` process (e.g. ["serve", "--port", "8611"] or ["worker"]) with `env` as its whole
    environment, its output in `log_path`; entered once `ready` appears in that output, stopped
    with SIGTERM (then SIGKILL) when left. The output is in the assertion message if it never starts."""
    command = [sys.executable, "-c", "import sys; sys.argv[0] = 'drip'; from patient_drip.cli import main; main()", *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while ready not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"drip {args[0]} did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
