"""plan version

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

One writer per plan: each transaction that records a change to a plan or its parts bumps the
plan's ``version`` and notes who changed it and when, so a writer who saw an older version can
be told "changed by X at T; try again". Existing plans start at version 1, changed by the actor
of their latest audit event on the plan (else unknown) at that event's time (else the plan's
``updated_at``).
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("changed_by", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column("changed_at",
                                      qip_flow.store.types.UtcDateTime(timezone=True),
                                      nullable=True))
    latest = ("(select {column} from auditevent where auditevent.entity_id = plan.id "
              "order by auditevent.seq desc limit 1)")
    op.execute(f"update plan set version = 1, changed_by = {latest.format(column='actor')}, "
               f"changed_at = coalesce({latest.format(column='at')}, updated_at)")


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place; batch mode would copy the table and drop the
    # original, which the other tables' foreign keys to it refuse
    for column in ("changed_at", "changed_by", "version"):
        op.execute(f"alter table plan drop column {column}")
