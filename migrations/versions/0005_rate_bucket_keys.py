"""rate bucket keys: the shared rate-bucket table also holds the public intake's limits

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 23:00:00.000000

`rate_bucket.channel` was sized for a channel name ("sms", "email"). The public form's limits
(`contacts.intake_limits`) keep one row per limited key in the same table, with keys such as
`intake:net:<keyed hash>` (about 50 characters), so the column is widened to 64. No data changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.alter_column('channel', existing_type=sa.String(length=10), type_=sa.String(length=64),
                              existing_nullable=False)


def downgrade() -> None:
    # Intake rows do not fit the old width: they are only limits, safe to forget.
    op.execute("DELETE FROM rate_bucket WHERE channel LIKE 'intake:%'")
    with op.batch_alter_table('rate_bucket', schema=None) as batch_op:
        batch_op.alter_column('channel', existing_type=sa.String(length=64), type_=sa.String(length=10),
                              existing_nullable=False)
