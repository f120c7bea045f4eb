"""campaign timing versions: a table of saved timings and the version each enrollment follows

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 04:25:00.000000

Every existing enrollment keeps NULL (version 1, the campaign file). The enrollment index on
(campaign_id, status) grows to (campaign_id, status, step_index, exit_reason) so the campaign page's
journey counts read the index alone, and the message index on (campaign_id, step_id) gains the status
for the same reason; each old index is a prefix of its new one and goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('campaign_version',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('campaign_id', sa.String(length=100), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('timing', sa.JSON(), nullable=False),
    sa.Column('changes', sa.JSON(), nullable=False),
    sa.Column('note', sa.String(length=500), nullable=False),
    sa.Column('author', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'number', name='uq_campaign_version_number')
    )
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_version', sa.Integer(), nullable=True))
        batch_op.create_index('ix_enrollment_campaign_status_step',
                              ['campaign_id', 'status', 'step_index', 'exit_reason'], unique=False)
        batch_op.drop_index('ix_enrollment_campaign_status')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_campaign_step_status', ['campaign_id', 'step_id', 'status'], unique=False)
        batch_op.drop_index('ix_message_campaign_step')


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_campaign_step', ['campaign_id', 'step_id'], unique=False)
        batch_op.drop_index('ix_message_campaign_step_status')
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.create_index('ix_enrollment_campaign_status', ['campaign_id', 'status'], unique=False)
        batch_op.drop_index('ix_enrollment_campaign_status_step')
        batch_op.drop_column('campaign_version')
    op.drop_table('campaign_version')
