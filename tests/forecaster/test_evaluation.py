"""Evaluation: the same windows for every predictor, baselines, reports, the daily protocol."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from advisor import market_calendar
from advisor.data.labels import Direction, MagnitudeBin
from advisor.data.store import PreloadedMarketStore, SqlMarketStore
from advisor.data.windows import Horizon, build_daily_window, daily_label
from advisor.errors import AdvisorError
from advisor.forecaster.evaluation import baseline_prediction, evaluate, to_markdown, write_report
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.service import WindowConfig
from advisor.forecaster.stocknet import stocknet_keeps


def test_report_compares_model_and_baselines_on_the_same_windows(market, tiny_model_dir: Path, tmp_path: Path) -> None:
    handle = load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path)
    report = evaluate(market, {"model": handle}, date(2014, 4, 1), date(2014, 6, 30), max_windows=9,
                      decoding=Decoding(max_new_tokens=8), progress=False)
    assert report.windows == 9
    assert set(report.overall) == {"model", "always_up", "momentum"}
    assert all(stats["n"]["value"] == 9 for stats in report.overall.values())
    assert report.overall["always_up"]["binary_accuracy"]["value"] == pytest.approx(report.share_up)
    assert report.overall["always_up"]["parse_rate"]["value"] == 1.0
    assert report.overall["model"]["parse_rate"]["value"] == 0.0  # random weights write nothing parseable
    assert set(report.per_ticker) <= {"AAA", "BBB", "CCC"}
    # The report keeps its caveats (share of up weeks, what the intervals mean); they once landed in view_quality.
    assert any("realised weeks were up" in note for note in report.notes) and any("bootstrap" in note for note in report.notes)
    assert isinstance(report.view_quality, dict) and set(report.view_quality) == {"model"}
    paths = write_report(report, tmp_path / "reports", "eval-test")
    saved = json.loads(Path(paths["json"]).read_text())
    assert saved["windows"] == 9 and "mcc" in saved["overall"]["momentum"]
    markdown = Path(paths["markdown"]).read_text()
    assert "| always_up | 9 |" in markdown and "[" in markdown, "values carry intervals"
    assert to_markdown(report) == markdown


def test_no_windows_in_the_period_is_a_clear_error(market, tiny_model_dir: Path, tmp_path: Path) -> None:
    handle = load_model(ModelSpec(base=str(tiny_model_dir)), tmp_path)
    with pytest.raises(AdvisorError, match="no evaluable windows"):
        evaluate(market, {"model": handle}, date(2016, 1, 1), date(2016, 3, 1), progress=False)


def test_momentum_repeats_last_week(market) -> None:
    with market() as session:
        window = WindowConfig().build(SqlMarketStore(session), "AAA", date(2014, 5, 9))
    direction, magnitude = baseline_prediction("momentum", window)
    last = window.weeks[-1].return_pct
    assert direction is (Direction.UP if last >= 0 else Direction.DOWN)
    assert baseline_prediction("always_up", window) == (Direction.UP, MagnitudeBin(0, 1))


def test_daily_windows_follow_the_stocknet_protocol(market) -> None:
    with market() as session:
        store = SqlMarketStore(session)
        window = build_daily_window(store, "BBB", date(2014, 5, 9))
        label = daily_label(store, "BBB", window.decision_date)
        bars = store.outcome_bars("BBB", date(2014, 5, 1), date(2014, 5, 12))
    assert window.horizon is Horizon.DAY and len(window.weeks) == 5
    assert [p.end for p in window.weeks] == [date(2014, 5, 5), date(2014, 5, 6), date(2014, 5, 7), date(2014, 5, 8), date(2014, 5, 9)]
    assert window.target_end == date(2014, 5, 12) and label.target_end == date(2014, 5, 12)
    expected = (bars.loc[date(2014, 5, 12), "adj_close"] / bars.loc[date(2014, 5, 9), "adj_close"] - 1) * 100
    assert label.return_pct == pytest.approx(expected)
    assert all(t.session_date == p.end for p in window.weeks for t in p.texts)
    assert stocknet_keeps(0.56) and stocknet_keeps(-0.51) and not stocknet_keeps(0.55) and not stocknet_keeps(-0.5)


def test_daily_window_ignores_anything_after_the_close(market) -> None:
    from sqlalchemy import update

    from db.models import DailyBar

    session = market()
    try:
        before = build_daily_window(PreloadedMarketStore(session), "CCC", date(2014, 5, 9))
        session.execute(update(DailyBar).where(DailyBar.date > date(2014, 5, 9)).values(adj_close=DailyBar.adj_close * 5))
        session.flush()
        after = build_daily_window(PreloadedMarketStore(session), "CCC", date(2014, 5, 9))
        assert after == before
    finally:
        session.rollback()
        session.close()


def test_daily_evaluation_drops_small_moves(market) -> None:
    from advisor.forecaster.evaluation import collect_windows

    kept = collect_windows(market, date(2014, 3, 1), date(2014, 5, 30), tickers=None, max_windows=None, seed=0, window_config=WindowConfig.daily())
    with market() as session:
        store = SqlMarketStore(session)
        all_days = [daily_label(store, "AAA", d).return_pct for d in market_calendar.sessions_between(date(2014, 3, 3), date(2014, 5, 28))]
    assert kept and all(stocknet_keeps(w.actual_pct) for w in kept)
    assert any(not stocknet_keeps(m) for m in all_days), "the period has small moves that must have been dropped"


def test_the_logistic_baseline_is_trained_before_the_period_and_reported(market, tiny_model_dir: Path, tmp_path: Path) -> None:
    from advisor.forecaster.sentiment import SentimentScorer

    handle = load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path)
    report = evaluate(market, {"model": handle}, date(2014, 5, 1), date(2014, 6, 30), max_windows=9,
                      decoding=Decoding(max_new_tokens=8), progress=False, scorer=SentimentScorer(None),
                      baseline_train_start=date(2014, 1, 1))
    assert set(report.overall) == {"model", "always_up", "momentum", "logistic"}
    assert report.overall["logistic"]["parse_rate"]["value"] == 1.0
    assert any(note.startswith("logistic: trained on") and "before 2014-05-01" in note for note in report.notes)
    quality = report.view_quality["model"]
    assert quality["views"] == 9 and quality["parsed"] == 0.0 and quality["check_passed"] == 0.0
    markdown = to_markdown(report)
    assert "## Views as text" in markdown and "| logistic | 9 |" in markdown and "## Calibration" in markdown


def test_the_baseline_refuses_too_few_windows_and_sees_no_label(market) -> None:
    from advisor.forecaster.baseline import MIN_TRAINING_WINDOWS, train_logistic_baseline, window_features
    from advisor.forecaster.sentiment import SentimentScorer
    from advisor.forecaster.sft import labelled_windows

    scorer = SentimentScorer(None)
    with market() as session:
        pairs = labelled_windows(PreloadedMarketStore(session), ["AAA", "BBB", "CCC"], date(2014, 1, 1), date(2014, 6, 30), WindowConfig(), 0, None)
    with pytest.raises(AdvisorError, match=f"at least {MIN_TRAINING_WINDOWS} training windows"):
        train_logistic_baseline(pairs[:10], scorer)
    window, label = pairs[0]
    features = window_features(window, scorer)
    assert len(features) == 3 + 3 + 3 * 3
    assert label.return_pct not in features, "the target week's move is not a feature"


def test_calibration_groups_by_predicted_size() -> None:
    from advisor.forecaster.evaluation import calibration
    from advisor.forecaster.metrics import Scored

    items = [Scored("AAA", date(2014, 1, 3), move, Direction.UP, MagnitudeBin(low, low + 1)) for move, low in
             [(0.5, 0), (-0.5, 0), (3.0, 2), (2.0, 2), (1.0, 2)]]
    rows = calibration(items, samples=50)
    assert [r["predicted"] for r in rows] == ["0-1%", "2-3%"]
    assert rows[0]["realised_abs_pct"]["value"] == pytest.approx(0.5) and rows[0]["realised_in_predicted_direction_pct"]["value"] == pytest.approx(0.0)
    assert rows[1]["n"] == 3 and rows[1]["realised_abs_pct"]["value"] == pytest.approx(2.0)
