"""Small read-only summaries of the store for the CLI, the demo and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from advisor.data.store import CompanyInfo, MarketStore, SqlMarketStore
from advisor.errors import DataUnavailableError
from db.models import Company, DailyBar, TextItem

FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TickerOverview:
    company: CompanyInfo
    as_of: datetime | None
    bar_count: int
    first_date: date | None
    last_date: date | None
    text_count: int
    recent_bars: pd.DataFrame
    recent_texts: pd.DataFrame


def ticker_overview(store: MarketStore, ticker: str, *, as_of: datetime | None = None, rows: int = 10) -> TickerOverview:
    company = store.company(ticker)
    cutoff = as_of or FAR_FUTURE
    bars = store.bars(ticker, cutoff)
    if bars.empty:
        raise DataUnavailableError(f"no prices stored for {ticker}" + (f" as of {as_of:%Y-%m-%d}" if as_of else ""))
    texts = store.texts(ticker, cutoff)
    return TickerOverview(
        company=company,
        as_of=as_of,
        bar_count=len(bars),
        first_date=bars.index[0],
        last_date=bars.index[-1],
        text_count=len(texts),
        recent_bars=bars.tail(rows),
        recent_texts=texts.tail(rows) if not texts.empty else texts,
    )


@dataclass(frozen=True)
class StoreSummary:
    companies: int
    tickers_with_prices: int
    bars: int
    texts: int
    first_date: date | None
    last_date: date | None


def store_summary(session: Session) -> StoreSummary:
    bars, first, last, tickers = session.execute(
        select(func.count(), func.min(DailyBar.date), func.max(DailyBar.date), func.count(DailyBar.ticker.distinct()))
    ).one()
    return StoreSummary(
        companies=session.scalar(select(func.count()).select_from(Company)) or 0,
        tickers_with_prices=tickers or 0,
        bars=bars or 0,
        texts=session.scalar(select(func.count()).select_from(TextItem)) or 0,
        first_date=first,
        last_date=last,
    )


def stored_tickers(session: Session) -> list[str]:
    return SqlMarketStore(session).tickers()
