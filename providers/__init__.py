"""Delivery channels: `types` (the one `Channel` enum, the frozen outgoing message, the send error types,
the `Sender` and `FindsSent` protocols), one sender module per provider (`twilio`, `sendgrid`), the
`outbox`, and `shared` helpers; `sandbox/` is a local Twilio/SendGrid-compatible server.

Imports nothing of ours outside this package (never `models`, `settings` or the database): a sender
takes a plain message and returns the provider's id.
"""
