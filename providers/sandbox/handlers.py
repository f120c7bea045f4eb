"""What every route handler of the sandbox shares: the state behind a request, body limits, delays.

The app (`server.create_app`) keeps its `SandboxState` in ``app.state.sandbox`` and, while it runs,
its `CallbackPoster` in ``app.state.callbacks``; handlers reach both through the request, so route
modules hold no state of their own.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from .callbacks import CallbackPoster
from .state import SandboxState
from .wire import Provider


def sandbox_state(request: Request) -> SandboxState:
    """The state of the sandbox app serving `request`."""
    state: SandboxState = request.app.state.sandbox
    return state


def callback_poster(request: Request) -> CallbackPoster:
    """The running app's callback poster; RuntimeError when the app's lifespan has not started."""
    poster: CallbackPoster | None = request.app.state.callbacks
    if poster is None:
        raise RuntimeError("sandbox app is not running (lifespan not started)")
    return poster


async def pre_request(state: SandboxState, provider: Provider) -> None:
    """Count a request to `provider` and wait out its injected latency."""
    state.count(f"{provider}_requests")
    latency = state.latency_ms(provider)
    if latency:
        await hang(state, latency)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is (or says it is) longer than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = await request.body()
    return body if len(body) <= limit else None


async def hang(state: SandboxState, ms: int) -> None:
    """Sleep `ms`, but return early when the server is stopping (so shutdown stays quick)."""
    deadline = time.monotonic() + ms / 1000
    while not state.stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, 0.05))
