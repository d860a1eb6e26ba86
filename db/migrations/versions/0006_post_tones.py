"""post_tones: the sentiment classifier's reading of each post, cached by classifier and text

Scoring a post with the LoRA sentiment classifier costs a model pass (~20 ms on 2 cores); views,
training targets and the dashboard's post list read the same posts again and again. Rows are keyed
by the classifier's adapter hash and the SHA-256 of the cleaned text.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "post_tones",
        sa.Column("scorer_key", sa.String(length=64), nullable=False),
        sa.Column("text_hash", sa.String(length=32), nullable=False),
        sa.Column("tone", sa.Integer(), nullable=False),
        sa.Column("scored_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scorer_key", "text_hash", name=op.f("pk_post_tones")),
    )


def downgrade() -> None:
    op.drop_table("post_tones")
