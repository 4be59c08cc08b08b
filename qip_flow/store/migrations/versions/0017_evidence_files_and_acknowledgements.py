"""evidence files and acknowledgements

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26

An evidence row may describe an uploaded file, kept outside the database under its SHA-256:
the hash, the size, the media type its content showed and the name it was uploaded with.
Existing evidence is a description only (no file), so the new columns start empty.

An escalation's recipient may acknowledge it: the acknowledgement pauses the next rung of the
ladder until a day the reminders rules' grace period sets. A new table; nothing to backfill.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types


revision: str = '0017'
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN, not a batch copy: on SQLite with foreign keys on, rebuilding a table
    # other tables refer to fails
    op.add_column('evidence', sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('evidence', sa.Column('size', sa.Integer(), nullable=True))
    op.add_column('evidence', sa.Column('media_type', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
    op.add_column('evidence', sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=''))
    op.create_index(op.f('ix_evidence_sha256'), 'evidence', ['sha256'], unique=False)

    op.create_table(
        'acknowledgement',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('by_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('notification_id', sa.Integer(), nullable=False),
        sa.Column('at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('paused_until', sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(['action_id'], ['action.id'], ),
        sa.ForeignKeyConstraint(['by_id'], ['person.id'], ),
        sa.ForeignKeyConstraint(['notification_id'], ['notification.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('notification_id'),
    )
    op.create_index(op.f('ix_acknowledgement_action_id'), 'acknowledgement', ['action_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_acknowledgement_action_id'), table_name='acknowledgement')
    op.drop_table('acknowledgement')
    op.drop_index(op.f('ix_evidence_sha256'), table_name='evidence')
    op.drop_column('evidence', 'filename')
    op.drop_column('evidence', 'media_type')
    op.drop_column('evidence', 'size')
    op.drop_column('evidence', 'sha256')
