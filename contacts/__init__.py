"""Contacts and what they agreed to: contact changes, consent, channel blocks, enrollment, field parsing,
bulk import, privacy (export, erasure) and inbound replies.

Every rule that changes a contact lives here once and is called by every entry point. May import
`content`, `models`, `db`, `settings`; never `dispatch` or `web`.
"""
