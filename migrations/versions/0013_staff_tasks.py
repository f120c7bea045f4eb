"""staff tasks: work the system hands to the front desk (new requests, no-shows, bookings to match, sends to review or that failed)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 03:10:00.000000

Existing requests, no-shows, unmatched bookings and sends get no task (they stay on their own pages);
tasks start with this version.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('staff_task',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('contact_id', BIG_ID, nullable=True),
    sa.Column('booking_id', BIG_ID, nullable=True),
    sa.Column('message_id', BIG_ID, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_to', sa.Integer(), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_by', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['booking_id'], ['booking.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['assigned_to'], ['staff_user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'booking_id', name='uq_staff_task_booking')
    )
    with op.batch_alter_table('staff_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_task_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_staff_task_done_at'), ['done_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_staff_task_message_id'), ['message_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staff_task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_task_message_id'))
        batch_op.drop_index(batch_op.f('ix_staff_task_done_at'))
        batch_op.drop_index(batch_op.f('ix_staff_task_contact_id'))
    op.drop_table('staff_task')
