"""Delivery channels: the `Channel` enum, the frozen outgoing message, the send error types, one sender per
provider (Twilio, SendGrid) and the outbox; `sandbox/` is a local Twilio/SendGrid-compatible server.

Imports nothing of ours but `settings` (never `models`): a sender takes a plain message and returns the
provider's id.
"""
