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

from advisor.data.yahoo.http import MAX_BACKOFF_S, YahooUnknownSymbolError
from advisor.data.yahoo.provider import YahooProvider, filing_available_at, normalise_ticker
from advisor.data.yahoo.sync import FundamentalsCount, sync_tickers, write_fundamentals

__all__ = [
    "MAX_BACKOFF_S",
    "FundamentalsCount",
    "YahooProvider",
    "YahooUnknownSymbolError",
    "filing_available_at",
    "normalise_ticker",
    "sync_tickers",
    "write_fundamentals",
]
