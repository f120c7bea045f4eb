"""block reasons: the kind of each channel block in its own column

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00.000000

Until now the kind of a block was the prefix of the readable text in `email_blocked` /
`sms_blocked` ("opted_out (...)", "suppressed: ...", "failed: ...", "bounced", "spam complaint",
"dropped: ...", "erased"). Existing rows get their kind from that prefix; a text no code wrote
becomes `failed` (a permanent block that consent cannot lift: the strict reading).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (LIKE pattern of the old text, the kind it becomes); first match wins, the rest are `failed`.
_PREFIXES = (
    ("opted_out%", "opted_out"),
    ("suppressed%", "suppressed"),
    ("bounced%", "bounced"),
    ("spam complaint%", "complained"),
    ("dropped%", "dropped"),
    ("erased%", "erased"),
)


def _kind_case(column: str) -> str:
    whens = " ".join(f"WHEN {column} LIKE '{pattern}' THEN '{kind}'" for pattern, kind in _PREFIXES)
    return f"CASE {whens} ELSE 'failed' END"


def upgrade() -> None:
    with op.batch_alter_table('contact') as batch:
        batch.add_column(sa.Column('email_block_reason', sa.String(length=20), nullable=True))
        batch.add_column(sa.Column('sms_block_reason', sa.String(length=20), nullable=True))
    for channel in ('email', 'sms'):
        op.execute(f"UPDATE contact SET {channel}_block_reason = {_kind_case(channel + '_blocked')} "
                   f"WHERE {channel}_blocked IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('contact') as batch:
        batch.drop_column('sms_block_reason')
        batch.drop_column('email_block_reason')
