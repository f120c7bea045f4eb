"""Fixtures and builders shared by the test modules (importable as `support` because pytest puts
`tests/` on the path). Test modules import from here, never from one another:

* `builders` -- the virtual clock, settings (plain and pointed at the sandbox), contacts, and the
  loops that drive a schedule on the virtual clock;
* `databases` -- PostgreSQL, and the migrated template databases made once per run;
* `live` -- a free port, `wait_until`, and our web app served by uvicorn (`LiveApp`);
* `intake` -- the public form over HTTP against a live app and the sandbox, and what the sandbox got;
* `sandbox` -- the provider-sandbox fixtures (`sandbox`, `make_sandbox`, `webhook_sink`);
* `staff` -- users, signed-in clients, API tokens, initialised runtimes (`srt`, `client`);
* `routes` -- the app's routes and the public allow-list;
* `webhooks` -- signed booking and SendGrid webhook headers (`booking_headers`, `sendgrid_headers`);
* `chaos` -- the sandbox and real workers in child processes, and the audit of what was sent.
"""
