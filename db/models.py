"""SQLAlchemy 2.0 typed ORM for the whole product.

Groups, in the order data flows:
  market data     Company, DailyBar, TextItem, Fundamental, PostTone (a classifier's cached reading of a post)
  people          User, RiskProfile (versioned per user)
  models          ModelVersion (base + adapter hash), ModelActivation (a user's active version, history)
  forecasts       Forecast (one generated view with everything needed to reproduce it)
  learning        Preference (pairwise or rating; human, outcome or simulated), TrainingRun
  evaluation      BacktestRun, BacktestEquity, BacktestPosition
  trading         PaperAccount, Order, Fill, Position, BotState, BotEvent

Times are UTC and timezone-aware (:class:`db.types.UTCDateTime`); trading days are plain dates in the
exchange's local calendar. Schema changes go through Alembic migrations in ``db/migrations``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# --------------------------------------------------------------------------------------------------
# Market data
# --------------------------------------------------------------------------------------------------


class Company(Base):
    __tablename__ = "companies"

    ticker: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sector: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, doc="Company introduction for prompts.")
    exchange: Mapped[str] = mapped_column(String(16), default="XNYS")
    source: Mapped[str] = mapped_column(String(32), default="bundle")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DailyBar(Base):
    """One trading day's prices. ``available_at`` is the session close: nothing of the bar is known earlier."""

    __tablename__ = "daily_bars"
    __table_args__ = (
        CheckConstraint("high >= low", name="high_ge_low"),
        CheckConstraint("open > 0 AND high > 0 AND low > 0 AND close > 0 AND adj_close > 0", name="positive"),
        Index("ix_daily_bars_ticker_available_at", "ticker", "available_at"),
    )

    ticker: Mapped[str] = mapped_column(ForeignKey("companies.ticker"), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    open: Mapped[float] = mapped_column(Float)
    high: Mapped[float] = mapped_column(Float)
    low: Mapped[float] = mapped_column(Float)
    close: Mapped[float] = mapped_column(Float)
    adj_close: Mapped[float] = mapped_column(Float)
    volume: Mapped[int] = mapped_column(BigInteger)
    available_at: Mapped[datetime] = mapped_column()
    source: Mapped[str] = mapped_column(String(32), default="bundle")
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class TextItem(Base):
    """A tweet, headline or news item about a ticker.

    ``session_date`` is the trading session whose information set the item belongs to: an item posted
    after a session's close counts for the next session (exchange calendar, not a hand-written list).
    """

    __tablename__ = "text_items"
    __table_args__ = (
        UniqueConstraint("ticker", "dedup_key"),
        Index("ix_text_items_ticker_published_at", "ticker", "published_at"),
        Index("ix_text_items_ticker_session_date", "ticker", "session_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticker: Mapped[str] = mapped_column(ForeignKey("companies.ticker"))
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(80))
    published_at: Mapped[datetime] = mapped_column()
    session_date: Mapped[date] = mapped_column(Date)
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(100))
    author_followers: Mapped[int | None] = mapped_column(BigInteger)
    repost_count: Mapped[int | None] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class Fundamental(Base):
    """A basic financial figure for a period, known from ``available_at`` on (point in time)."""

    __tablename__ = "fundamentals"
    __table_args__ = (UniqueConstraint("ticker", "field", "period_end"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticker: Mapped[str] = mapped_column(ForeignKey("companies.ticker"))
    field: Mapped[str] = mapped_column(String(64))
    period_end: Mapped[date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float)
    available_at: Mapped[datetime] = mapped_column()
    source: Mapped[str] = mapped_column(String(32))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class PostTone(Base):
    """A post's tone as one sentiment classifier read it, cached (scoring a post costs a model pass).

    Keyed by the classifier (``scorer_key``: the sentiment adapter's content hash) and the post's
    cleaned text (``text_hash``: SHA-256, first 32 hex digits), so the same text from any source or
    ticker is scored once, and a new adapter version scores afresh.
    """

    __tablename__ = "post_tones"

    scorer_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    tone: Mapped[int] = mapped_column(Integer)  # -1 bearish / worried, 0 neutral, +1 bullish / upbeat
    scored_at: Mapped[datetime] = mapped_column(default=utcnow)


# --------------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------------


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_simulated: Mapped[bool] = mapped_column(Boolean, default=False, doc="Demo/test user, labelled as such.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    profiles: Mapped[list[RiskProfile]] = relationship(back_populates="user", order_by="RiskProfile.version")


class RiskProfile(Base):
    """One version of a user's risk profile: questionnaire answers and the limits derived from them."""

    __tablename__ = "risk_profiles"
    __table_args__ = (
        UniqueConstraint("user_id", "version"),
        CheckConstraint("max_weight >= 0 AND max_weight <= 1", name="max_weight_range"),
        CheckConstraint("max_gross >= 0 AND max_gross <= 2", name="max_gross_range"),
        CheckConstraint("risk_aversion > 0", name="risk_aversion_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(32), doc="conservative / moderate / aggressive / custom")
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    score: Mapped[float | None] = mapped_column(Float)
    risk_aversion: Mapped[float] = mapped_column(Float)
    max_weight: Mapped[float] = mapped_column(Float)
    max_gross: Mapped[float] = mapped_column(Float)
    allow_shorts: Mapped[bool] = mapped_column(Boolean, default=False)
    target_vol: Mapped[float | None] = mapped_column(Float)
    cash_buffer: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="profiles")


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class ModelVersion(Base):
    """A servable model: a base model plus an optional adapter, identified by content hashes.

    ``key`` = base fingerprint + adapter hash, unique, so registering the same weights twice finds the
    existing row.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), doc="base / sft / dpo / kto / reward")
    base_model_id: Mapped[str] = mapped_column(Text)
    base_fingerprint: Mapped[str] = mapped_column(String(64))
    adapter_path: Mapped[str | None] = mapped_column(Text)
    adapter_hash: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("risk_profiles.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])


class ModelActivation(Base):
    """History of a user's active model version; the newest row is active. Rollback appends a row."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    activated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --------------------------------------------------------------------------------------------------
# Forecasts
# --------------------------------------------------------------------------------------------------


class Forecast(Base):
    """One generated weekly view, stored with what is needed to reproduce it.

    ``parse_status``: ``ok`` (strict parser), ``fallback`` (tolerant parser), ``unparsed`` (never a
    signal). ``check_passed`` False (the view misstates its window or contradicts itself) is not a
    signal either. ``forecast_key`` hashes model version, prompt, decoding, seed, candidate index and user, so
    re-running the same forecast finds the existing row instead of duplicating it.
    """

    __tablename__ = "forecasts"
    __table_args__ = (
        Index("ix_forecasts_ticker_as_of", "ticker", "as_of"),
        Index("ix_forecasts_user_forecast_date", "user_id", "forecast_date"),
        CheckConstraint("parse_status IN ('ok', 'fallback', 'unparsed')", name="parse_status_valid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    forecast_key: Mapped[str] = mapped_column(String(64), unique=True)
    ticker: Mapped[str] = mapped_column(ForeignKey("companies.ticker"))
    forecast_date: Mapped[date] = mapped_column(Date, doc="The decision session (last session on/before the asked date).")
    as_of: Mapped[datetime] = mapped_column(doc="Information cut-off: the decision session's close.")
    target_start: Mapped[date] = mapped_column(Date)
    target_end: Mapped[date] = mapped_column(Date)
    horizon_days: Mapped[int] = mapped_column(Integer, default=7)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("risk_profiles.id"))
    prompt_hash: Mapped[str] = mapped_column(String(64), index=True)
    prompt_text: Mapped[str] = mapped_column(Text)
    prompt_messages: Mapped[list[Any] | None] = mapped_column(JSON, doc="The chat messages before templating (for TRL datasets).")
    raw_text: Mapped[str] = mapped_column(Text)
    parse_status: Mapped[str] = mapped_column(String(16))
    parse_error: Mapped[str | None] = mapped_column(Text)
    direction: Mapped[str | None] = mapped_column(String(8), doc="up / down")
    bin_low: Mapped[float | None] = mapped_column(Float, doc="Lower bound of the magnitude bin, percent.")
    bin_high: Mapped[float | None] = mapped_column(Float, doc="Upper bound; NULL for 'more than 5%'.")
    positives: Mapped[str | None] = mapped_column(Text)
    concerns: Mapped[str | None] = mapped_column(Text)
    analysis: Mapped[str | None] = mapped_column(Text)
    check_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="The view checker's verdict (advisor.forecaster.checker).")
    check_passed: Mapped[bool | None] = mapped_column(Boolean, doc="NULL: not checked (older rows).")
    decoding: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer)
    candidate_index: Mapped[int] = mapped_column(Integer, default=0)
    group_key: Mapped[str] = mapped_column(String(64), index=True, doc="Candidates of one prompt share it.")
    text_item_ids: Mapped[list[Any]] = mapped_column(default=list, doc="Texts the prompt quoted.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model_version: Mapped[ModelVersion] = relationship()


# --------------------------------------------------------------------------------------------------
# Learning from preferences
# --------------------------------------------------------------------------------------------------


class Preference(Base):
    """A preference signal. ``kind='pair'``: chosen vs rejected view of the same prompt (``both_bad``
    marks a pair the user rejected entirely). ``kind='rating'``: thumbs on one view (+1 / -1).
    ``source``: human, outcome (realised utility) or simulated (a labelled stand-in for clicks)."""

    __tablename__ = "preferences"
    __table_args__ = (
        CheckConstraint("kind IN ('pair', 'rating')", name="kind_valid"),
        CheckConstraint("source IN ('human', 'outcome', 'simulated')", name="source_valid"),
        CheckConstraint("rating IS NULL OR rating IN (-1, 1)", name="rating_valid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("risk_profiles.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    chosen_forecast_id: Mapped[int | None] = mapped_column(ForeignKey("forecasts.id"))
    rejected_forecast_id: Mapped[int | None] = mapped_column(ForeignKey("forecasts.id"))
    forecast_id: Mapped[int | None] = mapped_column(ForeignKey("forecasts.id"))
    rating: Mapped[int | None] = mapped_column(Integer)
    both_bad: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(Text)
    utility_chosen: Mapped[float | None] = mapped_column(Float)
    utility_rejected: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One training run (sft / reward / dpo / kto): data snapshot, config, metrics, outcome."""

    __tablename__ = "training_runs"
    __table_args__ = (CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status_valid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("risk_profiles.id"))
    parent_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    output_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data_snapshot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


# --------------------------------------------------------------------------------------------------
# Backtests
# --------------------------------------------------------------------------------------------------


class BacktestRun(Base):
    __tablename__ = "backtest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_key: Mapped[str | None] = mapped_column(String(64), index=True, doc="Runs compared together.")
    strategy: Mapped[str] = mapped_column(String(32), doc="views / benchmark / always_long / momentum / oracle")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("risk_profiles.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    start: Mapped[date] = mapped_column(Date)
    end: Mapped[date] = mapped_column(Date)
    tickers: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    chart_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BacktestEquity(Base):
    __tablename__ = "backtest_equity"

    run_id: Mapped[int] = mapped_column(ForeignKey("backtest_runs.id", ondelete="CASCADE"), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    equity: Mapped[float] = mapped_column(Float)
    cash: Mapped[float] = mapped_column(Float)
    gross_exposure: Mapped[float] = mapped_column(Float, default=0.0)
    net_exposure: Mapped[float] = mapped_column(Float, default=0.0)


class BacktestPosition(Base):
    __tablename__ = "backtest_positions"

    run_id: Mapped[int] = mapped_column(ForeignKey("backtest_runs.id", ondelete="CASCADE"), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    ticker: Mapped[str] = mapped_column(String(16), primary_key=True)
    quantity: Mapped[float] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float)


# --------------------------------------------------------------------------------------------------
# Trading (paper only)
# --------------------------------------------------------------------------------------------------


class PaperAccount(Base):
    """The local paper broker's account (the Alpaca account lives at Alpaca)."""

    __tablename__ = "paper_accounts"
    __table_args__ = (UniqueConstraint("user_id", "broker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    broker: Mapped[str] = mapped_column(String(16), default="local")
    cash: Mapped[float] = mapped_column(Float)
    initial_cash: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Order(Base):
    """An order intent and its life at the broker.

    Bot-owned columns (written before sending, never changed by the broker): client_order_id, user,
    broker, decision_week, ticker, side, sequence, qty/notional asked, intent. Broker-mirrored columns
    (copied from the broker's answers): status, broker_order_id, filled_qty, filled_avg_price, error.
    """

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("broker", "client_order_id"),  # ids are unique per broker account, as brokers enforce them
        CheckConstraint("side IN ('buy', 'sell')", name="side_valid"),
        Index("ix_orders_user_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    broker: Mapped[str] = mapped_column(String(16))
    decision_week: Mapped[date | None] = mapped_column(Date)
    ticker: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(4))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    qty: Mapped[float | None] = mapped_column(Float)
    notional: Mapped[float | None] = mapped_column(Float)
    order_type: Mapped[str] = mapped_column(String(16), default="market")
    time_in_force: Mapped[str] = mapped_column(String(8), default="day")
    intent: Mapped[dict[str, Any]] = mapped_column(default=dict)
    adopted: Mapped[bool] = mapped_column(Boolean, default=False, doc="Found at the broker, not sent by us.")
    status: Mapped[str] = mapped_column(String(24), default="intent")
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    filled_qty: Mapped[float] = mapped_column(Float, default=0.0)
    filled_avg_price: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    fills: Mapped[list[Fill]] = relationship(back_populates="order", order_by="Fill.id")


class Fill(Base):
    __tablename__ = "fills"
    __table_args__ = (UniqueConstraint("order_id", "broker_fill_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    broker_fill_id: Mapped[str] = mapped_column(String(64))
    qty: Mapped[float] = mapped_column(Float)
    price: Mapped[float] = mapped_column(Float)
    commission: Mapped[float] = mapped_column(Float, default=0.0)
    filled_at: Mapped[datetime] = mapped_column()

    order: Mapped[Order] = relationship(back_populates="fills")


class Position(Base):
    """Positions per user and broker: authoritative for the local broker, a mirror for Alpaca."""

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("user_id", "broker", "ticker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    broker: Mapped[str] = mapped_column(String(16))
    ticker: Mapped[str] = mapped_column(String(16))
    qty: Mapped[float] = mapped_column(Float)
    avg_entry_price: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BotState(Base):
    """The rebalance bot's persistent state per user and broker, so the loop survives restarts."""

    __tablename__ = "bot_state"
    __table_args__ = (UniqueConstraint("user_id", "broker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    broker: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="stopped", doc="running / stopped / killed")
    kill_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_decision_week: Mapped[date | None] = mapped_column(Date)
    last_run_at: Mapped[datetime | None] = mapped_column()
    message: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BotEvent(Base):
    """Every decision the bot takes, for the log and the dashboard."""

    __tablename__ = "bot_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    broker: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
