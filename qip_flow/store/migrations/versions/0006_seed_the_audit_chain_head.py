"""seed the audit chain head

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Writers lock the chain head row before appending an event. If the row does not exist yet,
SELECT ... FOR UPDATE locks nothing and two first writers on a fresh PostgreSQL database
could both start the chain: the row is therefore created with the schema.
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "insert into audithead (id, seq, hash) "
        "select 1, last.seq, last.hash from ("
        "  select coalesce(max(seq), 0) as seq, coalesce((select hash from auditevent"
        "    order by seq desc limit 1), 'genesis') as hash from auditevent) as last "
        "where not exists (select 1 from audithead where id = 1)")


def downgrade() -> None:
    pass
