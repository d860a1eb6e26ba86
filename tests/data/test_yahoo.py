"""The yfinance provider and the incremental sync, through real yfinance code against a local fake Yahoo.

Nothing here reaches the network: :class:`tests.fakes.yahoo_server.FakeYahooSession` sends Yahoo
hosts to the fake on 127.0.0.1 and refuses every other host. yfinance itself is not patched; only
our own module's sleep (to observe the backoff) and default session (for the CLI test) are.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yfinance as yf
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.yahoo import YahooProvider, YahooUnknownSymbolError, sync_tickers
from advisor.data.yahoo import http as yahoo_http
from advisor.data.yahoo import provider as yahoo
from advisor.errors import (
    EmptyProviderResultError,
    ProviderError,
    ProviderTimeoutError,
    UnknownTickerError,
)
from db.models import Company, DailyBar, Fundamental, TextItem
from tests.fakes.yahoo_server import CRUMB, FakeYahoo, NetworkLeakError, NewsItem, bar_for

# yfinance 1.7 calls DataFrame.sort_index(inplace=True), which this pandas deprecates; not our code.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:yfinance.*")

UTC = UTC
NOW = datetime(2024, 4, 2, 12, 0, tzinfo=UTC)  # a Tuesday, 08:00 in New York: 2024-04-01 is the last closed session
JAN_START, JAN_END = date(2024, 1, 2), date(2024, 1, 31)
BACKOFF_S = 0.01


@pytest.fixture(scope="module", autouse=True)
def _yfinance_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """yfinance keeps time-zone and cookie caches on disk (~/.cache/py-yfinance); keep them out of $HOME."""
    yf.set_tz_cache_location(str(tmp_path_factory.mktemp("yfinance-cache")))


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setattr(market_calendar, "utcnow", lambda: NOW)
    return NOW


@pytest.fixture
def fake(frozen_now: datetime) -> Iterator[FakeYahoo]:
    with FakeYahoo(now=frozen_now) as server:
        yield server
    assert server.blocked == [], f"requests tried to leave the fake: {server.blocked}"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The provider's backoff waits, recorded (and still slept)."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(yahoo, "_sleep", sleep)
    return waits


def make_provider(fake: FakeYahoo, *, timeout_s: float = 2.0, retries: int = 3) -> YahooProvider:
    return YahooProvider(timeout_s=timeout_s, retries=retries, backoff_s=BACKOFF_S, session=fake.session())


def count(factory: sessionmaker[Session], model: type, **where: object) -> int:
    with factory() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(session.scalar(query) or 0)


def stored_dates(factory: sessionmaker[Session], ticker: str) -> list[date]:
    with factory() as session:
        return list(session.scalars(select(DailyBar.date).where(DailyBar.ticker == ticker).order_by(DailyBar.date)))


def assert_nothing_written(factory: sessionmaker[Session]) -> None:
    for model in (Company, DailyBar, TextItem, Fundamental):
        assert count(factory, model) == 0, f"{model.__tablename__} has rows"


# --------------------------------------------------------------------------------------------------
# Happy path and incremental sync
# --------------------------------------------------------------------------------------------------


def test_sync_writes_bars_company_news_and_fundamentals(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    fake.news["AAA"] = [NewsItem("11111111-aaaa-4bbb-8ccc-000000000001", "AAA beats estimates", "Revenue up 12%.", datetime(2024, 1, 30, 14, tzinfo=UTC))]
    summary = sync_tickers(sqlite_factory, make_provider(fake), ["aaa"], JAN_START, JAN_END, progress=False)

    sessions = market_calendar.sessions_between(JAN_START, JAN_END)
    assert summary.companies_added == 1 and summary.bars_added == len(sessions) == 21 and summary.texts_added == 1
    assert (summary.first_date, summary.last_date) == (JAN_START, JAN_END)
    with sqlite_factory() as session:
        company = session.get(Company, "AAA")
        assert company is not None
        assert (company.name, company.sector, company.source) == ("AAA Holdings Inc.", "Technology", "yfinance")
        assert "software" in (company.description or "")
        bar = session.get(DailyBar, ("AAA", date(2024, 1, 10)))
    assert bar is not None
    expected = bar_for("AAA", date(2024, 1, 10))
    assert (bar.open, bar.high, bar.low, bar.close, bar.adj_close, bar.volume) == pytest.approx(
        (expected["open"], expected["high"], expected["low"], expected["close"], expected["adjclose"], expected["volume"])
    )
    assert bar.adj_close != bar.close  # unadjusted OHLC plus Yahoo's adjusted close
    assert bar.available_at == datetime(2024, 1, 10, 21, tzinfo=UTC)  # the session close (16:00 New York, EST)
    assert bar.source == "yfinance"
    assert stored_dates(sqlite_factory, "AAA") == sessions

    (request,) = fake.history_requests("AAA")
    assert (request.period_start, request.period_end) == (JAN_START, JAN_END + timedelta(days=1))
    assert request.query["interval"] == "1d" and request.query["crumb"] == CRUMB
    assert count(sqlite_factory, Fundamental, ticker="AAA") == 16


def test_second_sync_adds_nothing_and_a_later_one_only_new_days(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    provider = make_provider(fake)
    first = sync_tickers(sqlite_factory, provider, ["AAA"], JAN_START, JAN_END, include_news=False, progress=False)
    assert first.bars_added == 21

    again = sync_tickers(sqlite_factory, provider, ["AAA"], JAN_START, JAN_END, include_news=False, progress=False)
    assert not again.changed and again.bars_added == 0
    assert len(fake.history_requests("AAA")) == 1, "an up-to-date ticker must not be fetched again"
    assert any("no complete session to fetch" in note for note in again.notes)

    later = sync_tickers(sqlite_factory, provider, ["AAA"], JAN_START, date(2024, 2, 15), include_news=False, progress=False)
    new_sessions = market_calendar.sessions_between(date(2024, 2, 1), date(2024, 2, 15))
    assert later.bars_added == len(new_sessions) == 11 and later.bars_existing == 0 and later.companies_added == 0
    latest = fake.history_requests("AAA")[-1]
    assert latest.period_start == date(2024, 2, 1), "the fetch must start the day after the last stored bar"
    assert stored_dates(sqlite_factory, "AAA") == market_calendar.sessions_between(JAN_START, date(2024, 2, 15))


def test_default_end_is_today_and_an_open_session_is_not_stored(
    fake: FakeYahoo, sqlite_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    during = datetime(2024, 3, 5, 17, 0, tzinfo=UTC)  # Tuesday 12:00 in New York, the session is open
    monkeypatch.setattr(market_calendar, "utcnow", lambda: during)
    fake.now = during
    provider = make_provider(fake)

    bars = provider.fetch_bars("AAA", date(2024, 3, 1), date(2024, 3, 5))  # Yahoo sends a live bar for 03-05
    assert list(bars["date"]) == [date(2024, 3, 1), date(2024, 3, 4)]
    assert (bars["available_at"] <= during).all()

    summary = sync_tickers(sqlite_factory, provider, ["AAA"], date(2024, 2, 26), progress=False, include_news=False)
    assert summary.last_date == date(2024, 3, 4)
    assert fake.history_requests("AAA")[-1].period_end == date(2024, 3, 5), "only complete sessions are asked for"


# --------------------------------------------------------------------------------------------------
# Faults: empty, unknown, timeout, transient HTTP errors, malformed and invalid data
# --------------------------------------------------------------------------------------------------


def test_empty_result_is_an_error_naming_ticker_and_dates(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    fake.add_fault("chart", "EMPT", "empty")
    with pytest.raises(EmptyProviderResultError) as caught:
        sync_tickers(sqlite_factory, make_provider(fake), ["EMPT"], JAN_START, JAN_END, progress=False)
    message = str(caught.value)
    assert "EMPT" in message and "2024-01-02" in message and "2024-01-31" in message
    assert len(fake.history_requests("EMPT")) == 1, "an empty answer is not retried"
    assert_nothing_written(sqlite_factory)


def test_unknown_ticker(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    fake.unknown.add("NOPE")
    with pytest.raises(YahooUnknownSymbolError) as caught:
        sync_tickers(sqlite_factory, make_provider(fake), ["NOPE"], JAN_START, JAN_END, progress=False)
    error = caught.value
    assert isinstance(error, UnknownTickerError) and isinstance(error, ProviderError)
    assert error.ticker == "NOPE" and "2024-01-02..2024-01-31" in str(error)
    assert {r.endpoint for r in fake.requests if r.ticker == "NOPE"} >= {"chart"}
    assert_nothing_written(sqlite_factory)


@pytest.mark.parametrize("tz_lookup_too", [False, True], ids=["history-hangs", "every-chart-request-hangs"])
def test_timeout_after_the_configured_attempts(
    fake: FakeYahoo, sqlite_factory: sessionmaker[Session], sleeps: list[float], tz_lookup_too: bool
) -> None:
    # The time-zone lookup has a hard-coded 10 s timeout in yfinance; the provider must bound it too.
    ticker = "SLWA" if tz_lookup_too else "SLWB"
    fake.add_fault("chart", ticker, "delay", delay_s=5.0, history_only=not tz_lookup_too)
    provider = make_provider(fake, timeout_s=0.3, retries=2)
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as caught:
        sync_tickers(sqlite_factory, provider, [ticker], JAN_START, JAN_END, progress=False)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert ticker in message and "2024-01-02..2024-01-31" in message and "2 attempts" in message
    assert sleeps == [BACKOFF_S]
    assert len(fake.requests_for("chart", ticker)) >= 2
    assert elapsed < 3.0, f"two 0.3 s attempts took {elapsed:.1f} s"
    assert_nothing_written(sqlite_factory)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_http_errors_are_retried_then_succeed(
    fake: FakeYahoo, sqlite_factory: sessionmaker[Session], sleeps: list[float], status: int
) -> None:
    # yfinance re-sends a failed request once itself (after switching cookie strategy), so two errors
    # cost the provider exactly one retry.
    fake.add_fault("chart", "FLAKY", "status", status=status, times=2)
    summary = sync_tickers(sqlite_factory, make_provider(fake), ["FLAKY"], JAN_START, JAN_END, include_news=False, progress=False)
    assert summary.bars_added == 21
    assert sleeps == [BACKOFF_S]
    assert len(fake.history_requests("FLAKY")) == 3


def test_backoff_is_exponential_and_bounded(fake: FakeYahoo, sleeps: list[float]) -> None:
    fake.add_fault("chart", "DOWN", "status", status=500)
    provider = make_provider(fake, retries=4)
    with pytest.raises(ProviderError) as caught:
        provider.fetch_bars("DOWN", JAN_START, JAN_END)
    assert not isinstance(caught.value, ProviderTimeoutError)
    assert "DOWN" in str(caught.value) and "HTTP 500" in str(caught.value) and "4 attempts" in str(caught.value)
    assert sleeps == [BACKOFF_S, 2 * BACKOFF_S, 4 * BACKOFF_S]
    slow = YahooProvider(backoff_s=10.0, session=fake.session())
    assert [slow.backoff(n) for n in (2, 3, 4, 5, 9)] == [10.0, 20.0, yahoo.MAX_BACKOFF_S, yahoo.MAX_BACKOFF_S, yahoo.MAX_BACKOFF_S]


def test_malformed_json_fails_at_once(fake: FakeYahoo, sleeps: list[float]) -> None:
    fake.add_fault("chart", "GARB", "malformed")
    with pytest.raises(ProviderError) as caught:
        make_provider(fake).fetch_bars("GARB", JAN_START, JAN_END)
    assert "GARB" in str(caught.value) and "malformed" in str(caught.value)
    assert sleeps == [] and len(fake.history_requests("GARB")) == 1


def test_invalid_bar_names_ticker_and_date(fake: FakeYahoo) -> None:
    fake.add_fault("chart", "BADB", "bad_bar", day=date(2024, 1, 10))
    with pytest.raises(ProviderError, match=r"BADB on 2024-01-10: high is below low"):
        make_provider(fake).fetch_bars("BADB", JAN_START, JAN_END)


def test_failure_on_the_second_ticker_writes_nothing_for_the_first(
    fake: FakeYahoo, sqlite_factory: sessionmaker[Session]
) -> None:
    fake.add_fault("chart", "BBB", "status", status=500)
    with pytest.raises(ProviderError) as caught:
        sync_tickers(sqlite_factory, make_provider(fake, retries=2), ["AAA", "BBB"], JAN_START, JAN_END, progress=False)
    assert "BBB" in str(caught.value) and "AAA" not in str(caught.value)
    assert len(fake.history_requests("AAA")) == 1, "AAA was fetched first"
    assert_nothing_written(sqlite_factory)


# --------------------------------------------------------------------------------------------------
# News, fundamentals and company profiles
# --------------------------------------------------------------------------------------------------


def test_news_lands_in_text_items_with_the_right_session(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    fake.news["AAA"] = [
        # 15:00 New York (EST): before the close -> that session
        NewsItem("11111111-0000-4000-8000-000000000001", "Before the close", "Shares rise.", datetime(2024, 3, 5, 20, tzinfo=UTC)),
        # 16:30 New York: after the close -> the next session
        NewsItem("11111111-0000-4000-8000-000000000002", "After the close", "Guidance cut.", datetime(2024, 3, 5, 21, 30, tzinfo=UTC)),
        # Friday evening -> Monday
        NewsItem("11111111-0000-4000-8000-000000000003", "Friday evening", "Weekend deal talk.", datetime(2024, 3, 8, 23, tzinfo=UTC)),
        NewsItem("11111111-0000-4000-8000-00000000000a", "Sponsored", "An advert.", datetime(2024, 3, 5, 15, tzinfo=UTC), ad=True),
    ]
    provider = make_provider(fake)
    summary = sync_tickers(sqlite_factory, provider, ["AAA"], date(2024, 3, 1), date(2024, 3, 8), progress=False)
    assert summary.texts_added == 3, "the advert is dropped"
    with sqlite_factory() as session:
        rows = {r.title: r for r in session.scalars(select(TextItem).where(TextItem.ticker == "AAA"))}
    assert rows["Before the close"].session_date == date(2024, 3, 5)
    assert rows["After the close"].session_date == date(2024, 3, 6)
    assert rows["Friday evening"].session_date == date(2024, 3, 11)
    item = rows["After the close"]
    assert item.text == "After the close\nGuidance cut."
    assert item.source == "yfinance-news" and item.dedup_key == "yfn:11111111-0000-4000-8000-000000000002"
    assert item.published_at == datetime(2024, 3, 5, 21, 30, tzinfo=UTC)
    assert item.url == "https://finance.yahoo.com/news/11111111-0000-4000-8000-000000000002.html"
    assert item.author == "Fake Wire"

    again = sync_tickers(sqlite_factory, provider, ["AAA"], date(2024, 3, 1), date(2024, 3, 8), progress=False)
    assert again.texts_added == 0 and again.texts_existing == 3 and not again.changed


def test_fundamentals_become_known_45_days_after_the_quarter(fake: FakeYahoo, sqlite_factory: sessionmaker[Session]) -> None:
    fake.financials["AAA"] = {
        "TotalRevenue": {date(2023, 12, 31): 2.5e9, date(2024, 3, 31): 2.7e9},
        "NetIncome": {date(2024, 3, 31): 3.1e8},
        "DilutedEPS": {date(2024, 3, 31): 1.23},
        "GrossProfit": {date(2024, 3, 31): 9.9e8},  # not one of the fields we keep
    }
    summary = sync_tickers(sqlite_factory, make_provider(fake), ["AAA"], JAN_START, JAN_END, progress=False)
    assert any(note.startswith("quarterly financials: 4 added") for note in summary.notes)
    with sqlite_factory() as session:
        rows = {(r.field, r.period_end): r for r in session.scalars(select(Fundamental).where(Fundamental.ticker == "AAA"))}
    assert set(rows) == {
        ("total_revenue", date(2023, 12, 31)), ("total_revenue", date(2024, 3, 31)),
        ("net_income", date(2024, 3, 31)), ("diluted_eps", date(2024, 3, 31)),
    }
    assert rows[("diluted_eps", date(2024, 3, 31))].value == pytest.approx(1.23)
    for (_, period_end), row in rows.items():
        assert row.available_at == datetime.combine(period_end + timedelta(days=45), datetime.min.time(), UTC) + timedelta(hours=21)
        assert row.source == "yfinance"
    assert rows[("total_revenue", date(2023, 12, 31))].available_at == datetime(2024, 2, 14, 21, tzinfo=UTC)

    fake.financials["AAA"]["TotalRevenue"][date(2024, 3, 31)] = 2.8e9  # a restatement
    again = sync_tickers(sqlite_factory, make_provider(fake), ["AAA"], JAN_START, JAN_END, progress=False)
    assert any("0 added, 3 already stored, 1 differ" in note for note in again.notes)
    with sqlite_factory() as session:
        kept = session.scalar(select(Fundamental.value).where(Fundamental.field == "total_revenue", Fundamental.period_end == date(2024, 3, 31)))
    assert kept == pytest.approx(2.7e9), "the first published value is kept (point in time)"


def test_news_and_profile_failures_keep_the_prices_and_are_noted(
    fake: FakeYahoo, sqlite_factory: sessionmaker[Session]
) -> None:
    fake.add_fault("news", "AAA", "status", status=500)
    fake.add_fault("timeseries", "AAA", "malformed")
    fake.add_fault("quoteSummary", "AAA", "status", status=503)
    summary = sync_tickers(sqlite_factory, make_provider(fake, retries=2), ["AAA"], JAN_START, JAN_END, progress=False)
    assert summary.bars_added == 21 and summary.texts_added == 0
    assert any(note.startswith("AAA: news not fetched") and "HTTP 500" in note for note in summary.notes)
    assert any(note.startswith("AAA: quarterly financials not fetched") and "malformed" in note for note in summary.notes)
    assert any("no company profile" in note for note in summary.notes)
    with sqlite_factory() as session:
        company = session.get(Company, "AAA")
    assert company is not None and company.name == "AAA" and company.sector is None


def test_the_default_session_is_bounded_too(fake: FakeYahoo) -> None:
    """Production uses yfinance's preferred session (curl_cffi when installed); its requests get our bound.

    Talks to the fake directly (127.0.0.1), never to a Yahoo host.
    """
    fake.add_fault("chart", "HANG", "delay", delay_s=5.0, history_only=False)
    session = yahoo_http._default_session()
    log: list = []
    yahoo_http._instrument(session, 0.3, log)
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        session.get(
            url=f"http://127.0.0.1:{fake.port}/v8/finance/chart/HANG",
            params={"range": "1d", "interval": "1d"},
            headers={"X-Yahoo-Host": "query2.finance.yahoo.com"},
            timeout=30,  # what yfinance asks for; the provider's 0.3 s wins
        )
    assert yahoo_http._is_timeout(caught.value), repr(caught.value)
    assert time.monotonic() - started < 2.0
    assert len(log) == 1 and log[0].error is caught.value


def test_the_session_cannot_leave_the_fake(fake: FakeYahoo) -> None:
    session = fake.session()
    with pytest.raises(NetworkLeakError):
        session.get("https://example.com/")
    assert fake.blocked == ["https://example.com/"]
    fake.blocked.clear()  # the fixture asserts no leak attempts otherwise


# --------------------------------------------------------------------------------------------------
# Through the CLI
# --------------------------------------------------------------------------------------------------


def test_cli_sync_through_the_fake(
    fake: FakeYahoo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from advisor.cli.app import main

    # The CLI builds YahooProvider(timeout_s=..., retries=...) without a session; hand it the fake's.
    monkeypatch.setattr(yahoo, "_default_session", fake.session)
    monkeypatch.setenv("ADVISOR_YFINANCE_TIMEOUT_S", "2")
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def cli(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["advisor", "--db-url", db, *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    assert cli("init")[0] == 0
    code, out, _ = cli("data", "sync", "--tickers", "AAA,BBB", "--start", "2024-01-02", "--end", "2024-01-31", "--no-news")
    assert code == 0, out
    assert "daily bars: 42 added" in out and "companies: 2 added" in out
    assert len(fake.history_requests("AAA")) == len(fake.history_requests("BBB")) == 1
    assert fake.requests_for("news") == []

    fake.unknown.add("ZZZZ")
    code, out, err = cli("data", "sync", "--tickers", "ZZZZ", "--start", "2024-01-02", "--end", "2024-01-31")
    assert code == 2 and "unknown ticker 'ZZZZ'" in " ".join(err.split()) and "Traceback" not in err + out
