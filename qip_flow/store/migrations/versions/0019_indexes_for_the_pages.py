"""indexes for the pages

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

The web pages ask by person: My work for the actions a person owns, the portfolio for the plans
a person has a part in (the plans they own or sponsor, their actions and indicators, the
actions of the people they line manage). Without these indexes each of those questions reads every action of the portfolio
(100,000 in the benchmark). Indexes only: nothing to backfill.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0019'
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (("action", "owner_id"), ("indicator", "owner_id"), ("person", "line_manager_id"),
           ("plan", "owner_id"), ("plan", "sponsor_id"))


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
