"""sign-off records (evidence chosen, no residual risk) and closure rules pinned whole

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 10:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types

revision: str = '0012'
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'closurerules',
        sa.Column('version', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('ruleset', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('text', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('first_pinned_at', qip_flow.store.types.UtcDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('version'),
    )
    # Plans approved before this revision keep a NULL version: they are judged by the rules in
    # force until a variation (`qip vary --adopt-rules`) pins them; `qip explain` says so.
    with op.batch_alter_table('plan', schema=None) as batch_op:
        # no foreign key: on SQLite it would rebuild `plan`, which other tables reference
        batch_op.add_column(sa.Column('closure_rules_version',
                                      sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    # Existing sign-offs chose no evidence item and made no "no residual risk" statement.
    with op.batch_alter_table('signoff', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evidence_ids', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('no_residual_risk', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('signoff', schema=None) as batch_op:
        batch_op.drop_column('no_residual_risk')
        batch_op.drop_column('evidence_ids')
    # in place: batch mode would rebuild `plan`, which other tables' foreign keys refuse
    op.drop_column('plan', 'closure_rules_version')
    op.drop_table('closurerules')
