"""conversations: the inbox's text threads (state, assignment) and staff replies (idempotency key)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 03:20:00.000000

A staff reply is a send record without an enrollment, so `message.enrollment_id` becomes nullable.
Every contact who has texted us gets a thread: open when one of their texts still waits for staff,
else done.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('conversation',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('contact_id', BIG_ID, nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state_by', sa.String(length=120), nullable=False),
    sa.Column('assigned_to', sa.Integer(), nullable=True),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['assigned_to'], ['staff_user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('contact_id')
    )
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_assigned_to'), ['assigned_to'], unique=False)
        batch_op.create_index('ix_conversation_state_updated', ['state', 'updated_at'], unique=False)
    op.create_table('staff_reply',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('message_id', BIG_ID, nullable=False),
    sa.Column('contact_id', BIG_ID, nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('sent_by', sa.String(length=120), nullable=False),
    sa.Column('conversational', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('staff_reply', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_reply_contact_id'), ['contact_id'], unique=False)
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.alter_column('enrollment_id', existing_type=BIG_ID, nullable=True)
    # One thread per contact who has texted us: open while a text waits for staff, else done.
    op.execute(sa.text(
        "INSERT INTO conversation (contact_id, state, state_at, state_by, last_inbound_at, created_at, updated_at) "
        "SELECT contact_id, "
        "CASE WHEN SUM(CASE WHEN handled_at IS NULL THEN 1 ELSE 0 END) > 0 THEN 'open' ELSE 'done' END, "
        "MAX(received_at), 'migration 0014', MAX(received_at), MIN(received_at), MAX(received_at) "
        "FROM inbound_message WHERE contact_id IS NOT NULL GROUP BY contact_id"))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM message WHERE enrollment_id IS NULL"))
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.alter_column('enrollment_id', existing_type=BIG_ID, nullable=False)
    with op.batch_alter_table('staff_reply', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_reply_contact_id'))
    op.drop_table('staff_reply')
    with op.batch_alter_table('conversation', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_state_updated')
        batch_op.drop_index(batch_op.f('ix_conversation_assigned_to'))
    op.drop_table('conversation')
