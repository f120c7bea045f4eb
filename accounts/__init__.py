"""Staff accounts: users, roles, passwords.

The rules for creating, changing and disabling a user live here once (the last active admin is
protected everywhere); the CLI and the staff UI both call them. May import `models` and
`contacts.fields`; never `web` or `dispatch`.
"""
