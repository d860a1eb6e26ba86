"""Market data from Yahoo Finance (through yfinance), fetched incrementally and written point in time.

What :class:`YahooProvider` adds on top of yfinance, and why:

* **Errors instead of silence.** yfinance logs most failures and hands back an empty DataFrame (offline,
  ``download()`` prints "Failed download" and returns nothing). The provider runs yfinance with
  ``config.debug.hide_exceptions = False`` and classifies what went wrong: an unknown symbol (Yahoo
  answers 404 with a chart error) raises :class:`YahooUnknownSymbolError`, an empty answer raises
  :class:`~advisor.errors.EmptyProviderResultError`, timeouts raise
  :class:`~advisor.errors.ProviderTimeoutError`; every message names the ticker and the dates.
* **A bound on every request.** yfinance hard-codes some timeouts (10 s for the time-zone lookup,
  30 s for cookie, crumb, consent, quote and news requests), and one call chains several of them, so a
  host that accepts connections but never answers stalled one call for 130 s. The provider wraps the
  HTTP session so that *every* request it sends uses at most ``timeout_s``.
* **Bounded retries.** Timeouts, connection errors and HTTP 429/5xx are retried with exponential
  backoff (``backoff_s``, doubling, capped at :data:`MAX_BACKOFF_S`); ``retries`` is the number of
  attempts in all (the setting ``yfinance_retries``). Anything else fails at once. yfinance keeps past
  responses in an in-process cache, failed ones included, so each attempt clears that cache first;
  otherwise a retry would only replay the failure.
* **Only complete, valid sessions.** Bars are daily, unadjusted OHLC plus Yahoo's adjusted close
  (``auto_adjust=False``). A bar is known from its session's close (``available_at``, exchange
  calendar); today's bar is dropped until the session has closed. Bars with missing or non-positive
  prices, high below low, or a date that is not an XNYS session raise a :class:`ProviderError` that
  names the ticker and the date.
* **Point-in-time fundamentals.** Quarterly figures carry no filing date in yfinance, so they become
  known :data:`FILING_LAG` after the quarter's end, at 21:00 UTC (after the New York close): a
  conservative lag that keeps a backtest from seeing results before they were published.

:func:`sync_tickers` is what ``advisor data sync`` runs: for every ticker it fetches only what is
missing (from the day after the last stored bar), fetches *all* tickers before writing anything, and
then writes companies, bars, news and fundamentals in one transaction with the importer's writers.
A price failure on any ticker aborts the whole sync, names that ticker and writes nothing. News,
financials and company profiles are extras: when they fail, the prices are still written and the
failure is reported in ``summary.notes`` (and a missing profile falls back to the ticker as name).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import requests
import yfinance as yf
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from tqdm.auto import tqdm
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from advisor import market_calendar
from advisor.data.importer import ImportSummary, write_bars, write_companies, write_texts
from advisor.errors import (
    AdvisorError,
    EmptyProviderResultError,
    InputValidationError,
    ProviderError,
    ProviderTimeoutError,
    UnknownTickerError,
)
from db.engine import session_scope
from db.models import Company, DailyBar, Fundamental
from db.types import utcnow

logger = logging.getLogger(__name__)

SOURCE = "yfinance"
NEWS_SOURCE = "yfinance-news"
EXCHANGE_TZ = "America/New_York"
MAX_BACKOFF_S = 30.0
NEWS_COUNT = 20
FILING_LAG = timedelta(days=45)
FILING_HOUR_UTC = 21
#: yfinance's quarterly income-statement rows we keep, and the field names they get in the store.
FUNDAMENTAL_FIELDS = {
    "TotalRevenue": "total_revenue",
    "OperatingIncome": "operating_income",
    "NetIncome": "net_income",
    "DilutedEPS": "diluted_eps",
}
BAR_COLUMNS = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume", "available_at"]
TEXT_COLUMNS = [
    "ticker", "source", "external_id", "dedup_key", "published_at", "session_date", "title", "text", "url",
    "author", "author_followers", "repost_count",
]
FUNDAMENTAL_COLUMNS = ["ticker", "field", "period_end", "value", "available_at", "source"]
_TICKER_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-^=]{0,15}$")
_BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)

T = TypeVar("T")

# yfinance's switches are process-wide; this lock keeps concurrent providers from flipping them mid-call.
_YFINANCE_LOCK = threading.RLock()
# Indirection so tests can observe the backoff without waiting for it.
_sleep = time.sleep


class YahooUnknownSymbolError(UnknownTickerError, EmptyProviderResultError):
    """Yahoo does not know the symbol: both an unknown ticker and a provider error, so either catch works."""


# --------------------------------------------------------------------------------------------------
# HTTP plumbing: bounded timeouts and a record of what each attempt saw
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exchange:
    """One HTTP request as the session saw it: the status, or the exception instead of an answer."""

    url: str
    status: int | None
    error: BaseException | None


@dataclass(frozen=True)
class _Operation:
    """A provider call: how to describe it in messages, and which URL paths are its own requests."""

    label: str
    paths: tuple[str, ...]
    not_found_is_unknown_symbol: bool = False


@dataclass(frozen=True)
class _Failure:
    kind: str  # timeout | transient | unknown | empty | fatal
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "transient")


class _RetryableFailure(Exception):
    """A timeout or transient failure of one attempt: tenacity retries on it."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _default_session() -> Any:
    """The session yfinance itself prefers: curl_cffi impersonating Chrome, or requests with a browser UA."""
    try:
        from curl_cffi import requests as curl_requests
    except ImportError:
        session = requests.Session()
        session.headers["User-Agent"] = _BROWSER_USER_AGENT
        return session
    return curl_requests.Session(impersonate="chrome")


def _bounded_timeout(requested: Any, limit: float) -> Any:
    """The smaller of what yfinance asked for and our limit; never unbounded."""
    if requested is None:
        return limit
    if isinstance(requested, tuple):
        return tuple(limit if part is None else min(float(part), limit) for part in requested)
    return min(float(requested), limit)


def _instrument(session: Any, timeout_s: float, log: list[_Exchange]) -> None:
    """Route every request of ``session`` through a wrapper that bounds its timeout and logs its outcome.

    Both requests and curl_cffi implement ``get``/``post`` as ``self.request(...)``, so an instance
    attribute catches every call yfinance makes, including those with hard-coded timeouts.
    """
    original = getattr(session, "_advisor_unwrapped_request", None) or session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = _bounded_timeout(kwargs.get("timeout"), timeout_s)
        try:
            response = original(method, url, *args, **kwargs)
        except BaseException as exc:
            log.append(_Exchange(str(url), None, exc))
            raise
        log.append(_Exchange(str(url), response.status_code, None))
        return response

    session._advisor_unwrapped_request = original
    session.request = request


def _forget_cached_responses() -> None:
    """Clear yfinance's in-process response cache (``YfData.cache_get`` is an lru_cache).

    yfinance serves past-dated chart, time-zone and financials requests from that cache, error
    responses included; without clearing it a retry would replay the failure it is retrying.
    """
    YfData.cache_get.cache_clear()


@contextmanager
def _yfinance_raises() -> Iterator[None]:
    """Make yfinance raise instead of logging and returning empty frames; we retry, not yfinance."""
    with _YFINANCE_LOCK:
        hide, retries = yf.config.debug.hide_exceptions, yf.config.network.retries
        yf.config.debug.hide_exceptions = False
        yf.config.network.retries = 0
        try:
            yield
        finally:
            yf.config.debug.hide_exceptions = hide
            yf.config.network.retries = retries


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _is_timeout(exc: BaseException) -> bool:
    # curl_cffi has its own exception classes (named like the requests ones), so names are compared too.
    return isinstance(exc, (TimeoutError, requests.exceptions.Timeout)) or bool(
        _class_names(exc) & {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError"}
    )


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (ConnectionError, requests.exceptions.ConnectionError)) or bool(
        _class_names(exc) & {"ConnectionError", "ChunkedEncodingError", "RemoteDisconnected", "ProtocolError"}
    )


def _own_exchanges(log: Sequence[_Exchange], operation: _Operation) -> list[_Exchange]:
    return [e for e in log if any(path in e.url for path in operation.paths)]


def _failed_answer(log: Sequence[_Exchange], operation: _Operation) -> _Failure | None:
    """A failure yfinance turned into an ordinary result (it reads a news request answered 500 as "no news")."""
    own = _own_exchanges(log, operation)
    if own and own[-1].status is not None and own[-1].status >= 400:
        return _classify(None, own[-1:], operation)
    return None


def _classify(exc: BaseException | None, log: Sequence[_Exchange], operation: _Operation) -> _Failure:
    """Decide from the HTTP exchanges of this attempt (first) and the exception (second) what failed."""
    own = _own_exchanges(log, operation)
    for exchange in reversed(own):
        if exchange.error is not None and _is_timeout(exchange.error):
            return _Failure("timeout", f"no answer within the timeout ({type(exchange.error).__name__})")
        if exchange.error is not None and _is_connection_error(exchange.error):
            return _Failure("transient", f"connection failed ({exchange.error})")
        if exchange.status is not None and (exchange.status == 429 or exchange.status >= 500):
            return _Failure("transient", f"HTTP {exchange.status}")
    if operation.not_found_is_unknown_symbol and any(e.status == 404 for e in own):
        return _Failure("unknown", "HTTP 404")
    if exc is None:
        statuses = [e.status for e in own if e.status is not None and e.status >= 400]
        return _Failure("fatal", f"HTTP {statuses[-1]}" if statuses else "unexpected answer")
    if isinstance(exc, YFRateLimitError):
        return _Failure("transient", "HTTP 429 (rate limited)")
    if _is_timeout(exc):
        return _Failure("timeout", f"no answer within the timeout ({type(exc).__name__})")
    if _is_connection_error(exc):
        return _Failure("transient", f"connection failed ({exc})")
    if isinstance(exc, YFPricesMissingError) or "Empty fundamentals" in str(exc):
        return _Failure("empty", str(exc))
    if isinstance(exc, ValueError):  # json.JSONDecodeError and requests' variant derive from ValueError
        return _Failure("fatal", f"malformed answer ({type(exc).__name__}: {exc})")
    return _Failure("fatal", f"{type(exc).__name__}: {exc}")


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
