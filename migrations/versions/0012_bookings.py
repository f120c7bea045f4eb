"""bookings: what the scheduling tools (and staff) said, matched or not, with the message each is attributed to

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02 23:10:00.000000

Existing contacts that were marked booked keep their enrollments' `booked` exit; they get no
booking row (the funnel counts rows from now on, attributed to one step each).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('booking',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('contact_id', BIG_ID, nullable=True),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('external_id', sa.String(length=300), nullable=True),
    sa.Column('message_id', BIG_ID, nullable=True),
    sa.Column('attribution', sa.String(length=20), nullable=False),
    sa.Column('campaign_id', sa.String(length=100), nullable=True),
    sa.Column('step_id', sa.String(length=100), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'external_id', 'kind', name='uq_booking_event')
    )
    with op.batch_alter_table('booking', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_booking_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_booking_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_booking_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('booking', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_booking_received_at'))
        batch_op.drop_index(batch_op.f('ix_booking_message_id'))
        batch_op.drop_index(batch_op.f('ix_booking_contact_id'))
    op.drop_table('booking')
