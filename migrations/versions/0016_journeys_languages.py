"""journeys and languages: a contact's language and interest, an enrollment's entry, the time it
reached its step and its holdout flag, a message's entry, variant and language, a claim's language

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 06:30:00.000000

Every existing row gets the value it always had: English, no interest given, entry 1, not in the
holdout, no variant. The message unique key gains the entry (a re-entry may send a step again; the
same entry never can), and the old key goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=5), server_default='en', nullable=False))
        batch_op.add_column(sa.Column('interest', sa.String(length=20), server_default='', nullable=False))
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entry', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('step_entered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('holdout', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entry', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('variant', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('language', sa.String(length=5), nullable=True))
        batch_op.create_unique_constraint('uq_message_enrollment_entry_step_channel',
                                          ['enrollment_id', 'entry', 'step_id', 'channel'])
        batch_op.drop_constraint('uq_message_enrollment_step_channel', type_='unique')
    with op.batch_alter_table('claim', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=5), server_default='en', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('claim', schema=None) as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_message_enrollment_step_channel', ['enrollment_id', 'step_id', 'channel'])
        batch_op.drop_constraint('uq_message_enrollment_entry_step_channel', type_='unique')
        batch_op.drop_column('language')
        batch_op.drop_column('variant')
        batch_op.drop_column('entry')
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.drop_column('holdout')
        batch_op.drop_column('step_entered_at')
        batch_op.drop_column('entry')
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.drop_column('interest')
        batch_op.drop_column('language')
