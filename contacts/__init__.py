"""Contacts and what they agreed to. Every rule that changes a contact lives here once and every
entry point (CLI, staff UI, JSON API, public pages, webhooks, importer) calls it:

- `changes`: parse input, find, create or update a contact (suppressed addresses block their channel);
- `consent`: grant (always with the wording version and its exact text) and withdraw consent, and staff
  resubscribing a channel; `contact_state`: which staff actions fit a contact now;
- `blocks`: block and unblock a channel (`BlockReason`), the suppression list;
- `enrollment`: the enrollment decision, enroll, pause/resume, unsubscribe, booked, end;
- `records`: the event / audit / consent rows those rules write (shared with the bulk importer);
- `importer` (bulk CSV, same rules), `fields` (parsing), `privacy` (export, erasure), `replies`.

May import `content`, `models`, `db`, `settings`, `due_now` (the rules that make work due now say
so); never `dispatch`, `web` or `runtime` (services
take the session, `now`, the actor and what they need, not the whole runtime) — except the importer,
which opens its own transactions from a `Runtime`.
"""
