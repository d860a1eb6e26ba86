"""Writing validated market data into the store, idempotently and in one transaction.

The same writers serve the offline bundle and the yfinance provider: rows whose key already exists are
left alone (re-importing changes nothing), new rows are added, and rows whose key exists with
*different* values are counted as conflicts and kept as stored (history is not rewritten silently;
the summary says how many differ).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm.auto import tqdm

from advisor.data.bundle import Bundle, read_bundle
from db.engine import session_scope
from db.locks import exclusive
from db.models import Company, DailyBar, TextItem
from db.types import utcnow

CHUNK_ROWS = 5_000
PRICE_TOLERANCE = 1e-9


@dataclass
class ImportSummary:
    """What an import added, skipped and noticed."""

    source: str
    companies_added: int = 0
    companies_existing: int = 0
    bars_added: int = 0
    bars_existing: int = 0
    bars_conflicting: int = 0
    texts_added: int = 0
    texts_existing: int = 0
    tickers: list[str] = field(default_factory=list)
    first_date: date | None = None
    last_date: date | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.companies_added or self.bars_added or self.texts_added)

    def lines(self) -> list[str]:
        span = f"{self.first_date} .. {self.last_date}" if self.first_date else "no prices"
        out = [
            f"source: {self.source}",
            f"tickers: {len(self.tickers)} ({span})",
            f"companies: {self.companies_added} added, {self.companies_existing} already stored",
            f"daily bars: {self.bars_added} added, {self.bars_existing} already stored"
            + (f", {self.bars_conflicting} differ from stored values (kept stored)" if self.bars_conflicting else ""),
            f"text items: {self.texts_added} added, {self.texts_existing} already stored",
        ]
        out.extend(f"note: {note}" for note in self.notes)
        return out


def import_bundle(
    factory: sessionmaker[Session], directory: Path | str, *, progress: bool = True, today: date | None = None
) -> ImportSummary:
    """Validate the whole bundle first, then write it in one transaction."""
    bundle = read_bundle(directory, today=today)
    summary = ImportSummary(source=str(bundle.directory), notes=list(bundle.notes))
    with exclusive(factory.kw["bind"], "bundle import"), session_scope(factory) as session:  # a second import waits, then adds nothing
        write_bundle(session, bundle, summary, progress=progress)
    return summary


def write_bundle(session: Session, bundle: Bundle, summary: ImportSummary, *, progress: bool) -> None:
    write_companies(session, bundle.companies, summary, source="bundle")
    write_bars(session, bundle.prices, summary, source="bundle", progress=progress)
    write_texts(session, bundle.tweets, summary, progress=progress)


def write_companies(session: Session, companies: pd.DataFrame, summary: ImportSummary, *, source: str) -> None:
    """Insert companies that are not stored yet. ``companies`` has ticker, name, sector[, description]."""
    existing = set(session.scalars(select(Company.ticker)))
    rows = []
    for record in companies.to_dict("records"):
        if record["ticker"] in existing:
            summary.companies_existing += 1
            continue
        rows.append(
            {
                "ticker": record["ticker"],
                "name": record["name"],
                "sector": record.get("sector"),
                "description": record.get("description"),
                "source": source,
                "exchange": "XNYS",
                "created_at": utcnow(),
            }
        )
    if rows:
        session.execute(insert(Company), rows)
    summary.companies_added += len(rows)


def write_bars(
    session: Session, prices: pd.DataFrame, summary: ImportSummary, *, source: str, progress: bool = False
) -> None:
    """Insert bars whose (ticker, date) is new; count identical and conflicting existing rows.

    ``prices`` columns: ticker, date, open, high, low, close, adj_close, volume, available_at.
    """
    if prices.empty:
        return
    tickers = sorted(prices["ticker"].unique())
    summary.tickers = sorted(set(summary.tickers) | set(tickers))
    first, last = prices["date"].min(), prices["date"].max()
    summary.first_date = min(first, summary.first_date) if summary.first_date else first
    summary.last_date = max(last, summary.last_date) if summary.last_date else last

    stored = _stored_bars(session, tickers, first, last)
    merged = prices.merge(stored, on=["ticker", "date"], how="left", suffixes=("", "_stored"), indicator=True)
    is_new = (merged["_merge"] == "left_only").to_numpy()
    old = merged[~is_new]
    if len(old):
        differs = np.zeros(len(old), dtype=bool)
        for column in ("open", "high", "low", "close", "adj_close"):
            differs |= ~np.isclose(old[column], old[f"{column}_stored"], rtol=PRICE_TOLERANCE, atol=0)
        differs |= (old["volume"].to_numpy() != old["volume_stored"].to_numpy())
        summary.bars_conflicting += int(differs.sum())
        summary.bars_existing += int(len(old) - differs.sum())
    new = merged[is_new]
    now = utcnow()
    records = [
        {
            "ticker": r.ticker,
            "date": r.date,
            "open": float(r.open),
            "high": float(r.high),
            "low": float(r.low),
            "close": float(r.close),
            "adj_close": float(r.adj_close),
            "volume": int(r.volume),
            "available_at": r.available_at.to_pydatetime(),
            "source": source,
            "imported_at": now,
        }
        for r in new.itertuples(index=False)
    ]
    _insert_chunked(session, DailyBar, records, "daily bars", progress)
    summary.bars_added += len(records)


def write_texts(session: Session, texts: pd.DataFrame, summary: ImportSummary, *, progress: bool = False) -> None:
    """Insert text items whose (ticker, dedup_key) is new.

    ``texts`` columns: ticker, source, external_id, dedup_key, published_at (UTC), session_date, text,
    author, author_followers, repost_count, and optionally title and url.
    """
    if texts.empty:
        return
    tickers = sorted(texts["ticker"].unique())
    stored = set()
    for chunk in _chunks(tickers, 200):
        stored |= set(session.execute(select(TextItem.ticker, TextItem.dedup_key).where(TextItem.ticker.in_(chunk))).all())
    keys = list(zip(texts["ticker"], texts["dedup_key"], strict=True))
    is_new = np.array([key not in stored for key in keys], dtype=bool)
    summary.texts_existing += int((~is_new).sum())
    now = utcnow()
    records = []
    for r in texts[is_new].to_dict("records"):
        records.append(
            {
                "ticker": r["ticker"],
                "source": r["source"],
                "external_id": r.get("external_id"),
                "dedup_key": r["dedup_key"],
                "published_at": pd.Timestamp(r["published_at"]).to_pydatetime(),
                "session_date": r["session_date"],
                "title": r.get("title"),
                "text": r["text"],
                "url": r.get("url"),
                "author": _none_if_nan(r.get("author")),
                "author_followers": _int_or_none(r.get("author_followers")),
                "repost_count": _int_or_none(r.get("repost_count")),
                "imported_at": now,
            }
        )
    _insert_chunked(session, TextItem, records, "text items", progress)
    summary.texts_added += len(records)


def _stored_bars(session: Session, tickers: list[str], first: date, last: date) -> pd.DataFrame:
    columns = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    rows: list[Any] = []
    for chunk in _chunks(tickers, 200):
        rows.extend(
            session.execute(
                select(
                    DailyBar.ticker, DailyBar.date, DailyBar.open, DailyBar.high, DailyBar.low,
                    DailyBar.close, DailyBar.adj_close, DailyBar.volume,
                ).where(DailyBar.ticker.in_(chunk), DailyBar.date >= first, DailyBar.date <= last)
            ).all()
        )
    return pd.DataFrame(rows, columns=columns)


def _insert_chunked(session: Session, model: type, records: list[dict[str, Any]], label: str, progress: bool) -> None:
    if not records:
        return
    with tqdm(total=len(records), desc=f"writing {label}", unit="rows", disable=not progress, leave=False) as bar:
        for chunk in _chunks(records, CHUNK_ROWS):
            session.execute(insert(model), chunk)
            bar.update(len(chunk))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _none_if_nan(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)

