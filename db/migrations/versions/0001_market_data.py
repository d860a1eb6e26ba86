"""market data: companies, daily bars, text items, fundamentals

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('companies',
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sector', sa.String(length=100), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('exchange', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ticker', name=op.f('pk_companies'))
    )
    op.create_table('daily_bars',
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('open', sa.Float(), nullable=False),
    sa.Column('high', sa.Float(), nullable=False),
    sa.Column('low', sa.Float(), nullable=False),
    sa.Column('close', sa.Float(), nullable=False),
    sa.Column('adj_close', sa.Float(), nullable=False),
    sa.Column('volume', sa.BigInteger(), nullable=False),
    sa.Column('available_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('imported_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('high >= low', name=op.f('ck_daily_bars_high_ge_low')),
    sa.CheckConstraint('open > 0 AND high > 0 AND low > 0 AND close > 0 AND adj_close > 0', name=op.f('ck_daily_bars_positive')),
    sa.ForeignKeyConstraint(['ticker'], ['companies.ticker'], name=op.f('fk_daily_bars_ticker_companies')),
    sa.PrimaryKeyConstraint('ticker', 'date', name=op.f('pk_daily_bars'))
    )
    with op.batch_alter_table('daily_bars', schema=None) as batch_op:
        batch_op.create_index('ix_daily_bars_ticker_available_at', ['ticker', 'available_at'], unique=False)

    op.create_table('fundamentals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('period_end', sa.Date(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('available_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('imported_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticker'], ['companies.ticker'], name=op.f('fk_fundamentals_ticker_companies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fundamentals')),
    sa.UniqueConstraint('ticker', 'field', 'period_end', name=op.f('uq_fundamentals_ticker_field_period_end'))
    )
    op.create_table('text_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=True),
    sa.Column('dedup_key', sa.String(length=80), nullable=False),
    sa.Column('published_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('session_date', sa.Date(), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('author', sa.String(length=100), nullable=True),
    sa.Column('author_followers', sa.BigInteger(), nullable=True),
    sa.Column('repost_count', sa.Integer(), nullable=True),
    sa.Column('imported_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticker'], ['companies.ticker'], name=op.f('fk_text_items_ticker_companies')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_text_items')),
    sa.UniqueConstraint('ticker', 'dedup_key', name=op.f('uq_text_items_ticker_dedup_key'))
    )
    with op.batch_alter_table('text_items', schema=None) as batch_op:
        batch_op.create_index('ix_text_items_ticker_published_at', ['ticker', 'published_at'], unique=False)
        batch_op.create_index('ix_text_items_ticker_session_date', ['ticker', 'session_date'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('text_items', schema=None) as batch_op:
        batch_op.drop_index('ix_text_items_ticker_session_date')
        batch_op.drop_index('ix_text_items_ticker_published_at')

    op.drop_table('text_items')
    op.drop_table('fundamentals')
    with op.batch_alter_table('daily_bars', schema=None) as batch_op:
        batch_op.drop_index('ix_daily_bars_ticker_available_at')

    op.drop_table('daily_bars')
    op.drop_table('companies')
