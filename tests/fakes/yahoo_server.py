"""A fake Yahoo Finance on 127.0.0.1 that answers what yfinance 1.7 asks, in Yahoo's JSON shapes.

Endpoints (the host each lives on in real life; the fake serves them all on one port and learns the
original host from the ``X-Yahoo-Host`` header that :class:`FakeYahooSession` adds):

* cookie:  ``GET fc.yahoo.com/`` -> 404 with an ``A3`` cookie (what Yahoo really answers)
* crumb:   ``GET query1|query2.finance.yahoo.com/v1/test/getcrumb`` -> a text crumb
* consent: ``GET guce.yahoo.com/consent`` -> a page without a consent form (yfinance's fallback
  cookie strategy, used after any 4xx/5xx, then gives up and returns to the basic strategy)
* chart:   ``GET /v8/finance/chart/{symbol}`` with ``period1/period2`` (history) or ``range`` (the
  time-zone lookup): ``chart.result[0]`` with ``meta``, ``timestamp`` (session opens, UTC seconds),
  ``indicators.quote[0]`` and ``indicators.adjclose[0]``; unknown symbols get 404 and
  ``chart.error``
* profile: ``GET /v10/finance/quoteSummary/{symbol}`` and ``GET /v7/finance/quote?symbols=``
* financials: ``GET /ws/fundamentals-timeseries/v1/finance/timeseries/{symbol}?type=quarterlyX,...``
* news:    ``POST finance.yahoo.com/xhr/ncp?queryRef=latestNews`` -> ``data.tickerStream.stream``

Prices are a deterministic function of ticker and date, so overlapping requests agree. Faults are
injected per endpoint and ticker (see :meth:`FakeYahoo.add_fault`); every request is recorded.
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests

from advisor import market_calendar

NEW_YORK = ZoneInfo("America/New_York")
CRUMB = "fakeCrumb.123"
HOST_HEADER = "X-Yahoo-Host"


class NetworkLeakError(RuntimeError):
    """A test tried to reach a host other than the fake Yahoo server."""


@dataclass
class RecordedRequest:
    method: str
    host: str
    path: str
    query: dict[str, str]
    endpoint: str
    ticker: str | None
    body: bytes = b""

    @property
    def is_history(self) -> bool:
        """A chart request for a date range (``Ticker.history``), not yfinance's time-zone lookup."""
        return self.endpoint == "chart" and "period1" in self.query

    @property
    def period_start(self) -> date:
        """The first date asked for (period1 is midnight New York time of that date)."""
        return datetime.fromtimestamp(int(self.query["period1"]), tz=NEW_YORK).date()

    @property
    def period_end(self) -> date:
        """The day after the last date asked for (period2 is exclusive)."""
        return datetime.fromtimestamp(int(self.query["period2"]), tz=NEW_YORK).date()


@dataclass
class Fault:
    """What to do instead of (or before) a normal answer.

    kind: ``status`` (answer ``status`` with Yahoo's error body), ``delay`` (wait ``delay_s``, then
    answer normally), ``empty`` (a chart result without rows), ``malformed`` (broken JSON),
    ``bad_bar`` (the bar on ``day`` has high below low). ``times``: how many requests it affects
    (None: all). ``history_only``: for the chart endpoint, leave the time-zone lookup alone.
    """

    kind: str
    times: int | None = None
    status: int = 500
    delay_s: float = 0.0
    day: date | None = None
    history_only: bool = True
    used: int = 0


@dataclass
class NewsItem:
    uuid: str
    title: str
    summary: str
    published: datetime
    publisher: str = "Fake Wire"
    ad: bool = False


@dataclass
class FakeYahoo:
    """The fake's data, faults and request log; :meth:`start` serves it on a free port."""

    now: datetime | None = None
    unknown: set[str] = field(default_factory=set)
    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    news: dict[str, list[NewsItem]] = field(default_factory=dict)
    financials: dict[str, dict[str, dict[date, float]]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    faults: dict[tuple[str, str], list[Fault]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeYahoo:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases handlers that are sleeping in a delay fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeYahoo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    def session(self) -> FakeYahooSession:
        """A requests session that reaches Yahoo hosts through this fake and nothing else."""
        return FakeYahooSession(self)

    # ---- configuration ----------------------------------------------------------------------

    def add_fault(self, endpoint: str, ticker: str, kind: str, **options: Any) -> Fault:
        fault = Fault(kind, **options)
        self.faults.setdefault((endpoint, ticker.upper()), []).append(fault)
        return fault

    # ---- queries for tests -----------------------------------------------------------------

    def requests_for(self, endpoint: str, ticker: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint and (ticker is None or r.ticker == ticker)]

    def history_requests(self, ticker: str) -> list[RecordedRequest]:
        return [r for r in self.requests_for("chart", ticker) if r.is_history]

    # ---- internals used by the handler ---------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, endpoint: str, ticker: str | None, *, history: bool) -> Fault | None:
        if ticker is None:
            return None
        with self._lock:
            for fault in self.faults.get((endpoint, ticker), []):
                if endpoint == "chart" and fault.history_only and not history:
                    continue
                if fault.times is None or fault.used < fault.times:
                    fault.used += 1
                    return fault
        return None

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)


class FakeYahooSession(requests.Session):
    """Sends ``https://*.yahoo.com/...`` to the fake (original host in a header); refuses anything else."""

    def __init__(self, fake: FakeYahoo) -> None:
        super().__init__()
        self.fake = fake
        self.trust_env = False  # no proxies or netrc from the environment

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        target = url.decode() if isinstance(url, bytes) else str(url)
        parts = urlsplit(target)
        host = (parts.hostname or "").lower()
        if not (host == "yahoo.com" or host.endswith(".yahoo.com")):
            self.fake.blocked.append(target)
            raise NetworkLeakError(f"refusing to contact {target}: tests may only reach the fake Yahoo server")
        local = urlunsplit(("http", f"127.0.0.1:{self.fake.port}", parts.path or "/", parts.query, ""))
        headers = dict(kwargs.pop("headers", None) or {})
        headers[HOST_HEADER] = host
        return super().request(method, local, *args, headers=headers, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        netloc = urlsplit(request.url or "").netloc
        if netloc != f"127.0.0.1:{self.fake.port}":
            self.fake.blocked.append(str(request.url))
            raise NetworkLeakError(f"refusing to send a request to {request.url}")
        return super().send(request, **kwargs)


# --------------------------------------------------------------------------------------------------
# Deterministic data
# --------------------------------------------------------------------------------------------------


def bar_for(ticker: str, day: date) -> dict[str, float]:
    """OHLC, adjusted close and volume for one ticker and day; the same every time it is asked."""
    seed = zlib.crc32(ticker.encode()) % 997
    k = day.toordinal()
    close = 40.0 + seed / 20.0 + 6.0 * math.sin(k / 9.0 + seed) + (k % 5) * 0.25
    open_ = close * (1.0 + 0.01 * math.cos(k * 1.3 + seed))
    high = max(open_, close) * 1.012
    low = min(open_, close) * 0.988
    return {
        "open": round(open_, 4),
        "high": round(high, 4),
        "low": round(low, 4),
        "close": round(close, 4),
        "adjclose": round(close * 0.97, 4),
        "volume": float(1_000_000 + (k * 7919 + seed) % 500_000),
    }


def default_company(ticker: str) -> dict[str, Any]:
    return {
        "longName": f"{ticker} Holdings Inc.",
        "shortName": f"{ticker} Holdings",
        "sector": "Technology",
        "industry": "Software",
        "longBusinessSummary": f"{ticker} Holdings makes software for testing market-data pipelines.",
    }


def default_financials(ticker: str) -> dict[str, dict[date, float]]:
    seed = zlib.crc32(ticker.encode()) % 97
    quarters = [date(2023, 6, 30), date(2023, 9, 30), date(2023, 12, 31), date(2024, 3, 31)]
    return {
        "TotalRevenue": {q: 1.0e9 + seed * 1e6 + i * 5e7 for i, q in enumerate(quarters)},
        "OperatingIncome": {q: 2.0e8 + i * 1e7 for i, q in enumerate(quarters)},
        "NetIncome": {q: 1.5e8 + i * 1e7 for i, q in enumerate(quarters)},
        "DilutedEPS": {q: 1.1 + i * 0.05 for i, q in enumerate(quarters)},
    }


# --------------------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------------------


def _endpoint(host: str, path: str) -> tuple[str, str | None]:
    parts = [p for p in path.split("/") if p]
    if host == "fc.yahoo.com":
        return "cookie", None
    if host in ("guce.yahoo.com", "consent.yahoo.com"):
        return "consent", None
    if path.startswith("/v1/test/getcrumb"):
        return "crumb", None
    if path.startswith("/v8/finance/chart/") and len(parts) >= 4:
        return "chart", parts[3].upper()
    if path.startswith("/v10/finance/quoteSummary/") and len(parts) >= 4:
        return "quoteSummary", parts[3].upper()
    if path.startswith("/v7/finance/quote"):
        return "quote", None
    if path.startswith("/ws/fundamentals-timeseries/v1/finance/timeseries/") and len(parts) >= 6:
        return "timeseries", parts[5].upper()
    if path.startswith("/xhr/ncp"):
        return "news", None
    return "unexpected", None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeYahoo
    server_version = "FakeYahoo/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET", b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._handle("POST", self.rfile.read(length) if length else b"")

    # ---- dispatch ---------------------------------------------------------------------------

    def _handle(self, method: str, body: bytes) -> None:
        parts = urlsplit(self.path)
        host = (self.headers.get(HOST_HEADER) or "").lower()
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        endpoint, ticker = _endpoint(host, parts.path)
        if endpoint == "quote":
            ticker = (query.get("symbols") or "").split(",")[0].upper() or None
        if endpoint == "news":
            try:
                ticker = json.loads(body or b"{}")["serviceConfig"]["s"][0].upper()
            except (ValueError, KeyError, IndexError, TypeError):
                ticker = None
        record = RecordedRequest(method, host, parts.path, query, endpoint, ticker, body)
        self.fake._record(record)

        fault = self.fake._take_fault(endpoint, ticker, history=record.is_history)
        if fault is not None and fault.kind == "delay":
            if self.fake._stop.wait(fault.delay_s):
                return
            fault = None
        if fault is not None and fault.kind == "status":
            self._error_status(endpoint, ticker, fault.status)
            return
        if fault is not None and fault.kind == "malformed":
            self._send(200, b'{"chart": {"result": [{"meta": {"currency": "USD", "symbol"', "application/json")
            return
        try:
            self._answer(endpoint, ticker, record, fault)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _answer(self, endpoint: str, ticker: str | None, record: RecordedRequest, fault: Fault | None) -> None:
        if endpoint == "cookie":
            expires = (datetime.now(UTC) + timedelta(days=365)).strftime("%a, %d %b %Y %H:%M:%S GMT")
            self._send(404, b"<html>Not Found</html>", "text/html", {"Set-Cookie": f"A3=d=fake&S=fake; Expires={expires}; Path=/"})
        elif endpoint == "crumb":
            self._send(200, CRUMB.encode(), "text/plain")
        elif endpoint == "consent":
            self._send(200, b"<html><body>No consent needed</body></html>", "text/html")
        elif endpoint == "chart":
            self._chart(ticker or "", record, fault)
        elif endpoint == "quoteSummary":
            self._quote_summary(ticker or "")
        elif endpoint == "quote":
            self._quote(ticker or "")
        elif endpoint == "timeseries":
            self._timeseries(ticker or "", record.query)
        elif endpoint == "news":
            self._news(ticker or "")
        else:
            self._json(404, {"finance": {"result": None, "error": {"code": "Not Found", "description": "HTTP 404 Not Found"}}})

    def _error_status(self, endpoint: str, ticker: str | None, status: int) -> None:
        if status == 429:
            self._send(429, b"Edge: Too Many Requests", "text/plain")
            return
        root = {"chart": "chart", "quoteSummary": "quoteSummary", "quote": "quoteResponse", "timeseries": "timeseries"}.get(endpoint, "finance")
        description = f"simulated HTTP {status} for {ticker}"
        self._json(status, {root: {"result": None, "error": {"code": "Internal Server Error", "description": description}}})

    # ---- endpoints --------------------------------------------------------------------------

    def _chart(self, ticker: str, record: RecordedRequest, fault: Fault | None) -> None:
        if ticker in self.fake.unknown:
            self._json(404, {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}})
            return
        now = self.fake._now()
        if record.is_history:
            first = int(record.query["period1"])
            last = int(record.query["period2"])
            days = market_calendar.sessions_between(
                datetime.fromtimestamp(first, tz=NEW_YORK).date(), datetime.fromtimestamp(last, tz=NEW_YORK).date()
            )
            days = [d for d in days if first <= market_calendar.session_open(d).timestamp() < last]
        else:  # range=1d: the time-zone lookup
            days = [market_calendar.session_on_or_before(now.astimezone(NEW_YORK).date())]
        days = [d for d in days if market_calendar.session_open(d) <= now]
        meta = self._meta(ticker, days, now, record.query.get("range", ""))
        if (fault is not None and fault.kind == "empty") or not days:
            result = {"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}
            self._json(200, {"chart": {"result": [result], "error": None}})
            return
        timestamps, quote, adjclose = [], {"open": [], "high": [], "low": [], "close": [], "volume": []}, []
        for day in days:
            bar = bar_for(ticker, day)
            if fault is not None and fault.kind == "bad_bar" and fault.day == day:
                bar["high"] = round(bar["low"] * 0.9, 4)
            opened = market_calendar.session_open(day)
            # Yahoo stamps daily bars with the session open; today's bar, while open, with the last trade.
            stamp = min(now, market_calendar.session_close(day)) if market_calendar.session_close(day) > now else opened
            timestamps.append(int(stamp.timestamp()))
            for column in quote:
                quote[column].append(int(bar[column]) if column == "volume" else bar[column])
            adjclose.append(bar["adjclose"])
        result = {
            "meta": meta,
            "timestamp": timestamps,
            "indicators": {"quote": [quote], "adjclose": [{"adjclose": adjclose}]},
        }
        self._json(200, {"chart": {"result": [result], "error": None}})

    def _meta(self, ticker: str, days: list[date], now: datetime, range_: str) -> dict[str, Any]:
        ref = days[-1] if days else market_calendar.session_on_or_before(now.astimezone(NEW_YORK).date())
        opened, closed = market_calendar.session_open(ref), market_calendar.session_close(ref)
        offset = int(NEW_YORK.utcoffset(datetime(ref.year, ref.month, ref.day, 12)).total_seconds())
        tzname = "EDT" if offset == -14400 else "EST"
        bar = bar_for(ticker, ref)

        def period(start: datetime, end: datetime) -> dict[str, Any]:
            return {"timezone": tzname, "start": int(start.timestamp()), "end": int(end.timestamp()), "gmtoffset": offset}

        return {
            "currency": "USD",
            "symbol": ticker,
            "exchangeName": "NYQ",
            "fullExchangeName": "NYSE",
            "instrumentType": "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": int(min(now, closed).timestamp()),
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": tzname,
            "exchangeTimezoneName": "America/New_York",
            "regularMarketPrice": bar["close"],
            "fiftyTwoWeekHigh": bar["high"],
            "fiftyTwoWeekLow": bar["low"],
            "regularMarketDayHigh": bar["high"],
            "regularMarketDayLow": bar["low"],
            "regularMarketVolume": int(bar["volume"]),
            "longName": f"{ticker} Holdings Inc.",
            "shortName": f"{ticker} Holdings",
            "chartPreviousClose": bar["open"],
            "priceHint": 2,
            "currentTradingPeriod": {
                "pre": period(opened - timedelta(hours=5, minutes=30), opened),
                "regular": period(opened, closed),
                "post": period(closed, closed + timedelta(hours=4)),
            },
            "dataGranularity": "1d",
            "range": range_,
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }

    def _quote_summary(self, ticker: str) -> None:
        if ticker in self.fake.unknown:
            error = {"code": "Not Found", "description": f"Quote not found for symbol: {ticker}"}
            self._json(404, {"quoteSummary": {"result": None, "error": error}})
            return
        company = self.fake.companies.get(ticker, default_company(ticker))
        result = {
            "assetProfile": {
                "sector": company.get("sector"),
                "industry": company.get("industry"),
                "longBusinessSummary": company.get("longBusinessSummary"),
                "maxAge": 86400,
            },
            "quoteType": {
                "exchange": "NYQ",
                "quoteType": "EQUITY",
                "symbol": ticker,
                "shortName": company.get("shortName"),
                "longName": company.get("longName"),
                "timeZoneFullName": "America/New_York",
                "timeZoneShortName": "EST",
                "maxAge": 1,
            },
            "financialData": {"currentPrice": {"raw": 100.0, "fmt": "100.00"}, "financialCurrency": "USD", "maxAge": 86400},
            "defaultKeyStatistics": {"maxAge": 1},
            "summaryDetail": {"currency": "USD", "maxAge": 1},
        }
        self._json(200, {"quoteSummary": {"result": [result], "error": None}})

    def _quote(self, ticker: str) -> None:
        if ticker in self.fake.unknown:
            self._json(200, {"quoteResponse": {"result": [], "error": None}})
            return
        company = self.fake.companies.get(ticker, default_company(ticker))
        result = {
            "symbol": ticker,
            "language": "en-US",
            "quoteType": "EQUITY",
            "currency": "USD",
            "exchange": "NYQ",
            "longName": company.get("longName"),
            "shortName": company.get("shortName"),
            "exchangeTimezoneName": "America/New_York",
            "exchangeTimezoneShortName": "EST",
            "regularMarketPrice": 100.0,
        }
        self._json(200, {"quoteResponse": {"result": [result], "error": None}})

    def _timeseries(self, ticker: str, query: dict[str, str]) -> None:
        figures = self.fake.financials.get(ticker)
        if figures is None and ticker not in self.fake.unknown:
            figures = default_financials(ticker)
        result = []
        for kind in [t for t in (query.get("type") or "").split(",") if t]:
            entry: dict[str, Any] = {"meta": {"symbol": [ticker], "type": [kind]}}
            if kind.startswith("quarterly") and figures and kind[len("quarterly"):] in figures:
                values = figures[kind[len("quarterly"):]]
                ends = sorted(values)
                entry["timestamp"] = [int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in ends]
                entry[kind] = [
                    {
                        "dataId": 20100,
                        "asOfDate": d.isoformat(),
                        "periodType": "3M",
                        "currencyCode": "USD",
                        "reportedValue": {"raw": values[d], "fmt": f"{values[d]:.2f}"},
                    }
                    for d in ends
                ]
            result.append(entry)
        if not any(len(e) > 1 for e in result):
            result = []
        self._json(200, {"timeseries": {"result": result, "error": None}})

    def _news(self, ticker: str) -> None:
        stream = []
        for item in self.fake.news.get(ticker, []):
            content = {
                "id": item.uuid,
                "contentType": "STORY",
                "title": item.title,
                "description": "",
                "summary": item.summary,
                "pubDate": item.published.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "displayTime": item.published.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "isHosted": True,
                "provider": {"displayName": item.publisher, "url": "https://www.example.com/"},
                "canonicalUrl": {"url": f"https://finance.yahoo.com/news/{item.uuid}.html", "site": "finance", "region": "US", "lang": "en-US"},
                "clickThroughUrl": {"url": f"https://finance.yahoo.com/news/{item.uuid}.html", "site": "finance", "region": "US", "lang": "en-US"},
                "metadata": {"editorsPick": False},
                "finance": {"stockTickers": [{"symbol": ticker}]},
            }
            entry: dict[str, Any] = {"id": item.uuid, "content": content}
            if item.ad:
                entry["ad"] = [{"adId": "x"}]
            stream.append(entry)
        self._json(200, {"data": {"tickerStream": {"stream": stream, "pagination": {"uuids": ""}}}, "status": "OK"})

    # ---- output -----------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json;charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            return
