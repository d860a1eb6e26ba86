"""product: users, profiles, models, forecasts, preferences, training, backtests, trading

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('is_simulated', sa.Boolean(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('bot_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bot_events_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bot_events'))
    )
    with op.batch_alter_table('bot_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bot_events_user_id'), ['user_id'], unique=False)

    op.create_table('bot_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('kill_requested', sa.Boolean(), nullable=False),
    sa.Column('last_decision_week', sa.Date(), nullable=True),
    sa.Column('last_run_at', db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('updated_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_bot_state_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bot_state')),
    sa.UniqueConstraint('user_id', 'broker', name=op.f('uq_bot_state_user_id_broker'))
    )
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_order_id', sa.String(length=128), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('decision_week', sa.Date(), nullable=True),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('qty', sa.Float(), nullable=True),
    sa.Column('notional', sa.Float(), nullable=True),
    sa.Column('order_type', sa.String(length=16), nullable=False),
    sa.Column('time_in_force', sa.String(length=8), nullable=False),
    sa.Column('intent', sa.JSON(), nullable=False),
    sa.Column('adopted', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('broker_order_id', sa.String(length=64), nullable=True),
    sa.Column('filled_qty', sa.Float(), nullable=False),
    sa.Column('filled_avg_price', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('submitted_at', db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f('ck_orders_side_valid')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_orders_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('client_order_id', name=op.f('uq_orders_client_order_id'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_user_status', ['user_id', 'status'], unique=False)

    op.create_table('paper_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('cash', sa.Float(), nullable=False),
    sa.Column('initial_cash', sa.Float(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_paper_accounts_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_paper_accounts')),
    sa.UniqueConstraint('user_id', 'broker', name=op.f('uq_paper_accounts_user_id_broker'))
    )
    op.create_table('positions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('qty', sa.Float(), nullable=False),
    sa.Column('avg_entry_price', sa.Float(), nullable=False),
    sa.Column('updated_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_positions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_positions')),
    sa.UniqueConstraint('user_id', 'broker', 'ticker', name=op.f('uq_positions_user_id_broker_ticker'))
    )
    op.create_table('risk_profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('answers', sa.JSON(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('risk_aversion', sa.Float(), nullable=False),
    sa.Column('max_weight', sa.Float(), nullable=False),
    sa.Column('max_gross', sa.Float(), nullable=False),
    sa.Column('allow_shorts', sa.Boolean(), nullable=False),
    sa.Column('target_vol', sa.Float(), nullable=True),
    sa.Column('cash_buffer', sa.Float(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('max_gross >= 0 AND max_gross <= 2', name=op.f('ck_risk_profiles_max_gross_range')),
    sa.CheckConstraint('max_weight >= 0 AND max_weight <= 1', name=op.f('ck_risk_profiles_max_weight_range')),
    sa.CheckConstraint('risk_aversion > 0', name=op.f('ck_risk_profiles_risk_aversion_positive')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_risk_profiles_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_profiles')),
    sa.UniqueConstraint('user_id', 'version', name=op.f('uq_risk_profiles_user_id_version'))
    )
    op.create_table('fills',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('broker_fill_id', sa.String(length=64), nullable=False),
    sa.Column('qty', sa.Float(), nullable=False),
    sa.Column('price', sa.Float(), nullable=False),
    sa.Column('commission', sa.Float(), nullable=False),
    sa.Column('filled_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_fills_order_id_orders')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fills')),
    sa.UniqueConstraint('order_id', 'broker_fill_id', name=op.f('uq_fills_order_id_broker_fill_id'))
    )
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fills_order_id'), ['order_id'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=160), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('base_model_id', sa.Text(), nullable=False),
    sa.Column('base_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('adapter_path', sa.Text(), nullable=True),
    sa.Column('adapter_hash', sa.String(length=64), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['model_versions.id'], name=op.f('fk_model_versions_parent_id_model_versions')),
    sa.ForeignKeyConstraint(['profile_id'], ['risk_profiles.id'], name=op.f('fk_model_versions_profile_id_risk_profiles')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_model_versions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('key', name=op.f('uq_model_versions_key'))
    )
    op.create_table('backtest_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('group_key', sa.String(length=64), nullable=True),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('start', sa.Date(), nullable=False),
    sa.Column('end', sa.Date(), nullable=False),
    sa.Column('tickers', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('chart_path', sa.Text(), nullable=True),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_backtest_runs_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['profile_id'], ['risk_profiles.id'], name=op.f('fk_backtest_runs_profile_id_risk_profiles')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_backtest_runs_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backtest_runs'))
    )
    with op.batch_alter_table('backtest_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backtest_runs_group_key'), ['group_key'], unique=False)

    op.create_table('forecasts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('forecast_key', sa.String(length=64), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('forecast_date', sa.Date(), nullable=False),
    sa.Column('as_of', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('target_start', sa.Date(), nullable=False),
    sa.Column('target_end', sa.Date(), nullable=False),
    sa.Column('horizon_days', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('prompt_hash', sa.String(length=64), nullable=False),
    sa.Column('prompt_text', sa.Text(), nullable=False),
    sa.Column('raw_text', sa.Text(), nullable=False),
    sa.Column('parse_status', sa.String(length=16), nullable=False),
    sa.Column('parse_error', sa.Text(), nullable=True),
    sa.Column('direction', sa.String(length=8), nullable=True),
    sa.Column('bin_low', sa.Float(), nullable=True),
    sa.Column('bin_high', sa.Float(), nullable=True),
    sa.Column('positives', sa.Text(), nullable=True),
    sa.Column('concerns', sa.Text(), nullable=True),
    sa.Column('analysis', sa.Text(), nullable=True),
    sa.Column('decoding', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('candidate_index', sa.Integer(), nullable=False),
    sa.Column('group_key', sa.String(length=64), nullable=False),
    sa.Column('text_item_ids', sa.JSON(), nullable=False),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("parse_status IN ('ok', 'fallback', 'unparsed')", name=op.f('ck_forecasts_parse_status_valid')),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_forecasts_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['profile_id'], ['risk_profiles.id'], name=op.f('fk_forecasts_profile_id_risk_profiles')),
    sa.ForeignKeyConstraint(['ticker'], ['companies.ticker'], name=op.f('fk_forecasts_ticker_companies')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_forecasts_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_forecasts')),
    sa.UniqueConstraint('forecast_key', name=op.f('uq_forecasts_forecast_key'))
    )
    with op.batch_alter_table('forecasts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_forecasts_group_key'), ['group_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_forecasts_prompt_hash'), ['prompt_hash'], unique=False)
        batch_op.create_index('ix_forecasts_ticker_as_of', ['ticker', 'as_of'], unique=False)
        batch_op.create_index('ix_forecasts_user_forecast_date', ['user_id', 'forecast_date'], unique=False)

    op.create_table('model_activations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('activated_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_model_activations_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_model_activations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_activations'))
    )
    with op.batch_alter_table('model_activations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_activations_user_id'), ['user_id'], unique=False)

    op.create_table('training_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('profile_id', sa.Integer(), nullable=True),
    sa.Column('parent_model_version_id', sa.Integer(), nullable=True),
    sa.Column('output_model_version_id', sa.Integer(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('data_snapshot', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', db.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f('ck_training_runs_status_valid')),
    sa.ForeignKeyConstraint(['output_model_version_id'], ['model_versions.id'], name=op.f('fk_training_runs_output_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['parent_model_version_id'], ['model_versions.id'], name=op.f('fk_training_runs_parent_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['profile_id'], ['risk_profiles.id'], name=op.f('fk_training_runs_profile_id_risk_profiles')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_training_runs_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_runs'))
    )
    op.create_table('backtest_equity',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('equity', sa.Float(), nullable=False),
    sa.Column('cash', sa.Float(), nullable=False),
    sa.Column('gross_exposure', sa.Float(), nullable=False),
    sa.Column('net_exposure', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['backtest_runs.id'], name=op.f('fk_backtest_equity_run_id_backtest_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'date', name=op.f('pk_backtest_equity'))
    )
    op.create_table('backtest_positions',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('quantity', sa.Float(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['backtest_runs.id'], name=op.f('fk_backtest_positions_run_id_backtest_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'date', 'ticker', name=op.f('pk_backtest_positions'))
    )
    op.create_table('preferences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('chosen_forecast_id', sa.Integer(), nullable=True),
    sa.Column('rejected_forecast_id', sa.Integer(), nullable=True),
    sa.Column('forecast_id', sa.Integer(), nullable=True),
    sa.Column('rating', sa.Integer(), nullable=True),
    sa.Column('both_bad', sa.Boolean(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('utility_chosen', sa.Float(), nullable=True),
    sa.Column('utility_rejected', sa.Float(), nullable=True),
    sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('pair', 'rating')", name=op.f('ck_preferences_kind_valid')),
    sa.CheckConstraint("source IN ('human', 'outcome', 'simulated')", name=op.f('ck_preferences_source_valid')),
    sa.CheckConstraint('rating IS NULL OR rating IN (-1, 1)', name=op.f('ck_preferences_rating_valid')),
    sa.ForeignKeyConstraint(['chosen_forecast_id'], ['forecasts.id'], name=op.f('fk_preferences_chosen_forecast_id_forecasts')),
    sa.ForeignKeyConstraint(['forecast_id'], ['forecasts.id'], name=op.f('fk_preferences_forecast_id_forecasts')),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_preferences_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['profile_id'], ['risk_profiles.id'], name=op.f('fk_preferences_profile_id_risk_profiles')),
    sa.ForeignKeyConstraint(['rejected_forecast_id'], ['forecasts.id'], name=op.f('fk_preferences_rejected_forecast_id_forecasts')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_preferences_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preferences'))
    )
    with op.batch_alter_table('preferences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_preferences_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('preferences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_preferences_user_id'))

    op.drop_table('preferences')
    op.drop_table('backtest_positions')
    op.drop_table('backtest_equity')
    op.drop_table('training_runs')
    with op.batch_alter_table('model_activations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_activations_user_id'))

    op.drop_table('model_activations')
    with op.batch_alter_table('forecasts', schema=None) as batch_op:
        batch_op.drop_index('ix_forecasts_user_forecast_date')
        batch_op.drop_index('ix_forecasts_ticker_as_of')
        batch_op.drop_index(batch_op.f('ix_forecasts_prompt_hash'))
        batch_op.drop_index(batch_op.f('ix_forecasts_group_key'))

    op.drop_table('forecasts')
    with op.batch_alter_table('backtest_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backtest_runs_group_key'))

    op.drop_table('backtest_runs')
    op.drop_table('model_versions')
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fills_order_id'))

    op.drop_table('fills')
    op.drop_table('risk_profiles')
    op.drop_table('positions')
    op.drop_table('paper_accounts')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_user_status')

    op.drop_table('orders')
    op.drop_table('bot_state')
    with op.batch_alter_table('bot_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bot_events_user_id'))

    op.drop_table('bot_events')
    op.drop_table('users')
