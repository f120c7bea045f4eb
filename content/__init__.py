"""Message content: campaign definitions and their timing, rendering (the one message context), the
render memo, the claims guard, the template store, `templates check` and `simulate`.

Owns what a patient reads and when a step falls due. May import `models`, `settings` and `providers`'
plain types; never `contacts`, `dispatch` or `web`.
"""
