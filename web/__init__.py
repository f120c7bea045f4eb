"""HTTP: the app factory, shared dependencies (`deps`, which imports no routes), the public pages, the
provider and scheduler webhooks, `/metrics`, and the staff UI and JSON API (`admin/`), with their own
page templates and static files (not the message `templates/`).

An entry point: parses requests and presents results; every rule it applies is a call into
`contacts`, `accounts`, `dispatch` or `content`.
"""
