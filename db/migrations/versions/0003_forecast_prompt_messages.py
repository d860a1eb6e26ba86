"""forecasts.prompt_messages: the chat messages a prompt was rendered from

Preference datasets for TRL use the conversational format (lists of role/content messages); the
rendered prompt text alone cannot be split back into messages for every chat template. Existing rows
keep NULL and are exported from prompt_text in the standard (string) format instead.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prompt_messages", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("forecasts", schema=None) as batch_op:
        batch_op.drop_column("prompt_messages")
