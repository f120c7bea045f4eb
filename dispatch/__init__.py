"""The delivery engine: claim due enrollments, record and hand each message to its sender, classify the
outcome, advance the step.

- `pipeline` — the `Dispatcher`: batches, the sending thread pool, recording; holds no SQL.
- `queue` — every SQL statement the dispatcher runs, as named calls, and the queue's waits.
- `step` — the step state machine: what happens to one enrollment's step (every ending listed).
- `outcome` — the failure policy: what a provider's answer does to the send record, backoff.
- `pauses` — pausing and resuming a channel for everyone (the one service every entry point calls).
- `counters` — this process's provider-call counters for `/metrics`.
- `reconcile` — settling sends whose outcome is unknown; `ratelimit` — shared per-channel pacing;
  `funnel` — sent → delivered → clicked → booked per campaign step; `funnel_report` — the same over a
  date range with opens, rates and a daily trend, for the staff pages.
- `wake` — runs this process's passes when work becomes due now, one at a time, coalescing;
  `listener` — PostgreSQL `LISTEN` for the `NOTIFY` other processes send (`due_now`).

May import `contacts` (consent and block rules), `content`, `providers`, `models`, `db`, `due_now`, `runtime`;
never `web` or `cli`.
"""
