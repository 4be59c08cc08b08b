"""API tokens, measurement idempotency keys and webhook subscriptions

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

The API's tokens for systems (only each token's hash is kept), the idempotency key of each
measurement pushed with one, and the webhook subscribers registered through the API. All three
tables are new; nothing existing changes, so nothing needs backfilling.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types


revision: str = '0018'
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'apitoken',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('hint', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('scopes', sa.JSON(), nullable=False),
        sa.Column('services', sa.JSON(), nullable=False),
        sa.Column('plan_ids', sa.JSON(), nullable=False),
        sa.Column('every_plan', sa.Boolean(), nullable=False),
        sa.Column('created_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('expires', sa.Date(), nullable=True),
        sa.Column('revoked_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('last_used_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apitoken_name'), ['name'], unique=False)

    op.create_table(
        'measurementkey',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('measurement_id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['measurement_id'], ['measurement.id'], ),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('measurementkey', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_measurementkey_measurement_id'), ['measurement_id'],
                              unique=False)

    op.create_table(
        'webhooksubscription',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('services', sa.JSON(), nullable=False),
        sa.Column('plan_ids', sa.JSON(), nullable=False),
        sa.Column('every_plan', sa.Boolean(), nullable=False),
        sa.Column('salt', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('created_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('removed_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('removed_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('webhooksubscription')
    with op.batch_alter_table('measurementkey', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_measurementkey_measurement_id'))
    op.drop_table('measurementkey')
    with op.batch_alter_table('apitoken', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apitoken_name'))
    op.drop_table('apitoken')
