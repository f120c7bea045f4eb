"""claims library: clinician-approved claims, the clinician flag, a draft's parent and reject reason

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 23:00:00.000000

- `claim`: the clinic's claims library (one row per wording; `drip init` loads the shipped
  policy/approved_claims.yaml into it when it is empty).
- `staff_user.clinician`: a user who holds the clinician's duties besides their role (an admin who
  is also the clinic's clinician). Existing users keep what they had: nobody gains approval rights.
- `template_version.based_on` (the version an edit started from) and `review_note` (why a version
  was rejected; until now a rejection overwrote the author's `note`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'claim',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('claim_key', sa.String(length=80), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('source_kind', sa.String(length=20), nullable=False),
        sa.Column('source', sa.String(length=500), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('note', sa.String(length=500), nullable=False),
        sa.Column('approved_by', sa.String(length=320), nullable=False),
        sa.Column('approved_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retired_by', sa.String(length=320), nullable=True),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('claim_key', 'version', name='uq_claim_key_version'),
    )
    op.create_index('ix_claim_status', 'claim', ['status'], unique=False)
    with op.batch_alter_table('staff_user') as batch:
        batch.add_column(sa.Column('clinician', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('template_version') as batch:
        batch.add_column(sa.Column('based_on', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('review_note', sa.String(length=500), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('template_version') as batch:
        batch.drop_column('review_note')
        batch.drop_column('based_on')
    with op.batch_alter_table('staff_user') as batch:
        batch.drop_column('clinician')
    op.drop_index('ix_claim_status', table_name='claim')
    op.drop_table('claim')
