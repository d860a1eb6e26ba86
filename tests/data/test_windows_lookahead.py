"""Point-in-time correctness: windows never see anything published after their cut-off.

Look-ahead is tested, not assumed: after a window is built, every row after its cut-off is changed
(prices rewritten, bars deleted, texts inserted, even texts mis-filed into the window's weeks) and the
window must come out identical, for both store implementations.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.importer import import_bundle
from advisor.data.store import PreloadedMarketStore, SqlMarketStore
from advisor.data.windows import build_window, weekly_decision_dates, weekly_label
from advisor.errors import DataUnavailableError, FutureDateError, UnknownTickerError
from db.models import DailyBar, TextItem
from tests.helpers import make_bundle

STORES = {"sql": SqlMarketStore, "preloaded": PreloadedMarketStore}


@pytest.fixture(scope="module")
def bundle_db(tmp_path_factory) -> sessionmaker[Session]:
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade

    root = tmp_path_factory.mktemp("lookahead")
    engine = make_engine(f"sqlite:///{root / 'db.sqlite'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(root / "bundle", tweets_per_session=4), progress=False)
    return factory


def _pollute_future(session: Session, ticker: str, as_of: datetime, seed: int) -> None:
    """Change everything published after ``as_of``: this must not change the window."""
    session.execute(
        update(DailyBar)
        .where(DailyBar.ticker == ticker, DailyBar.available_at > as_of)
        .values(adj_close=DailyBar.adj_close * (2 + seed), close=DailyBar.close * 3)
    )
    session.execute(delete(DailyBar).where(DailyBar.ticker == ticker, DailyBar.available_at > as_of + timedelta(days=10)))
    decision = market_calendar.session_on_or_before(as_of.date())
    later = [as_of + timedelta(seconds=1), as_of + timedelta(hours=5), as_of + timedelta(days=3)]
    session.execute(
        insert(TextItem),
        [
            {
                "ticker": ticker,
                "source": "stocknet-twitter",
                "external_id": f"future-{seed}-{i}",
                "dedup_key": f"tw:future-{seed}-{i}",
                "published_at": stamp,
                # Mis-filed on purpose into the decision session: the as-of rule must still hide it.
                "session_date": decision,
                "text": f"Huge news from the future about the company, shares will soar ${ticker}",
                "author": f"oracle{i}",
                "author_followers": 10**9,
                "repost_count": 10**6,
            }
            for i, stamp in enumerate(later)
        ],
    )
    session.flush()


@pytest.mark.parametrize("store_kind", list(STORES))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    day_offset=st.integers(min_value=35, max_value=170),
    ticker=st.sampled_from(["AAA", "BBB", "CCC"]),
    seed=st.integers(min_value=0, max_value=3),
)
def test_changing_data_after_the_cutoff_changes_nothing(bundle_db, store_kind: str, day_offset: int, ticker: str, seed: int) -> None:
    requested = date(2014, 1, 2) + timedelta(days=day_offset)
    session = bundle_db()
    try:
        before = build_window(STORES[store_kind](session), ticker, requested)
        _pollute_future(session, ticker, before.as_of, seed)
        after = build_window(STORES[store_kind](session), ticker, requested)
        assert after == before
        assert all("from the future" not in t.text for w in after.weeks for t in w.texts)
    finally:
        session.rollback()
        session.close()


@pytest.mark.parametrize("store_kind", list(STORES))
def test_the_pollution_is_visible_later_so_the_test_is_not_vacuous(bundle_db, store_kind: str) -> None:
    session = bundle_db()
    try:
        early = build_window(STORES[store_kind](session), "AAA", date(2014, 3, 7))
        later_before = build_window(STORES[store_kind](session), "AAA", date(2014, 3, 14))
        _pollute_future(session, "AAA", early.as_of, 0)
        later_after = build_window(STORES[store_kind](session), "AAA", date(2014, 3, 14))
        assert later_after.last_price != later_before.last_price
        assert later_after.weeks[-1].return_pct != pytest.approx(later_before.weeks[-1].return_pct)
    finally:
        session.rollback()
        session.close()


@pytest.mark.parametrize("store_kind", list(STORES))
def test_bar_is_visible_exactly_from_its_close(bundle_db, store_kind: str) -> None:
    close = market_calendar.session_close(date(2014, 3, 7))
    with bundle_db() as session:
        store = STORES[store_kind](session)
        assert store.bars("AAA", close).index[-1] == date(2014, 3, 7)
        assert store.bars("AAA", close - timedelta(microseconds=1)).index[-1] == date(2014, 3, 6)
        texts = store.texts("AAA", close)
        assert (texts["published_at"] <= close).all()


def test_both_stores_agree(bundle_db) -> None:
    with bundle_db() as session:
        for requested in weekly_decision_dates(date(2014, 2, 10), date(2014, 6, 20)):
            assert build_window(SqlMarketStore(session), "BBB", requested) == build_window(PreloadedMarketStore(session), "BBB", requested)


def test_weeks_chain_and_label_uses_only_later_prices(bundle_db) -> None:
    with bundle_db() as session:
        store = SqlMarketStore(session)
        window = build_window(store, "CCC", date(2014, 4, 11), n_weeks=3)
        assert [w.end for w in window.weeks] == [date(2014, 3, 28), date(2014, 4, 4), date(2014, 4, 11)]
        for earlier, later in zip(window.weeks, window.weeks[1:], strict=False):
            assert later.start_price == earlier.end_price
        label = weekly_label(store, "CCC", window.decision_date)
        assert label.start_price == window.last_price
        assert label.target_end == date(2014, 4, 17)  # Good Friday 2014-04-18 is a holiday
        bars = store.outcome_bars("CCC", date(2014, 4, 17), date(2014, 4, 17))
        assert label.end_price == bars["adj_close"].iloc[-1]


def test_future_and_unknown_and_out_of_range_dates(bundle_db, monkeypatch) -> None:
    with bundle_db() as session:
        store = SqlMarketStore(session)
        with pytest.raises(FutureDateError, match="in the future"):
            build_window(store, "AAA", date.today() + timedelta(days=30))
        with pytest.raises(UnknownTickerError, match="ZZZ"):
            build_window(store, "ZZZ", date(2014, 3, 7))
        with pytest.raises(DataUnavailableError, match="earliest forecast date is 2014-01-30"):
            build_window(store, "AAA", date(2014, 1, 20), n_weeks=4)
        with pytest.raises(DataUnavailableError, match="stored prices end 2014-06-30"):
            build_window(store, "AAA", date(2014, 9, 5))
        with pytest.raises(DataUnavailableError, match="needs prices through"):
            weekly_label(store, "AAA", date(2014, 6, 27))


def test_today_before_the_close_uses_the_previous_session(bundle_db, monkeypatch) -> None:
    # Pretend it is Friday 2014-03-07, 15:00 New York time: that session has not closed yet.
    monkeypatch.setattr(market_calendar, "utcnow", lambda: datetime(2014, 3, 7, 20, 0, tzinfo=UTC))
    with bundle_db() as session:
        window = build_window(SqlMarketStore(session), "AAA", date(2014, 3, 7))
        assert window.decision_date == date(2014, 3, 6)
        with pytest.raises(FutureDateError):
            build_window(SqlMarketStore(session), "AAA", date(2014, 3, 8))


def test_a_window_without_texts_says_so(tmp_path) -> None:
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(tmp_path / "b", tweets_per_session=0, end=date(2014, 4, 30)), progress=False)
    with factory() as session:
        window = build_window(SqlMarketStore(session), "AAA", date(2014, 4, 4))
    assert not window.has_text
    assert any("prices alone" in note for note in window.notes)


def test_decision_dates_fall_back_on_holidays() -> None:
    dates = weekly_decision_dates(date(2014, 4, 7), date(2014, 4, 30))
    assert dates == [date(2014, 4, 11), date(2014, 4, 17), date(2014, 4, 25)]


def test_real_bundle_window_matches_known_prices(real_db) -> None:
    with real_db() as session:
        store = SqlMarketStore(session)
        window = build_window(store, "AAPL", date(2015, 6, 5))
        label = weekly_label(store, "AAPL", window.decision_date)
    assert window.as_of == datetime(2015, 6, 5, 20, 0, tzinfo=UTC)
    assert window.last_price == pytest.approx(123.215904)
    assert label.return_pct == pytest.approx(-1.1504, abs=1e-3)
    assert label.text == "Down by 1-2%"
    assert all(len(w.texts) <= 5 for w in window.weeks) and window.has_text
