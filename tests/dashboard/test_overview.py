"""The overview page: the landing page for a user with a profile (allocation, account against buy and hold,
track record, the next action), with AppTest against the dashboard fixtures."""

from __future__ import annotations

import json
from datetime import date

from advisor.forecaster.evaluation import EvalReport, write_report
from advisor.forecaster.metrics import METRICS
from tests.dashboard.test_pages import app, as_user, assert_clean, texts, with_user


def test_a_user_with_a_profile_lands_on_the_overview_with_an_allocation_and_a_next_step(dash) -> None:
    with_user(dash, "ann", "aggressive")
    at = as_user(app(), "ann")
    assert_clean(at)
    shown = texts(at)
    assert "Overview — ann" in shown
    assert "Target allocation" in shown and "usable views of 2014-08-29" in shown, shown
    assert "Preview a rebalance" in shown, "views exist and nothing was traded: the next step is the paper account"
    assert "No evaluation report yet" in shown and "No trades yet" in shown


def test_the_overview_shows_the_track_record_and_the_account_after_trading(dash) -> None:
    with_user(dash, "ann", "aggressive")
    stats = {metric: {"value": None} for metric in METRICS} | {
        "binary_accuracy": {"value": 0.55, "low": 0.5, "high": 0.6}, "n": {"value": 200}, "parse_rate": {"value": 1.0}}
    report = EvalReport("Weekly views", (date(2015, 4, 1), date(2015, 9, 30)), 200, 0.52, {"model": "sft"},
                        {"model": stats, "momentum": stats}, {})
    write_report(report, dash.data_dir / "reports", "eval-test")
    at = as_user(app(), "ann")
    at.switch_page("app_pages/trading.py").run()
    at.date_input(key="as_of").set_value(date(2014, 8, 29))
    at.run()
    at.button(key="dry_run").click().run()
    at.button(key="confirm").click().run()
    assert_clean(at)
    at.switch_page("app_pages/overview.py").run()
    assert_clean(at)
    shown = texts(at)
    assert "Weekly views (2015-04-01 to 2015-09-30, 200 windows)" in shown
    table = at.dataframe[-1].value
    assert list(table["predictor"]) == ["model", "momentum"] and table["direction right"].iloc[0] == "55%"
    labels = {m.label for m in at.metric}
    assert {"Your account", "Buy and hold, same names"} <= labels
    assert json.loads((dash.data_dir / "reports" / "eval-test.json").read_text())["windows"] == 200


def test_a_user_without_a_profile_is_sent_to_the_questionnaire(dash) -> None:
    with_user(dash, "newbie", None)
    at = as_user(app(), "newbie")
    at.switch_page("app_pages/overview.py").run()
    assert_clean(at)
    assert "No risk profile yet" in texts(at)
