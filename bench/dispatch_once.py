"""Phase 2: what `drip send-due` does — one `Dispatcher.run_once` over everything due — timed inside a
fresh process whose settings come from the environment (as `drip send-due` reads them).

Prints {"seconds": …, "claimed": …, "outcomes": {…}, "rss_mb": …}.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

if os.environ.get("DRIP_BENCH_EXTRA_PATH"):  # to compare another implementation of a module
    sys.path.insert(0, os.environ["DRIP_BENCH_EXTRA_PATH"])

from patient_drip.dispatch.pipeline import Dispatcher  # noqa: E402
from patient_drip.runtime import build_runtime, utcnow  # noqa: E402
from patient_drip.settings import load_settings  # noqa: E402


def main() -> None:
    if os.environ.get("DRIP_BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["DRIP_BENCH_SWITCH_INTERVAL"]))
    rt = build_runtime(load_settings())
    dispatcher = Dispatcher(rt, f"bench:{os.getpid()}")
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = dispatcher.run_once(utcnow())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    rt.close()
    memo = getattr(dispatcher, "render_memo", None)  # None: an older implementation (DRIP_BENCH_EXTRA_PATH)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "claimed": summary.claimed, "outcomes": dict(summary.outcomes),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "phases": dict(getattr(dispatcher, "phase_seconds", {})),
                      "render_memo": memo and {"hits": memo.hits, "misses": memo.misses, "bypassed": memo.bypassed}}))


if __name__ == "__main__":
    main()
