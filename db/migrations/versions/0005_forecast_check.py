"""forecasts.check_result / check_passed: the view checker's verdict, stored with the view

The checker (advisor.forecaster.checker) compares a view's stated facts with its window and flags
contradictions. ``check_result`` holds the verdict (counts, what was not found, contradictions);
``check_passed`` is its outcome, read by the queries that decide what is a signal. Existing rows
keep NULL (not checked) and keep their old behaviour: a parsed view is a signal.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("check_result", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("check_passed", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.drop_column("check_passed")
        batch_op.drop_column("check_result")
