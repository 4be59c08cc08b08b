"""plan failures, routing at dispatch, every live plan scheduled

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26

- ``planfailure``: a plan the tick could not evaluate, with its error, first and last failure
  and attempts (the tick skips it, retries it and reports it; the rest of the batch proceeds).
- ``notification.message_key`` (the decision's key without the person), ``routed_at`` (when its
  deliveries were made from the channels in force, at dispatch), ``recipient_id`` nullable (a
  report to the operators' channel is for no person); ``delivery.carried_by_id`` (the one
  message a shared channel receives for several recipients).
- Data: every plan without a next check time gets one at its last update, so the next tick
  evaluates it (plans upgraded from 0001/0002 had none and were never checked); a plan that is
  not live is then given none again by the tick. Notifications that already have deliveries
  count as routed. Deliveries failed only because their channel was no longer configured
  ("channel file is no longer configured") are queued again, to be routed afresh.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import qip_flow.store.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "planfailure",
        sa.Column("plan_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("first_failed_at", qip_flow.store.types.UtcDateTime(timezone=True),
                  nullable=False),
        sa.Column("last_failed_at", qip_flow.store.types.UtcDateTime(timezone=True),
                  nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resolved_at", qip_flow.store.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"]),
        sa.PrimaryKeyConstraint("plan_id"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carried_by_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_delivery_carried_by_id"), ["carried_by_id"],
                              unique=False)
        batch_op.create_foreign_key("fk_delivery_carried_by_id_delivery", "delivery",
                                    ["carried_by_id"], ["id"])
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_key", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column("routed_at",
                                      qip_flow.store.types.UtcDateTime(timezone=True),
                                      nullable=True))
        batch_op.alter_column("recipient_id", existing_type=sa.VARCHAR(), nullable=True)
        batch_op.create_index(batch_op.f("ix_notification_message_key"), ["message_key"],
                              unique=False)

    op.execute("update plan set next_check_at = updated_at where next_check_at is null")
    op.execute("update notification set routed_at = created_at where exists "
               "(select 1 from delivery where delivery.notification_id = notification.id)")
    op.execute("update delivery set state = 'pending', attempts = 0 where state = 'failed' "
               "and last_error like 'channel % is no longer configured'")
    op.execute("update notification set state = 'queued' where state in ('failed', 'partial') "
               "and exists (select 1 from delivery where delivery.notification_id = "
               "notification.id and delivery.state = 'pending')")


def downgrade() -> None:
    op.execute("delete from deliveryattempt where delivery_id in (select id from delivery where "
               "notification_id in (select id from notification where recipient_id is null))")
    op.execute("update delivery set carried_by_id = null")
    op.execute("delete from delivery where notification_id in "
               "(select id from notification where recipient_id is null)")
    op.execute("delete from notification where recipient_id is null")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_message_key"))
        batch_op.alter_column("recipient_id", existing_type=sa.VARCHAR(), nullable=False)
        batch_op.drop_column("routed_at")
        batch_op.drop_column("message_key")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("fk_delivery_carried_by_id_delivery", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_delivery_carried_by_id"))
        batch_op.drop_column("carried_by_id")
    op.drop_table("planfailure")
