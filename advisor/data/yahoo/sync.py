"""``advisor data sync``: fetch every ticker's missing data from Yahoo, then write it in one transaction
(see the package docstring)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm

from advisor import market_calendar
from advisor.data.importer import ImportSummary, write_bars, write_companies, write_texts
from advisor.data.yahoo.http import (
    BAR_COLUMNS,
    FUNDAMENTAL_COLUMNS,
    SOURCE,
    TEXT_COLUMNS,
)
from advisor.data.yahoo.provider import (
    YahooProvider,
    normalise_ticker,
)
from advisor.errors import (
    InputValidationError,
    ProviderError,
)
from db.engine import session_scope
from db.models import Company, DailyBar, Fundamental
from db.types import utcnow

logger = logging.getLogger("advisor.data.yahoo")

# --------------------------------------------------------------------------------------------------
# Writing fundamentals (the importer has writers for companies, bars and texts)
# --------------------------------------------------------------------------------------------------


@dataclass
class FundamentalsCount:
    added: int = 0
    existing: int = 0
    differing: int = 0


def write_fundamentals(session: Session, frame: pd.DataFrame) -> FundamentalsCount:
    """Insert figures whose (ticker, field, period_end) is new; a restated value is counted, not overwritten.

    Keeping the first value seen is what was knowable at the time: overwriting with a restatement
    would leak later knowledge into earlier dates.
    """
    count = FundamentalsCount()
    if frame.empty:
        return count
    tickers = sorted(frame["ticker"].unique())
    stored = {
        (t, f, p): v
        for t, f, p, v in session.execute(
            select(Fundamental.ticker, Fundamental.field, Fundamental.period_end, Fundamental.value).where(
                Fundamental.ticker.in_(tickers)
            )
        ).all()
    }
    now = utcnow()
    records = []
    for r in frame.itertuples(index=False):
        key = (r.ticker, r.field, r.period_end)
        if key in stored:
            if np.isclose(stored[key], r.value, rtol=1e-9, atol=0):
                count.existing += 1
            else:
                count.differing += 1
            continue
        stored[key] = r.value
        available_at = r.available_at.to_pydatetime() if isinstance(r.available_at, pd.Timestamp) else r.available_at
        records.append(
            {
                "ticker": r.ticker, "field": r.field, "period_end": r.period_end, "value": float(r.value),
                "available_at": available_at, "source": r.source, "imported_at": now,
            }
        )
    if records:
        session.execute(insert(Fundamental), records)
    count.added = len(records)
    return count


# --------------------------------------------------------------------------------------------------
# Incremental sync
# --------------------------------------------------------------------------------------------------


def sync_tickers(
    factory: sessionmaker[Session],
    provider: YahooProvider,
    tickers: Sequence[str],
    start: date,
    end: date | None = None,
    *,
    include_news: bool = True,
    progress: bool = True,
) -> ImportSummary:
    """Fetch what is missing for every ticker, validate it all, then write it in one transaction.

    Per ticker, bars are fetched from max(``start``, last stored bar + 1 day) to ``end`` (default:
    today in New York); if that span holds no complete session, nothing is fetched. Earlier history
    than what is stored is not backfilled (a note says so). Nothing is written until every ticker's
    prices have been fetched and validated, so a price failure on any ticker writes nothing and its
    message names that ticker. News and quarterly financials (``include_news``) and company profiles
    are best effort: their failures become ``summary.notes`` and do not cost the prices.
    """
    symbols = _unique_tickers(tickers)
    now = market_calendar.utcnow()
    end = end or market_calendar.exchange_today(now)
    if end < start:
        raise InputValidationError(f"--end {end} is before --start {start}", field="end")

    with session_scope(factory) as session:
        spans = {
            t: (first, last)
            for t, first, last in session.execute(
                select(DailyBar.ticker, func.min(DailyBar.date), func.max(DailyBar.date))
                .where(DailyBar.ticker.in_(symbols))
                .group_by(DailyBar.ticker)
            ).all()
        }
        known = set(session.scalars(select(Company.ticker).where(Company.ticker.in_(symbols))))

    summary = ImportSummary(source=SOURCE)
    bars: list[pd.DataFrame] = []
    texts: list[pd.DataFrame] = []
    figures: list[pd.DataFrame] = []
    companies: list[dict[str, Any]] = []

    for ticker in tqdm(symbols, desc="fetching from Yahoo Finance", unit="ticker", disable=not progress):
        first_stored, last_stored = spans.get(ticker, (None, None))
        if first_stored is not None and start < first_stored:
            summary.notes.append(f"{ticker}: stored bars begin {first_stored}; earlier dates are not backfilled")
        fetch_from = max(start, last_stored + timedelta(days=1)) if last_stored else start
        complete = [
            d for d in market_calendar.sessions_between(fetch_from, end) if market_calendar.session_close(d) <= now
        ]
        wrote_something = False
        if complete:
            frame = provider.fetch_bars(ticker, fetch_from, complete[-1])
            bars.append(frame)
            wrote_something = True
            gaps = sorted(set(complete) - set(frame["date"]))
            if gaps:
                summary.notes.append(
                    f"{ticker}: Yahoo Finance has no bar for {len(gaps)} of {len(complete)} sessions "
                    f"{fetch_from}..{complete[-1]} (first missing: {gaps[0]})"
                )
        else:
            summary.notes.append(
                f"{ticker}: no complete session to fetch in {fetch_from}..{end}"
                + (f" (prices stored up to {last_stored})" if last_stored else "")
            )
        if include_news:
            news = _best_effort(summary, f"{ticker}: news not fetched", partial(provider.fetch_news, ticker))
            if news is not None and not news.empty:
                texts.append(news)
                wrote_something = True
            financials = _best_effort(
                summary, f"{ticker}: quarterly financials not fetched", partial(provider.fetch_fundamentals, ticker)
            )
            if financials is not None and not financials.empty:
                figures.append(financials)
                wrote_something = True
        if wrote_something and ticker not in known:
            company = provider.fetch_company(ticker)
            if company.get("note"):
                summary.notes.append(str(company["note"]))
            companies.append({k: company.get(k) for k in ("ticker", "name", "sector", "description")})

    with session_scope(factory) as session:
        write_companies(session, pd.DataFrame(companies, columns=["ticker", "name", "sector", "description"]), summary, source=SOURCE)
        write_bars(session, _concat(bars, BAR_COLUMNS), summary, source=SOURCE, progress=progress)
        write_texts(session, _concat(texts, TEXT_COLUMNS), summary, progress=progress)
        count = write_fundamentals(session, _concat(figures, FUNDAMENTAL_COLUMNS))
    if include_news:
        summary.notes.append(
            f"quarterly financials: {count.added} added, {count.existing} already stored"
            + (f", {count.differing} differ from stored values (kept stored)" if count.differing else "")
        )
    return summary


def _unique_tickers(tickers: Sequence[str]) -> list[str]:
    symbols = list(dict.fromkeys(normalise_ticker(t) for t in tickers))
    if not symbols:
        raise InputValidationError("give at least one ticker", field="tickers")
    return symbols


def _best_effort(summary: ImportSummary, what: str, fetch: Callable[[], pd.DataFrame]) -> pd.DataFrame | None:
    """Extras must not cost the prices: a provider failure becomes a note instead of an exception."""
    try:
        return fetch()
    except ProviderError as exc:
        summary.notes.append(f"{what}: {exc}")
        logger.warning("%s: %s", what, exc)
    return None


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]

