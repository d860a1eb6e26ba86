"""The point-in-time store: every read is "as of" a timestamp and cannot see later rows.

Two implementations with one interface:
  * :class:`SqlMarketStore` asks the database each time (the CLI, one window at a time);
  * :class:`PreloadedMarketStore` loads a ticker's rows once and filters in memory (bulk window
    construction for training and evaluation).
Both apply exactly the same rule: a bar is visible when ``available_at <= as_of`` (its session has
closed), a text item when ``published_at <= as_of``, a fundamental when ``available_at <= as_of``.
Future rows are reachable only through :meth:`MarketStore.outcome_bars`, which exists for labels and
is named so that a reviewer sees every use of future data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from advisor.errors import UnknownTickerError
from db.models import Company, DailyBar, Fundamental, TextItem

BAR_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume", "available_at"]
TEXT_COLUMNS = [
    "id", "source", "published_at", "session_date", "title", "text", "author",
    "author_followers", "repost_count", "dedup_key",
]


@dataclass(frozen=True)
class CompanyInfo:
    ticker: str
    name: str
    sector: str | None
    description: str | None


class MarketStore(ABC):
    """Point-in-time reads. ``as_of`` is a timezone-aware UTC datetime."""

    @abstractmethod
    def company(self, ticker: str) -> CompanyInfo: ...

    @abstractmethod
    def tickers(self) -> list[str]:
        """Tickers that have prices."""

    @abstractmethod
    def bars(self, ticker: str, as_of: datetime, start: date | None = None) -> pd.DataFrame:
        """Bars with ``available_at <= as_of`` (and ``date >= start``), indexed by date, oldest first."""

    @abstractmethod
    def texts(self, ticker: str, as_of: datetime, start_session: date | None = None) -> pd.DataFrame:
        """Text items with ``published_at <= as_of`` (and ``session_date >= start_session``)."""

    @abstractmethod
    def fundamentals(self, ticker: str, as_of: datetime) -> dict[str, float]:
        """Latest value of each field known at ``as_of``."""

    @abstractmethod
    def date_range(self, ticker: str) -> tuple[date, date] | None:
        """First and last bar date stored for ``ticker`` (None when there are no bars)."""

    @abstractmethod
    def outcome_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame:
        """Bars between two dates with no as-of filter. For labels and outcomes only."""


def _bars_frame(rows: Sequence[Any], columns: list[str] = BAR_COLUMNS) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame.set_index("date")
    frame["available_at"] = pd.to_datetime(frame["available_at"], utc=True)
    return frame.set_index("date").sort_index()


def _texts_frame(rows: Sequence[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TEXT_COLUMNS)
    if not frame.empty:
        frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
    return frame


class SqlMarketStore(MarketStore):
    """Reads the database on every call."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def company(self, ticker: str) -> CompanyInfo:
        row = self.session.get(Company, ticker)
        if row is None:
            raise UnknownTickerError(ticker, "import data first (advisor data import DIR or advisor data sync)")
        return CompanyInfo(row.ticker, row.name, row.sector, row.description)

    def tickers(self) -> list[str]:
        return list(self.session.scalars(select(DailyBar.ticker).distinct().order_by(DailyBar.ticker)))

    def bars(self, ticker: str, as_of: datetime, start: date | None = None) -> pd.DataFrame:
        query = select(
            DailyBar.date, DailyBar.open, DailyBar.high, DailyBar.low, DailyBar.close,
            DailyBar.adj_close, DailyBar.volume, DailyBar.available_at,
        ).where(DailyBar.ticker == ticker, DailyBar.available_at <= as_of)
        if start is not None:
            query = query.where(DailyBar.date >= start)
        return _bars_frame(self.session.execute(query.order_by(DailyBar.date)).all())

    def texts(self, ticker: str, as_of: datetime, start_session: date | None = None) -> pd.DataFrame:
        query = select(
            TextItem.id, TextItem.source, TextItem.published_at, TextItem.session_date, TextItem.title,
            TextItem.text, TextItem.author, TextItem.author_followers, TextItem.repost_count, TextItem.dedup_key,
        ).where(TextItem.ticker == ticker, TextItem.published_at <= as_of)
        if start_session is not None:
            query = query.where(TextItem.session_date >= start_session)
        return _texts_frame(self.session.execute(query.order_by(TextItem.published_at, TextItem.id)).all())

    def fundamentals(self, ticker: str, as_of: datetime) -> dict[str, float]:
        rows = self.session.execute(
            select(Fundamental.field, Fundamental.period_end, Fundamental.value)
            .where(Fundamental.ticker == ticker, Fundamental.available_at <= as_of)
            .order_by(Fundamental.field, Fundamental.period_end)
        ).all()
        latest: dict[str, float] = {}
        for field_name, _period, value in rows:
            latest[field_name] = value
        return latest

    def date_range(self, ticker: str) -> tuple[date, date] | None:
        first, last = self.session.execute(
            select(func.min(DailyBar.date), func.max(DailyBar.date)).where(DailyBar.ticker == ticker)
        ).one()
        return (first, last) if first is not None else None

    def outcome_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame:
        query = select(
            DailyBar.date, DailyBar.open, DailyBar.high, DailyBar.low, DailyBar.close,
            DailyBar.adj_close, DailyBar.volume, DailyBar.available_at,
        ).where(DailyBar.ticker == ticker, DailyBar.date >= start, DailyBar.date <= end)
        return _bars_frame(self.session.execute(query.order_by(DailyBar.date)).all())


class PreloadedMarketStore(MarketStore):
    """Loads each ticker's rows once (lazily) and answers as-of reads from memory.

    Same visibility rule as :class:`SqlMarketStore`, applied with pandas; the look-ahead tests run
    against both.
    """

    def __init__(self, session: Session) -> None:
        self._sql = SqlMarketStore(session)
        self._bars: dict[str, pd.DataFrame] = {}
        self._texts: dict[str, pd.DataFrame] = {}
        self._fundamentals: dict[str, pd.DataFrame] = {}
        self._companies: dict[str, CompanyInfo] = {}

    def company(self, ticker: str) -> CompanyInfo:
        if ticker not in self._companies:
            self._companies[ticker] = self._sql.company(ticker)
        return self._companies[ticker]

    def tickers(self) -> list[str]:
        return self._sql.tickers()

    def _all_bars(self, ticker: str) -> pd.DataFrame:
        if ticker not in self._bars:
            self._bars[ticker] = self._sql.outcome_bars(ticker, date.min, date.max)
        return self._bars[ticker]

    def _all_texts(self, ticker: str) -> pd.DataFrame:
        if ticker not in self._texts:
            self._texts[ticker] = self._sql.texts(ticker, datetime.max.replace(tzinfo=UTC))
        return self._texts[ticker]

    def bars(self, ticker: str, as_of: datetime, start: date | None = None) -> pd.DataFrame:
        frame = self._all_bars(ticker)
        if frame.empty:
            return frame
        visible = frame[frame["available_at"] <= pd.Timestamp(as_of)]
        if start is not None:
            visible = visible[visible.index >= start]
        return visible

    def texts(self, ticker: str, as_of: datetime, start_session: date | None = None) -> pd.DataFrame:
        frame = self._all_texts(ticker)
        if frame.empty:
            return frame
        visible = frame[frame["published_at"] <= pd.Timestamp(as_of)]
        if start_session is not None:
            visible = visible[visible["session_date"] >= start_session]
        return visible

    def fundamentals(self, ticker: str, as_of: datetime) -> dict[str, float]:
        return self._sql.fundamentals(ticker, as_of)

    def date_range(self, ticker: str) -> tuple[date, date] | None:
        frame = self._all_bars(ticker)
        if frame.empty:
            return None
        return frame.index[0], frame.index[-1]

    def outcome_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame:
        frame = self._all_bars(ticker)
        if frame.empty:
            return frame
        return frame[(frame.index >= start) & (frame.index <= end)]
