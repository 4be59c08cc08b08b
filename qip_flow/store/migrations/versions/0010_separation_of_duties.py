"""separation of duties: who completed an action; people's roles

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23

``action.completed_by_id`` names who completed an action, so the rules can keep them from
verifying it; existing completions take the actor of the action's last ``complete`` event in
the audit trail (the owner when the trail does not name a person). ``person.roles`` holds
roles such as ``administrator`` from the organisation file; existing people have none, so
until one load names the first administrator (docs/formats.md) no load may change anyone's
level or groups.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("person", sa.Column("roles", sa.JSON(), nullable=False, server_default="[]"))
    # On SQLite a plain ADD COLUMN with its reference, not a batch copy of ``action``: with
    # foreign keys on, dropping the old table that other tables reference fails.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("alter table action add column completed_by_id varchar "
                   "references person (id)")
    else:
        op.add_column("action", sa.Column("completed_by_id", sa.String(), nullable=True))
        op.create_foreign_key("fk_action_completed_by_id_person", "action", "person",
                              ["completed_by_id"], ["id"])
    op.execute(
        "update action set completed_by_id = coalesce(("
        "  select e.actor from auditevent e"
        "  where e.entity_type = 'action' and e.entity_id = action.id and e.what = 'complete'"
        "    and e.actor in (select id from person)"
        "  order by e.seq desc limit 1), owner_id) "
        "where completed_at is not null")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_action_completed_by_id_person", "action", type_="foreignkey")
    op.drop_column("action", "completed_by_id")
    op.drop_column("person", "roles")
