"""Past views graded against what happened: each view's result and a model's hit rate on a ticker, on
the Views page and in the queries behind it."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from advisor import market_calendar
from advisor.data.store import SqlMarketStore
from advisor.data.windows import weekly_label
from advisor.forecaster.queries import hit_rate, view_result
from advisor.forecaster.views import parse_view
from db.engine import session_scope
from db.models import Forecast
from tests.dashboard.test_pages import app, as_user, assert_clean, texts, with_user


def test_a_view_is_graded_by_the_week_that_followed_it(dash) -> None:
    with dash.factory() as session:
        store = SqlMarketStore(session)
        forecasts = session.scalars(select(Forecast).where(Forecast.ticker == "AAA").order_by(Forecast.forecast_date)).all()
        graded = 0
        for f in forecasts:
            view = parse_view(f.raw_text)
            result = view_result(store, f, view)
            label = weekly_label(store, "AAA", f.forecast_date)
            assert result is not None
            assert result.actual_pct == label.return_pct
            assert result.direction_right == (label.direction == view.direction)
            assert result.bin_right == (result.direction_right and label.magnitude == view.magnitude)
            assert result.text().startswith(f"actual {label.return_pct:+.1f}%: ")
            graded += 1
        assert graded == len(forecasts) > 20


def test_a_view_whose_week_is_not_over_has_no_result_yet(dash) -> None:
    last_day = date(2014, 9, 26)  # the bundle's prices end 2014-09-30, before that week ends
    with session_scope(dash.factory) as session:
        template = session.scalars(select(Forecast).where(Forecast.ticker == "AAA")).first()
        open_view = Forecast(**{c.name: getattr(template, c.name) for c in Forecast.__table__.columns if c.name != "id"})
        open_view.forecast_key, open_view.forecast_date, open_view.as_of = "open", last_day, market_calendar.session_close(last_day)
        session.add(open_view)
        session.flush()
        assert view_result(SqlMarketStore(session), open_view, parse_view(open_view.raw_text)) is None
        open_view.raw_text = "no view at all"
        assert view_result(SqlMarketStore(session), open_view, parse_view(open_view.raw_text)) is None


def test_hit_rate_counts_one_models_greedy_views_before_the_week(dash) -> None:
    before = date(2014, 7, 1)
    with dash.factory() as session:
        store = SqlMarketStore(session)
        expected = [
            view_result(store, f, parse_view(f.raw_text)).direction_right  # type: ignore[union-attr]
            for f in session.scalars(select(Forecast).where(Forecast.ticker == "BBB", Forecast.forecast_date < before))
        ]
        record = hit_rate(session, store, None, "BBB", dash.sft_version, before)
        assert (record.right, record.total) == (sum(expected), len(expected))
        assert record.low < record.right / record.total < record.high
        assert f"{record.right} of {record.total} past views" in record.text()
        assert hit_rate(session, store, None, "BBB", dash.sft_version + 99, before).total == 0
        assert hit_rate(session, store, None, "BBB", dash.sft_version, date(2014, 1, 1)).text() == "no past views with a known result yet"


def test_the_views_page_shows_each_views_result_and_the_hit_rate(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/views.py").run()
    assert_clean(at)
    page = texts(at)
    assert "Result: actual " in page and ("right direction" in page or "wrong direction" in page)
    assert "This model on AAA before this week: " in page and "past views called the direction right" in page
