"""The provider sandbox in its own process, for the benchmark (so it does not share a GIL with what it
measures), plus a small control server that answers with counts instead of whole messages.

Prints one JSON line on stdout when ready: ``{"url": <sandbox base URL>, "control": <control URL>}``.

Control (JSON):
  GET  /receipts         [{"provider", "to", "subject", "created_ts"}, ...]: when each outbound message arrived
  GET  /summary          {"twilio": n, "sendgrid": n, "total": n, "duplicates": n, "duplicate_keys": [...]}
                         duplicates: sends with the same (provider, recipient, content) seen more than
                         once; link tokens are masked, so two *different* send records of one step to
                         one person count as a duplicate too
  POST /reset            forget everything received
  POST /latency?ms=N     answer every provider request after N ms
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


from patient_drip.providers.sandbox import SandboxServer  # noqa: E402

_LINK_TOKEN = re.compile(r"(/[bu]/)[A-Za-z0-9._-]+")


def content_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """Who got what, independent of which send record it came from."""
    text = record.get("subject") or record.get("text") or ""
    return record["provider"], record["to"], _LINK_TOKEN.sub(r"\1*", text)


def main() -> None:
    # Block the stop signals before any thread starts (threads inherit the mask), then wait for one.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = SandboxServer(port=0, callback_delay_ms=5, twilio_status_callbacks=False,
                           max_messages=2_000_000).start()
    state = server.state

    class Control(BaseHTTPRequestHandler):
        def _answer(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if urlsplit(self.path).path == "/receipts":
                # When each outbound message arrived (speed to lead): the recipient and the subject
                # only, never the body; `created_ts` is the sandbox's clock at receipt (epoch seconds).
                return self._answer([{"provider": m["provider"], "to": m["to"], "subject": m.get("subject"),
                                      "created_ts": m["created_ts"]}
                                     for m in state.messages() if m.get("direction", "outbound-api") == "outbound-api"])
            if urlsplit(self.path).path != "/summary":
                return self._answer({"error": "not found"}, 404)
            records = [m for m in state.messages() if m.get("direction", "outbound-api") == "outbound-api"]
            by_provider = Counter(m["provider"] for m in records)
            keys = Counter(content_key(m) for m in records)
            duplicates = {k: n for k, n in keys.items() if n > 1}
            self._answer({
                "twilio": by_provider.get("twilio", 0), "sendgrid": by_provider.get("sendgrid", 0),
                "total": len(records), "duplicates": sum(n - 1 for n in duplicates.values()),
                "duplicate_keys": [list(k) for k in list(duplicates)[:5]],
            })

        def do_POST(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            if parts.path == "/reset":
                state.reset_messages()
                return self._answer({"ok": True})
            if parts.path == "/latency":
                ms = int(parse_qs(parts.query).get("ms", ["0"])[0])
                for provider in ("twilio", "sendgrid"):
                    state.set_latency(provider, ms)
                return self._answer({"ok": True, "latency_ms": ms})
            return self._answer({"error": "not found"}, 404)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"url": server.url, "control": f"http://127.0.0.1:{control.server_address[1]}",
                      "public_key": server.public_key}), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    control.shutdown()
    server.stop(wait=False)


if __name__ == "__main__":
    main()
