"""scheduler heartbeat

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26

The last run of each scheduled job, so `qip health` can say when the tick and the dispatch last
succeeded.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types


revision: str = '0014'
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'heartbeat',
        sa.Column('job', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('last_run_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('last_ok_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('worker', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint('job'),
    )


def downgrade() -> None:
    op.drop_table('heartbeat')
