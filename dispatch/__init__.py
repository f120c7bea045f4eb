"""The delivery engine: claim due enrollments, record and hand each message to its sender, classify the
outcome, advance the step; plus channel pauses, counters, reconciliation of unknown sends, shared rate
limits and the funnel.

May import `contacts` (consent and block rules), `content`, `providers`, `models`, `db`, `runtime`;
never `web` or `cli`.
"""
