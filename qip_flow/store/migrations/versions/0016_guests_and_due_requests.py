"""guests and new-date requests

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

A guest's scope (the services whose plans they read, and their last day), and an owner's
request for a new due date waiting for someone else's decision. Existing people get no scope
(they are not guests) and no requests exist yet, so nothing needs backfilling.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types


revision: str = '0016'
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'duerequest',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('requested_by_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('new_due', sa.Date(), nullable=False),
        sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('decided_by_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('decided_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('decision_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(['action_id'], ['action.id'], ),
        sa.ForeignKeyConstraint(['decided_by_id'], ['person.id'], ),
        sa.ForeignKeyConstraint(['requested_by_id'], ['person.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('duerequest', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_duerequest_action_id'), ['action_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_duerequest_state'), ['state'], unique=False)

    # plain ADD COLUMN, not a batch copy of ``person``: on SQLite with foreign keys on, dropping
    # the old table that every other table references fails
    op.add_column('person', sa.Column('services', sa.JSON(), nullable=False, server_default='[]'))
    op.add_column('person', sa.Column('expires', sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column('person', 'expires')
    op.drop_column('person', 'services')
    with op.batch_alter_table('duerequest', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_duerequest_state'))
        batch_op.drop_index(batch_op.f('ix_duerequest_action_id'))
    op.drop_table('duerequest')
