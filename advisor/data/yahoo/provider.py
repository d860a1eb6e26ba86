"""The Yahoo Finance provider: fetches with bounded retries (tenacity) and shapes and validates what
yfinance returns (see the package docstring)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import yfinance as yf
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from advisor import market_calendar
from advisor.data.yahoo.http import (
    _TICKER_PATTERN,
    BAR_COLUMNS,
    EXCHANGE_TZ,
    FILING_HOUR_UTC,
    FILING_LAG,
    FUNDAMENTAL_COLUMNS,
    FUNDAMENTAL_FIELDS,
    MAX_BACKOFF_S,
    NEWS_COUNT,
    NEWS_SOURCE,
    SOURCE,
    TEXT_COLUMNS,
    T,
    YahooUnknownSymbolError,
    _classify,
    _default_session,
    _Exchange,
    _failed_answer,
    _forget_cached_responses,
    _instrument,
    _Operation,
    _RetryableFailure,
    _yfinance_raises,
)
from advisor.errors import (
    AdvisorError,
    EmptyProviderResultError,
    InputValidationError,
    ProviderError,
    ProviderTimeoutError,
)

logger = logging.getLogger("advisor.data.yahoo")

# Indirection so tests can observe the backoff without waiting for it.
_sleep = time.sleep


# --------------------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------------------


class YahooProvider:
    """Daily bars, company profiles, news and quarterly financials from Yahoo Finance via yfinance.

    ``session`` is any requests or curl_cffi session (tests pass one that talks to a local fake Yahoo);
    the provider wraps its ``request`` method so every request is bounded by ``timeout_s``.
    ``retries`` counts attempts in all, as the ``yfinance_retries`` setting does.
    """

    def __init__(self, timeout_s: float = 10, retries: int = 3, backoff_s: float = 1.0, session: Any = None) -> None:
        if timeout_s <= 0:
            raise InputValidationError(f"timeout_s must be positive, got {timeout_s}", field="timeout_s")
        if retries < 1:
            raise InputValidationError(f"retries counts attempts and must be at least 1, got {retries}", field="retries")
        if backoff_s < 0:
            raise InputValidationError(f"backoff_s must not be negative, got {backoff_s}", field="backoff_s")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self._session = session if session is not None else _default_session()
        self._exchanges: list[_Exchange] = []

    # ---- public API ----------------------------------------------------------------------------

    def fetch_bars(self, ticker: str, start: date, end: date) -> pd.DataFrame:
        """Complete daily sessions ``start..end`` (inclusive) in the importer's ``write_bars`` format."""
        ticker = normalise_ticker(ticker)
        if end < start:
            raise InputValidationError(f"{ticker}: end {end} is before start {start}")
        operation = _Operation(f"{ticker} daily bars {start}..{end}", ("/v8/finance/chart/",), True)

        def fetch(handle: yf.Ticker) -> pd.DataFrame:
            # yfinance's ``end`` is exclusive; ours is inclusive.
            return handle.history(
                start=start.isoformat(),
                end=(end + timedelta(days=1)).isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=False,
                repair=False,
                timeout=self.timeout_s,
            )

        raw = self._call(operation, ticker, fetch)
        return _bars_frame(ticker, raw, start, end, operation.label)

    def fetch_company(self, ticker: str) -> dict[str, Any]:
        """Name, sector and description from ``Ticker.info``; never fails: falls back to the ticker as name.

        When it falls back, the dict carries a ``note`` saying why (``sync_tickers`` reports it).
        """
        ticker = normalise_ticker(ticker)
        operation = _Operation(f"{ticker} company profile", ("/finance/quote",), True)
        fallback = {"ticker": ticker, "name": ticker, "sector": None, "description": None}
        try:
            info = self._call(operation, ticker, lambda handle: handle.get_info())
        except ProviderError as exc:
            logger.warning("no company profile for %s: %s", ticker, exc)
            return {**fallback, "note": f"{ticker}: no company profile from Yahoo Finance, stored with its ticker as name ({exc})"}
        info = info if isinstance(info, dict) else {}
        name = info.get("longName") or info.get("shortName")
        if not name:
            return {**fallback, "note": f"{ticker}: Yahoo Finance gave no company name, stored with its ticker as name"}
        return {
            "ticker": ticker,
            "name": str(name)[:200],
            "sector": _text_or_none(info.get("sector"), 100),
            "description": _text_or_none(info.get("longBusinessSummary")),
        }

    def fetch_news(self, ticker: str) -> pd.DataFrame:
        """Yahoo's latest news for ``ticker`` in the ``write_texts`` format; no news is an empty frame.

        ``text`` is the title followed by the summary; ``session_date`` is the session whose information
        set the item belongs to (published at or after a close: the next session).
        """
        ticker = normalise_ticker(ticker)
        operation = _Operation(f"{ticker} news", ("/xhr/ncp",))
        items = self._call(operation, ticker, lambda handle: handle.get_news(count=NEWS_COUNT, tab="news"))
        rows = [row for item in items or [] if (row := _news_row(ticker, item)) is not None]
        if not rows:
            return pd.DataFrame(columns=TEXT_COLUMNS)
        frame = pd.DataFrame(rows).drop_duplicates("dedup_key")
        frame["published_at"] = pd.to_datetime(frame["published_at"], utc=True)
        frame["session_date"] = market_calendar.information_sessions(frame["published_at"])
        return frame[TEXT_COLUMNS].reset_index(drop=True)

    def fetch_fundamentals(self, ticker: str) -> pd.DataFrame:
        """Quarterly revenue, operating income, net income and diluted EPS, point in time.

        yfinance gives no filing date, so ``available_at`` is the quarter's end plus
        :data:`FILING_LAG` (45 days) at 21:00 UTC: a conservative filing lag, so nothing is known
        before it could have been published. No figures at all raises ``EmptyProviderResultError``.
        """
        ticker = normalise_ticker(ticker)
        operation = _Operation(f"{ticker} quarterly financials", ("/finance/timeseries/",))
        table = self._call(operation, ticker, lambda handle: handle.get_income_stmt(freq="quarterly"))
        rows = []
        if isinstance(table, pd.DataFrame) and not table.empty:
            for raw_field, field_name in FUNDAMENTAL_FIELDS.items():
                if raw_field not in table.index:
                    continue
                for period, value in table.loc[raw_field].items():
                    if value is None or pd.isna(value):
                        continue
                    period_end = pd.Timestamp(period).date()
                    rows.append(
                        {
                            "ticker": ticker,
                            "field": field_name,
                            "period_end": period_end,
                            "value": float(value),
                            "available_at": filing_available_at(period_end),
                            "source": SOURCE,
                        }
                    )
        if not rows:
            raise EmptyProviderResultError(f"Yahoo Finance returned no quarterly financials for {operation.label}")
        return pd.DataFrame(rows, columns=FUNDAMENTAL_COLUMNS)

    # ---- retries -------------------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...): doubling from ``backoff_s``, capped."""
        return min(self.backoff_s * 2 ** (attempt - 2), MAX_BACKOFF_S)

    def _call(self, operation: _Operation, ticker: str, fetch: Callable[[yf.Ticker], T]) -> T:
        """Run ``fetch`` on a fresh yfinance Ticker with bounded retries (tenacity); raise a classified ProviderError."""

        def say(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            message = failure.failure.message if isinstance(failure, _RetryableFailure) else str(failure)
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            logger.info("%s: %s, retrying in %.2fs (attempt %d of %d)", operation.label, message, wait, state.attempt_number + 1, self.retries)

        retrying = Retrying(
            retry=retry_if_exception_type(_RetryableFailure), stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff_s, min=0, max=MAX_BACKOFF_S),
            sleep=lambda seconds: _sleep(seconds), before_sleep=say,  # _sleep looked up per call: tests replace it
        )
        try:
            return retrying(self._attempt, operation, ticker, fetch)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, _RetryableFailure)
            failure, cause = last.failure, last.__cause__
        if failure.kind == "timeout":
            raise ProviderTimeoutError(
                f"Yahoo Finance did not answer within {self.timeout_s:g}s for {operation.label} "
                f"(gave up after {self.retries} attempts)"
            ) from cause
        raise ProviderError(
            f"Yahoo Finance request failed for {operation.label}: {failure.message} (gave up after {self.retries} attempts)"
        ) from cause

    def _attempt(self, operation: _Operation, ticker: str, fetch: Callable[[yf.Ticker], T]) -> T:
        """One attempt: its result, a typed error that is final, or :class:`_RetryableFailure`."""
        self._exchanges.clear()
        _instrument(self._session, self.timeout_s, self._exchanges)
        _forget_cached_responses()
        cause: BaseException | None
        try:
            with _yfinance_raises():
                # A fresh Ticker per attempt: yfinance caches info, news and history per object,
                # and marks info as fetched before fetching it.
                result = fetch(yf.Ticker(ticker, session=self._session))
        except AdvisorError:
            raise
        except Exception as exc:
            failure, cause = _classify(exc, list(self._exchanges), operation), exc
        else:
            late = _failed_answer(list(self._exchanges), operation)
            if late is None:
                return result
            failure, cause = late, None
        if failure.kind == "unknown":
            raise YahooUnknownSymbolError(
                ticker, f"Yahoo Finance does not know this symbol ({failure.message} for {operation.label})"
            ) from cause
        if failure.kind == "empty":
            raise EmptyProviderResultError(f"Yahoo Finance returned no data for {operation.label}") from cause
        if not failure.retryable:
            raise ProviderError(f"Yahoo Finance request failed for {operation.label}: {failure.message}") from cause
        raise _RetryableFailure(failure) from cause


# --------------------------------------------------------------------------------------------------
# Shaping and validating what yfinance returns
# --------------------------------------------------------------------------------------------------


def normalise_ticker(ticker: str) -> str:
    """Upper-case, stripped, and plausible as a Yahoo symbol (the store keeps at most 16 characters)."""
    value = str(ticker).strip().upper()
    if not _TICKER_PATTERN.match(value):
        raise InputValidationError(f"'{ticker}' is not a ticker symbol (letters, digits, '.', '-'; at most 16)", field="ticker")
    return value


def filing_available_at(period_end: date) -> datetime:
    """When a quarter's figures count as known: period end + 45 days, 21:00 UTC (after the NY close)."""
    day = period_end + FILING_LAG
    return datetime(day.year, day.month, day.day, FILING_HOUR_UTC, tzinfo=UTC)


def _bars_frame(ticker: str, raw: pd.DataFrame, start: date, end: date, label: str) -> pd.DataFrame:
    """yfinance's history frame -> the importer's bar format, complete sessions only, validated."""
    if raw is None or raw.empty:
        raise EmptyProviderResultError(f"Yahoo Finance returned no daily bars for {label}")
    tz = str(raw.index.tz) if isinstance(raw.index, pd.DatetimeIndex) and raw.index.tz is not None else None
    if tz != EXCHANGE_TZ:
        raise ProviderError(f"{label}: Yahoo Finance quotes {ticker} in time zone {tz}, not {EXCHANGE_TZ} (XNYS only)")
    missing = [c for c in ("Open", "High", "Low", "Close", "Adj Close", "Volume") if c not in raw.columns]
    if missing:
        raise ProviderError(f"{label}: Yahoo Finance's answer lacks the columns {', '.join(missing)}")
    frame = pd.DataFrame(
        {
            "ticker": ticker,
            "date": list(raw.index.date),
            "open": raw["Open"].to_numpy(dtype=float),
            "high": raw["High"].to_numpy(dtype=float),
            "low": raw["Low"].to_numpy(dtype=float),
            "close": raw["Close"].to_numpy(dtype=float),
            "adj_close": raw["Adj Close"].to_numpy(dtype=float),
            "volume": raw["Volume"].to_numpy(dtype=float),
        }
    )
    frame = frame[(frame["date"] >= start) & (frame["date"] <= end)].drop_duplicates("date").reset_index(drop=True)
    sessions = set(market_calendar.sessions_between(start, end))
    off_calendar = [d for d in frame["date"] if d not in sessions]
    if off_calendar:
        raise ProviderError(
            f"Yahoo Finance returned a bar for {ticker} on {off_calendar[0]}, which is not an XNYS trading session ({label})"
        )
    if frame.empty:
        raise EmptyProviderResultError(f"Yahoo Finance returned no daily bars for {label}")
    frame["available_at"] = market_calendar.closes_for_sessions(frame["date"])
    frame = frame[frame["available_at"] <= pd.Timestamp(market_calendar.utcnow())].reset_index(drop=True)
    if frame.empty:
        raise EmptyProviderResultError(f"Yahoo Finance returned no complete session for {label} (today's is still open)")
    _validate_bars(ticker, frame, label)
    frame["volume"] = frame["volume"].astype(np.int64)
    return frame[BAR_COLUMNS]


def _validate_bars(ticker: str, frame: pd.DataFrame, label: str) -> None:
    """Refuse rows the store would reject or that cannot be prices; name the first bad date."""
    prices = frame[["open", "high", "low", "close", "adj_close"]]
    checks = [
        (prices.isna().any(axis=1), "a price is missing (NaN)"),
        ((prices <= 0).any(axis=1), "a price is zero or negative"),
        (frame["high"] < frame["low"], "high is below low"),
        (frame["volume"].isna() | (frame["volume"] < 0), "volume is missing or negative"),
    ]
    bad = np.zeros(len(frame), dtype=bool)
    for mask, _ in checks:
        bad |= mask.to_numpy()
    if not bad.any():
        return
    first = int(np.argmax(bad))
    reasons = [reason for mask, reason in checks if bool(mask.iloc[first])]
    row = frame.iloc[first]
    values = ", ".join(f"{c}={row[c]:g}" for c in ("open", "high", "low", "close", "adj_close", "volume"))
    more = f"; {int(bad.sum())} invalid bars in all" if bad.sum() > 1 else ""
    raise ProviderError(
        f"Yahoo Finance returned an invalid bar for {ticker} on {row['date']}: {'; '.join(reasons)} ({values}){more} ({label})"
    )


def _news_row(ticker: str, item: Any) -> dict[str, Any] | None:
    """One news item in the text-item format, from yfinance's current shape ({id, content}) or the old flat one."""
    if not isinstance(item, dict):
        return None
    content: dict[str, Any] = item["content"] if isinstance(item.get("content"), dict) else item
    uid = item.get("id") or content.get("id") or item.get("uuid")
    title = _text_or_none(content.get("title"))
    published = content.get("pubDate") or content.get("displayTime") or item.get("providerPublishTime")
    if not uid or not title or not published:
        return None
    published_at = _utc_timestamp(published)
    if published_at is None:
        return None
    summary = _text_or_none(content.get("summary")) or _text_or_none(content.get("description"))
    url = (
        (content.get("canonicalUrl") or {}).get("url")
        or (content.get("clickThroughUrl") or {}).get("url")
        or item.get("link")
    )
    provider = content.get("provider")
    author = (provider or {}).get("displayName") if isinstance(provider, dict) else item.get("publisher")
    uid = str(uid)
    key_part = uid if len(uid) <= 76 else hashlib.sha1(uid.encode()).hexdigest()
    return {
        "ticker": ticker,
        "source": NEWS_SOURCE,
        "external_id": uid[:64],
        "dedup_key": f"yfn:{key_part}",
        "published_at": published_at,
        "title": title,
        "text": f"{title}\n{summary}" if summary and summary != title else title,
        "url": url,
        "author": _text_or_none(author, 100),
        "author_followers": None,
        "repost_count": None,
    }


def _utc_timestamp(value: Any) -> pd.Timestamp | None:
    """An ISO string ("2024-03-05T21:30:00Z") or epoch seconds, as a UTC timestamp; None if unreadable."""
    try:
        if isinstance(value, (int, float)):
            return pd.Timestamp(int(value), unit="s", tz="UTC")
        stamp = pd.Timestamp(str(value))
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _text_or_none(value: Any, limit: int | None = None) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    return text[:limit] if limit else text


