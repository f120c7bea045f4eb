"""Pytest fixtures for the provider sandbox (conftest.py imports them, so every test has them).

* `sandbox` -- a running `SandboxServer` on a free loopback port with fast callbacks
  (``callback_delay_ms=5``); ``sandbox.url`` is the base URL for both SDKs,
  ``sandbox.config`` holds the credentials it accepts, ``sandbox.public_key`` verifies its
  SendGrid events.
* `make_sandbox(**config)` -- the same with your own `SandboxConfig` fields; several allowed.
* `webhook_sink` -- a tiny loopback HTTP server that records every request (raw body and
  headers), for checking callbacks without the real web app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from patient_drip.providers.sandbox import SandboxServer


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Factory: ``make_sandbox(**SandboxConfig fields) -> started SandboxServer``."""
    servers: list[SandboxServer] = []

    def make(**config: Any) -> SandboxServer:
        config.setdefault("callback_delay_ms", 5)
        server = SandboxServer(**config).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        # Don't wait for uvicorn's shutdown (~0.2 s each): each sandbox has its own port and
        # its thread is a daemon that ends by itself.
        server.stop(wait=False)


@pytest.fixture
def sandbox(make_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    """A started sandbox with default credentials and fast callbacks."""
    return make_sandbox()


@dataclass
class ReceivedRequest:
    """One request the `webhook_sink` received."""

    method: str
    path: str  # with the query string, as sent
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"


@dataclass
class WebhookSink:
    """Records requests; `url` is its base, `respond()` sets the answer for a path."""

    url: str = ""
    requests: list[ReceivedRequest] = field(default_factory=list)
    _replies: dict[str, _Reply] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def respond(self, path: str, body: str = "", status: int = 200, content_type: str = "text/plain") -> None:
        self._replies[path] = _Reply(status, body.encode(), content_type)

    def reply_for(self, path: str) -> _Reply:
        return self._replies.get(path.split("?", 1)[0], _Reply())

    def add(self, request: ReceivedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def wait_for(self, count: int, path: str | None = None, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until `count` requests (to paths starting with `path`) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.requests if path is None or r.path.startswith(path)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} request(s) to {path or 'any path'}, got {len(found)}")
                self._changed.wait(remaining)


@pytest.fixture
def webhook_sink() -> Iterator[WebhookSink]:
    """A started `WebhookSink` on a free loopback port."""
    sink = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            sink.add(ReceivedRequest("POST", self.path, dict(self.headers.items()), body))
            reply = sink.reply_for(self.path)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="webhook-sink", daemon=True
    )
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()
