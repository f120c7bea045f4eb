"""Running the sandbox: the ASGI app, a background-thread server for tests, and ``drip sandbox``.

`create_app` assembles the routes of `twilio_api`, `sendgrid_api` and `control` over one
`SandboxState` and starts the `CallbackPoster` with the app's lifespan; `SandboxServer` serves it on
a thread with a Python API for tests, demos and benchmarks; `run_sandbox` serves it in the foreground.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import control, sendgrid_api, twilio_api
from .callbacks import CallbackPoster
from .config import Fault, RecipientRule, SandboxConfig
from .records import fill_events
from .state import SandboxState
from .wire import TWILIO_API_VERSION, Provider, twilio_error


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # Callbacks run on the server's event loop, so the poster is made once that loop runs.
    state: SandboxState = app.state.sandbox
    poster = CallbackPoster(state)
    app.state.callbacks = poster
    try:
        yield
    finally:
        state.stopping.set()
        app.state.callbacks = None
        await poster.close()


async def _not_found(request: Request) -> Response:
    """A 404 in the shape of whichever API the path belongs to."""
    path = request.url.path
    if path.startswith(f"/{TWILIO_API_VERSION}/"):
        return twilio_error(20404, path=path)
    if path.startswith("/v3/"):
        return JSONResponse({"errors": [{"field": None, "message": "resource not found"}]}, status_code=404)
    return JSONResponse({"error": "not found"}, status_code=404)


def create_app(state: SandboxState) -> Starlette:
    """The sandbox's ASGI app over `state` (callback delivery starts with the app's lifespan)."""
    routes = [
        *twilio_api.routes,
        *sendgrid_api.routes,
        *control.routes,
        Route("/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes, lifespan=_lifespan)
    app.state.sandbox = state
    app.state.callbacks = None
    return app


class SandboxServer:
    """The sandbox on a background thread (uvicorn), for tests, demos and benchmarks.

    ``port=0`` picks a free port. Use as a context manager, or `start()` / `stop()`.
    `url` is the base URL for both SDKs (Twilio's and SendGrid's paths do not overlap).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.host = host
        self.state = SandboxState(SandboxConfig.from_kwargs(**config))
        self.app = create_app(self.state)
        self._requested_port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SandboxServer:
        """Bind, serve on a daemon thread and return once callbacks can run; RuntimeError if not within `timeout`."""
        if self._thread is not None:
            raise RuntimeError("sandbox already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when
        # the listening socket says so; with proto 0 every keep-alive response waits ~40 ms for
        # a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=1, timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="drip-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self._server.started and self.app.state.callbacks is not None):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sandbox server did not start")
            time.sleep(0.005)
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop serving. With ``wait=False`` return at once and let the server thread finish
        by itself (~0.2 s: uvicorn polls its exit flag every 100 ms) -- handy in test teardown."""
        self.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and wait:
            self._thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the running sandbox; RuntimeError before `start()`."""
        if self.port is None:
            raise RuntimeError("sandbox not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    twilio_base_url = url
    sendgrid_base_url = url

    @property
    def config(self) -> SandboxConfig:
        """The configuration in force."""
        return self.state.config

    @property
    def public_key(self) -> str:
        """Base64 DER public key that verifies the event webhooks (SENDGRID_WEBHOOK_PUBLIC_KEY)."""
        return self.state.public_key

    # Python API ------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change settings (any `SandboxConfig` field) while running; ValueError on bad ones."""
        return self.state.update_config(**changes)

    def messages(self, provider: str | None = None, to: str | None = None) -> list[dict[str, Any]]:
        """Recorded messages, oldest first (of `provider` / to `to` when given)."""
        return self.state.messages(provider, to)

    def wait_for_messages(
        self, count: int, provider: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until at least `count` messages (of `provider`) were recorded; return them."""
        return self._wait_for_count(lambda state: state.messages(provider), count, timeout)

    def wait_for_callbacks(
        self, count: int, kind: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until at least `count` callbacks (of `kind`) were attempted; return their log."""
        return self._wait_for_count(lambda state: state.callbacks(kind), count, timeout)

    def _wait_for_count(
        self, read: Callable[[SandboxState], list[dict[str, Any]]], count: int, timeout: float
    ) -> list[dict[str, Any]]:
        def enough(state: SandboxState) -> list[dict[str, Any]] | None:
            found = read(state)
            return found if len(found) >= count else None

        return self.state.wait_for(enough, timeout)

    def add_fault(self, provider: Provider, fault: Fault | None = None, **fields: Any) -> None:
        """Queue a fault for `provider`: `fault`, or one built from `fields`."""
        self.state.add_fault(provider, fault or Fault(**fields))

    def add_rule(self, rule: RecipientRule) -> None:
        """Add a recipient rule (it wins over earlier and built-in ones)."""
        self.state.add_rule(rule)

    def set_latency(self, provider: Provider, latency_ms: int) -> None:
        """Delay every request to `provider` by `latency_ms`."""
        self.state.set_latency(provider, latency_ms)

    def set_random_faults(self, provider: Provider, rate: float, faults: Iterable[Fault],
                          seed: int | None = None) -> None:
        """Fail about `rate` of the requests to `provider` with a fault picked from `faults` (seeded)."""
        self.state.set_random_faults(provider, rate, faults, seed)

    def clear_faults(self) -> None:
        """Drop queued and random faults, latencies and added rules."""
        self.state.clear_faults()

    def reset(self) -> None:
        """Forget messages, callbacks and faults."""
        self.state.reset_messages()
        self.state.clear_faults()

    def _poster(self) -> CallbackPoster:
        poster: CallbackPoster | None = self.app.state.callbacks
        if poster is None:
            raise RuntimeError("sandbox not running")
        return poster

    def send_twilio_status(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> dict[str, Any]:
        """Post a signed status callback for `sid` now (out-of-order tests); returns the log entry."""
        poster = self._poster()
        return poster.run_threadsafe(poster.push_twilio_status(sid, status, error_code, url))

    def send_sendgrid_events(self, events: Iterable[Mapping[str, Any]], url: str | None = None) -> dict[str, Any]:
        """Sign and post arbitrary events now (timestamp / sg_event_id filled in when missing)."""
        poster = self._poster()
        return poster.run_threadsafe(poster.post_sendgrid_events(fill_events(events), url))

    def send_inbound_sms(self, from_: str, body: str, to: str | None = None) -> httpx.Response:
        """Act as a patient texting the clinic: returns the app's webhook response (TwiML)."""
        poster = self._poster()
        target = to or self.state.config.twilio_service_number
        return poster.run_threadsafe(poster.post_inbound(from_, target, body))


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    announce: Callable[[str], None] | None = print,
    log_level: str = "info",
    **config: Any,
) -> None:
    """Serve the sandbox in the foreground until interrupted (the body of ``drip sandbox``).

    `config` takes any `SandboxConfig` field (credentials, callback URLs, delays, key); ``None``
    values keep the default and ``account_sid`` / ``auth_token`` / ``api_key`` are accepted as
    short names. Pass ``announce=None`` when the caller prints its own banner.
    """
    state = SandboxState(SandboxConfig.from_kwargs(**config))
    app = create_app(state)
    if announce is not None:
        base = f"http://{host}:{port}"
        cfg = state.config
        announce(
            "patient-drip provider sandbox\n"
            f"  inbox:                       {base}/\n"
            f"  DRIP_TWILIO_BASE_URL={base}\n"
            f"  DRIP_SENDGRID_BASE_URL={base}\n"
            f"  TWILIO_ACCOUNT_SID={cfg.twilio_account_sid}\n"
            f"  TWILIO_AUTH_TOKEN={cfg.twilio_auth_token}\n"
            f"  SENDGRID_API_KEY={cfg.sendgrid_api_key}\n"
            f"  SENDGRID_WEBHOOK_PUBLIC_KEY={state.public_key}\n"
            f"  inbound SMS webhook: {cfg.twilio_inbound_url or '(not set)'}\n"
            f"  SendGrid event webhook: {cfg.sendgrid_event_url or '(not set)'}"
        )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
    )
    server.run()
