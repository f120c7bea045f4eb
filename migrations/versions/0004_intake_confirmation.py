"""intake confirmation: pending changes of known contacts, and the one SMS double opt-in per number

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 23:00:00.000000

`pending_change` holds every public request as received (processed after the answer went out),
and, for a contact that already existed, what it asked until the person confirms it from the
address on file; `sms_confirmation` is the one "Reply YES" text a
number may ever get (unique on a keyed hash of the number).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'pending_change',
        sa.Column('id', _ID, nullable=False),
        sa.Column('contact_id', _ID, nullable=True),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('confirm_by', sa.String(length=10), nullable=False),
        sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ip_address', sa.String(length=64), nullable=True),
        sa.Column('user_agent', sa.String(length=400), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('outcome', sa.String(length=400), nullable=True),
        sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_pending_change_contact_id'), 'pending_change', ['contact_id'], unique=False)
    op.create_index(op.f('ix_pending_change_processed_at'), 'pending_change', ['processed_at'], unique=False)
    op.create_table(
        'sms_confirmation',
        sa.Column('id', _ID, nullable=False),
        sa.Column('phone_hash', sa.String(length=64), nullable=False),
        sa.Column('contact_id', _ID, nullable=True),
        sa.Column('campaign_id', sa.String(length=100), nullable=False),
        sa.Column('form_wording_version', sa.String(length=40), nullable=True),
        sa.Column('wording_version', sa.String(length=40), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('provider_message_id', sa.String(length=100), nullable=True),
        sa.Column('send_error', sa.String(length=200), nullable=True),
        sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('confirmed_inbound_id', _ID, nullable=True),
        sa.ForeignKeyConstraint(['contact_id'], ['contact.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('phone_hash'),
    )
    op.create_index(op.f('ix_sms_confirmation_contact_id'), 'sms_confirmation', ['contact_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sms_confirmation_contact_id'), table_name='sms_confirmation')
    op.drop_table('sms_confirmation')
    op.drop_index(op.f('ix_pending_change_processed_at'), table_name='pending_change')
    op.drop_index(op.f('ix_pending_change_contact_id'), table_name='pending_change')
    op.drop_table('pending_change')
