"""Every page with AppTest against a temporary SQLite database, including the writes, the empty
database, missing profiles, broker errors, and user isolation."""

from __future__ import annotations

import time
from datetime import date

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import BacktestRun, Forecast, ModelActivation, Order, Preference, RiskProfile, TrainingRun, User
from rlhf.profiles import ARCHETYPES, save_profile
from tests.dashboard.conftest import APP
from tests.rlhf.conftest import add_candidates

PAGES = [f"app_pages/{name}.py" for name in ("overview", "profile", "views", "feedback", "backtest", "trading", "models")]


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


def as_user(at: AppTest, name: str) -> AppTest:
    at.sidebar.selectbox(key="user_select").set_value(name).run()
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "info", "warning", "error", "success", "subheader") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def wait_for_text(at: AppTest, text: str, timeout_s: float = 60) -> str:
    """Rerun the page until ``text`` shows (a background job finishing), as the page's poll does."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = texts(at)
        if text in shown:
            return shown
        assert time.monotonic() < deadline, f"{text!r} never showed:\n{shown}"
        time.sleep(0.2)
        at.run()
        assert_clean(at)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def with_user(dash, name: str = "ann", archetype: str | None = "moderate") -> None:
    with session_scope(dash.factory) as session:
        if archetype:
            save_profile(session, name, ARCHETYPES[archetype])
        else:
            session.add(User(name=name))


@pytest.mark.parametrize("page", PAGES)
def test_empty_database_explains_what_to_do(empty_dash, page: str) -> None:
    at = app()
    at.switch_page(page).run()
    assert_clean(at)
    assert "Choose or create a user" in texts(at) or "no market data" in texts(at).lower()


def test_creating_a_user_and_answering_the_questionnaire(dash) -> None:
    at = app()
    at.sidebar.text_input[0].set_value("zoe")
    at.sidebar.button[0].click().run()
    assert_clean(at)
    assert at.sidebar.selectbox(key="user_select").value == "zoe"
    at.switch_page("app_pages/profile.py").run()  # the default page is the overview, which sends a new user here
    with dash.factory() as session:
        zoe_id = session.scalar(select(User.id).where(User.name == "zoe"))
    for key, value in ARCHETYPES["aggressive"].items():
        radio = at.radio(key=f"q_{zoe_id}_{key}")
        radio.set_value(radio.options[value])
    at.button(key="save_profile").click().run()
    assert_clean(at)
    assert "Saved as profile version 1" in texts(at)
    with dash.factory() as session:
        profile = session.scalar(select(RiskProfile))
        assert profile.label == "aggressive" and profile.answers == ARCHETYPES["aggressive"]


@pytest.mark.parametrize("page", ["app_pages/feedback.py", "app_pages/trading.py"])
def test_a_user_without_a_profile_is_told_to_answer_first(dash, page: str) -> None:
    with_user(dash, "noprof", None)
    at = as_user(app(), "noprof")
    at.switch_page(page).run()
    assert_clean(at)
    assert "has no risk profile yet" in texts(at)


def test_views_page_shows_cards_and_generates_new_views(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/views.py").run()
    assert_clean(at)
    assert "Prediction:" in texts(at) and "tiny-sft" in texts(at)
    at.multiselect(key="gen_tickers").set_value(["AAA"])
    at.date_input(key="gen_date").set_value(date(2014, 5, 9))
    at.button(key="generate").click().run()
    assert_clean(at)
    wait_for_text(at, "Wrote 1 views for 2014-05-09")
    with dash.factory() as session:
        ann = session.scalar(select(User).where(User.name == "ann"))
        assert session.scalar(select(func.count()).select_from(Forecast).where(Forecast.user_id == ann.id)) == 1


def test_feedback_choice_and_thumbs_are_stored_at_once(dash) -> None:
    with_user(dash)
    ids = add_candidates(dash.factory, ["Up by 1-2%", "Down by 2-3%"], day=date(2014, 5, 9))
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    assert "View A" in texts(at) and "View B" in texts(at)
    at.radio(key=f"choice_radio_{ids[0]}_{ids[1]}").set_value("B is better")
    at.text_input(key=f"choice_comment_{ids[0]}_{ids[1]}").set_value("too optimistic")
    at.button(key="save_choice").click().run()
    assert_clean(at)
    with dash.factory() as session:
        pref = session.scalars(select(Preference)).one()
        assert (pref.kind, pref.source, pref.chosen_forecast_id, pref.rejected_forecast_id, pref.comment) == ("pair", "human", ids[1], ids[0], "too optimistic")
        forecast_id = session.scalar(select(Forecast.id).where(Forecast.forecast_date == date(2014, 8, 29)).order_by(Forecast.ticker))
    at.session_state[f"thumb_{forecast_id}"] = 0
    at.run()
    assert_clean(at)
    with dash.factory() as session:
        rating = session.scalars(select(Preference).where(Preference.kind == "rating")).one()
        assert rating.forecast_id == forecast_id and rating.rating == -1
    at.session_state[f"thumb_{forecast_id}"] = 1  # changed their mind: replaces the thumbs down
    at.run()
    assert_clean(at)
    from rlhf.datasets import pair_examples, rating_examples
    from rlhf.profiles import get_user

    with dash.factory() as session:
        rating = session.scalars(select(Preference).where(Preference.kind == "rating")).one()
        assert rating.rating == 1
        ann = get_user(session, "ann")
        pairs, thumbs = pair_examples(session, ann), rating_examples(session, ann)  # what `advisor rlhf export` writes for TRL
    assert len(pairs) == 1 and "Down by 2-3%" in pairs[0].row["chosen"][0]["content"] and pairs[0].source == "human"
    assert [t.row["label"] for t in thumbs] == [True]


def test_a_failed_tuning_run_is_a_readable_message(dash) -> None:
    with_user(dash)
    with session_scope(dash.factory) as session:
        ann = session.scalar(select(User).where(User.name == "ann"))
        session.add(TrainingRun(kind="dpo", status="failed", user_id=ann.id, error="TooFewPreferencesError: too little feedback"))
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    assert "failed: TooFewPreferencesError: too little feedback" in texts(at) and "active model is unchanged" in texts(at)


def test_backtest_page_runs_and_stores_and_reports_bad_periods(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/backtest.py").run()
    assert_clean(at)
    assert "No backtests yet" in texts(at)
    at.date_input(key="bt_start").set_value(date(2014, 4, 1))
    at.date_input(key="bt_end").set_value(date(2014, 7, 31))
    at.button(key="bt_run").click().run()
    assert_clean(at)
    assert "Growth of $1" in texts(at) and "Metrics" in texts(at)
    metrics = at.dataframe[0].value
    assert {"Strategy", "Total return", "Max drawdown", "Sharpe"} <= set(metrics.columns), "human column names"
    with dash.factory() as session:
        assert session.scalar(select(func.count()).select_from(BacktestRun).where(BacktestRun.strategy == "views")) == 1
    at.date_input(key="bt_start").set_value(date(2016, 1, 4))
    at.date_input(key="bt_end").set_value(date(2016, 3, 31))
    at.button(key="bt_run").click().run()
    assert_clean(at)
    assert "outside the stored prices" in texts(at)


def test_trading_page_previews_confirms_and_kills(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/trading.py").run()
    assert_clean(at)
    at.date_input(key="as_of").set_value(date(2014, 5, 9))
    at.run()
    at.button(key="dry_run").click().run()
    assert_clean(at)
    with dash.factory() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 0, "a dry run sends and records nothing"
    at.button(key="confirm").click().run()
    assert_clean(at)
    assert "Sent" in texts(at)
    with dash.factory() as session:
        sent = session.scalar(select(func.count()).select_from(Order))
        assert sent > 0
    at.button(key="kill").click().run()
    assert_clean(at)
    assert "Kill switch on" in texts(at)


def test_broker_errors_are_messages_not_tracebacks(dash, monkeypatch) -> None:
    with_user(dash)
    monkeypatch.setenv("ADVISOR_BROKER__KIND", "alpaca")
    at = as_user(app(), "ann")
    at.switch_page("app_pages/trading.py").run()
    at.toggle(key="historical").set_value(False).run()
    assert_clean(at)
    assert "Alpaca paper keys are missing" in texts(at)


def test_models_page_activates_and_rolls_back(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/models.py").run()
    assert_clean(at)
    assert "tiny-sft" in at.dataframe[0].value["Name"].tolist()
    at.button(key="rollback").click().run()
    assert "nothing to roll back" in texts(at)
    at.selectbox(key="version_choice").set_value(dash.sft_version)
    at.button(key="activate").click().run()
    assert_clean(at)
    with dash.factory() as session:
        assert session.scalar(select(ModelActivation.model_version_id)) == dash.sft_version


def test_one_users_data_never_shows_on_anothers_pages(dash) -> None:
    with_user(dash, "ann")
    with_user(dash, "bob", "aggressive")
    with session_scope(dash.factory) as session:
        bob = session.scalar(select(User).where(User.name == "bob"))
        private = session.scalars(select(Forecast).where(Forecast.ticker == "CCC", Forecast.forecast_date == date(2014, 8, 29))).one()
        private.user_id = bob.id
        private.raw_text = private.raw_text.replace("Demand looks strong.", "BOBONLYSECRET view.")
        session.add(BacktestRun(strategy="views", user_id=bob.id, start=date(2014, 4, 1), end=date(2014, 5, 1), group_key="bob-group",
                                metrics={"total_return": 0.5}))
    add_candidates(dash.factory, ["Up by 4-5%", "Down by 4-5%"], owner="bob", ticker="DDD", day=date(2014, 5, 9))
    at = as_user(app(), "ann")
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        shown = texts(at) + "".join(str(d.value) for d in at.dataframe)
        assert "BOBONLYSECRET" not in shown and "bob-group" not in shown and "Up by 4-5%" not in shown, page
    at = as_user(at, "bob")
    at.switch_page("app_pages/views.py").run()
    assert "BOBONLYSECRET" in texts(at)
