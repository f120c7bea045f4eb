"""handed to the provider: which send records a worker actually began to hand over, and which worker

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-02 22:45:00.000000

`message.handed_at` is committed just before the provider call (in one statement for the few
messages a worker hands at once); `message.worker_id` names the worker that made the current
attempt. After a crash a `sending` row without `handed_at` never left the machine and is simply
sent again; only handed ones are in doubt. Existing rows keep NULL: a `sending` row written before
this migration is treated as handed (in doubt), the strict reading.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("handed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker_id", sa.String(length=100), nullable=True))
    # Rows already `sending` were written by the old code, which recorded no hand-over: mark them
    # handed so that recovery keeps treating them as in doubt (never resent blindly).
    op.execute("UPDATE message SET handed_at = COALESCE(attempted_at, created_at) WHERE status = 'sending'")


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_column("worker_id")
        batch.drop_column("handed_at")
