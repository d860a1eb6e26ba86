"""orders: client order ids unique per broker, not across brokers

A broker enforces unique client order ids within its own account. With one global constraint the same
user could not run the same week on the local paper broker and on Alpaca paper (the deterministic ids
coincide); the constraint is now (broker, client_order_id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orders_client_order_id", type_="unique")
        batch_op.create_unique_constraint("uq_orders_broker_client_order_id", ["broker", "client_order_id"])


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orders_broker_client_order_id", type_="unique")
        batch_op.create_unique_constraint("uq_orders_client_order_id", ["client_order_id"])
