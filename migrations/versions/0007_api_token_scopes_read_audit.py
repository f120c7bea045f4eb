"""api token scopes and expiry; audit log indexes for the audit page's filters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 23:00:00.000000

Tokens made before this revision had no scope and no expiry: each acted with its owner's whole role.
On upgrade an existing token keeps working with the scopes its owner's role allows today (the same
power it had), and gets an expiry 90 days after the upgrade (`DEFAULT_EXPIRY_DAYS`), so none lives
forever. Tokens of users who are disabled now are revoked: re-enabling such a user must not revive
them. The role table is copied here (not imported) so that this migration keeps meaning what it
meant when later code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# accounts.scopes.ROLE_SCOPES as of this revision, in the stored (space-separated) form.
_ROLE_SCOPES = {
    "admin": "contacts:read contacts:write messages:read campaigns:read stats:read metrics",
    "staff": "contacts:read contacts:write messages:read campaigns:read metrics",
    "marketing": "campaigns:read stats:read metrics",
    "clinician": "campaigns:read metrics",
}
_UPGRADE_EXPIRY = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table('api_token') as batch:
        batch.add_column(sa.Column('scopes', sa.String(length=200), nullable=False, server_default=''))
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('revoked_reason', sa.String(length=60), nullable=True))
    now = datetime.now(timezone.utc)
    if op.get_bind().dialect.name == 'sqlite':
        now = now.replace(tzinfo=None)  # as models.UTCDateTime stores it there: naive UTC
    api_token = sa.table('api_token', sa.column('user_id', sa.Integer), sa.column('scopes', sa.String),
                         sa.column('expires_at', sa.DateTime(timezone=True)),
                         sa.column('revoked_at', sa.DateTime(timezone=True)),
                         sa.column('revoked_reason', sa.String))
    staff_user = sa.table('staff_user', sa.column('id', sa.Integer), sa.column('role', sa.String),
                          sa.column('disabled', sa.Boolean))
    for role, scopes in _ROLE_SCOPES.items():
        owners = sa.select(staff_user.c.id).where(staff_user.c.role == role)
        op.execute(api_token.update().where(api_token.c.user_id.in_(owners)).values(scopes=scopes))
    op.execute(api_token.update().values(expires_at=now + _UPGRADE_EXPIRY))
    disabled = sa.select(staff_user.c.id).where(staff_user.c.disabled.is_(True))
    op.execute(api_token.update().where(api_token.c.user_id.in_(disabled), api_token.c.revoked_at.is_(None))
               .values(revoked_at=now, revoked_reason='account disabled'))
    with op.batch_alter_table('api_token') as batch:
        batch.alter_column('expires_at', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column('scopes', existing_type=sa.String(length=200), server_default=None)
    op.create_index('ix_audit_log_actor_id', 'audit_log', ['actor', 'id'])
    op.create_index('ix_audit_log_action_id', 'audit_log', ['action', 'id'])


def downgrade() -> None:
    op.drop_index('ix_audit_log_action_id', table_name='audit_log')
    op.drop_index('ix_audit_log_actor_id', table_name='audit_log')
    with op.batch_alter_table('api_token') as batch:
        batch.drop_column('revoked_reason')
        batch.drop_column('expires_at')
        batch.drop_column('scopes')
