"""patient-drip: the email and SMS follow-up a ketamine clinic sends to people who asked for a consultation.

The repository root is this package (setuptools maps `patient_drip` to `.`). Imports flow one way:
entry points (`cli`, `scheduler`, `web`) → services (`dispatch`, `contacts`, `accounts`, `content`)
→ `models`, `providers`. The flat modules `settings`, `db`, `logs` and `runtime` are cross-cutting;
`docs/ARCHITECTURE.md` says which package owns what.
"""
