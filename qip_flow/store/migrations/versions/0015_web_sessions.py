"""web sessions

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26

Server-side sessions of the web pages: the token's hash, the person, how they signed in, the
one item a deep link allows, the email link that opened it (so a link signs in once), and the
times for idle and absolute expiry. A new table: existing data is untouched.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types


revision: str = '0015'
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'websession',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('person_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('method', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('link_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('created_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column('full_signin_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['person_id'], ['person.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
        sa.UniqueConstraint('link_hash'),
    )
    with op.batch_alter_table('websession', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_websession_person_id'), ['person_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('websession', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_websession_person_id'))
    op.drop_table('websession')
