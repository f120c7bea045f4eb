"""staff authentication: TOTP second factor, recovery codes, server-side sessions, sign-in throttle

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 23:00:00.000000

Existing users get no second factor; admins and clinicians are led to enrol at their next sign-in.
Existing session cookies (which carry no session id) stop working: everyone signs in once more.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('staff_user') as batch:
        batch.add_column(sa.Column('totp_secret', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('mfa_enabled_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'recovery_code',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['staff_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('recovery_code') as batch:
        batch.create_index(batch.f('ix_recovery_code_user_id'), ['user_id'], unique=False)
    op.create_table(
        'staff_session',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['staff_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('staff_session') as batch:
        batch.create_index(batch.f('ix_staff_session_user_id'), ['user_id'], unique=False)
    op.create_table(
        'auth_throttle',
        sa.Column('key', sa.String(length=400), nullable=False),
        sa.Column('window_start', sa.BigInteger(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )


def downgrade() -> None:
    op.drop_table('auth_throttle')
    with op.batch_alter_table('staff_session') as batch:
        batch.drop_index(batch.f('ix_staff_session_user_id'))
    op.drop_table('staff_session')
    with op.batch_alter_table('recovery_code') as batch:
        batch.drop_index(batch.f('ix_recovery_code_user_id'))
    op.drop_table('recovery_code')
    with op.batch_alter_table('staff_user') as batch:
        batch.drop_column('mfa_enabled_at')
        batch.drop_column('totp_last_step')
        batch.drop_column('totp_secret')
