"""audit checkpoints and an append-only trail

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

The chain head gets ``database_id``, a random name for this database that every checkpoint
written outside it carries (a restored backup keeps it; a new database gets its own). On
PostgreSQL, triggers make the audit trail append-only: UPDATE, DELETE and TRUNCATE of
``auditevent`` are refused, and the head can be neither deleted, renamed nor moved backwards.
"""
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_TRIGGERS = [
    """create function qip_audit_refuse_change() returns trigger language plpgsql as $$
    begin
      raise exception 'the audit trail is append-only: % on % refused', tg_op, tg_table_name
        using errcode = 'insufficient_privilege';
    end $$""",
    """create trigger auditevent_append_only before update or delete on auditevent
    for each row execute function qip_audit_refuse_change()""",
    """create trigger auditevent_no_truncate before truncate on auditevent
    for each statement execute function qip_audit_refuse_change()""",
    """create function qip_audit_head_guard() returns trigger language plpgsql as $$
    begin
      if tg_op = 'UPDATE' and new.id = old.id and new.database_id = old.database_id
         and new.seq >= old.seq then
        return new;
      end if;
      raise exception 'the audit chain head only moves forward: % on % refused', tg_op,
        tg_table_name using errcode = 'insufficient_privilege';
    end $$""",
    """create trigger audithead_forward_only before update or delete on audithead
    for each row execute function qip_audit_head_guard()""",
    """create trigger audithead_no_truncate before truncate on audithead
    for each statement execute function qip_audit_refuse_change()""",
]


def upgrade() -> None:
    with op.batch_alter_table("audithead", schema=None) as batch_op:
        batch_op.add_column(sa.Column("database_id", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=False, server_default=""))
    op.execute(sa.text("update audithead set database_id = :name where database_id = ''")
               .bindparams(name=uuid.uuid4().hex))
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("drop trigger if exists audithead_no_truncate on audithead")
        op.execute("drop trigger if exists audithead_forward_only on audithead")
        op.execute("drop trigger if exists auditevent_no_truncate on auditevent")
        op.execute("drop trigger if exists auditevent_append_only on auditevent")
        op.execute("drop function if exists qip_audit_head_guard()")
        op.execute("drop function if exists qip_audit_refuse_change()")
    with op.batch_alter_table("audithead", schema=None) as batch_op:
        batch_op.drop_column("database_id")
