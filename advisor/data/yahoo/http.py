"""HTTP plumbing for the Yahoo provider: bounded timeouts, a record of what each attempt saw, and the
classification of a failure (unknown symbol, empty, timeout, transient, fatal)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import requests
import yfinance as yf
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from advisor.errors import (
    EmptyProviderResultError,
    UnknownTickerError,
)

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


