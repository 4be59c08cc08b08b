"""trusted time and published rules

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22

A settings table (``simulation``: a database made for playing time with ``--now``), the
published governance files, and the backdating flag on measurements. An existing database
has no ``simulation`` row, so it is a real record; ``qip init`` publishes the shipped files
on it when nothing is published yet.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "databasesetting",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "publishedconfig",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("published_at", qip_flow.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("published_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("publishedconfig", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_publishedconfig_version"), ["version"], unique=False)
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backdated", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("backdate_reason", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("measurement", schema=None) as batch_op:
        batch_op.drop_column("backdate_reason")
        batch_op.drop_column("backdated")
    with op.batch_alter_table("publishedconfig", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publishedconfig_version"))
    op.drop_table("publishedconfig")
    op.drop_table("databasesetting")
