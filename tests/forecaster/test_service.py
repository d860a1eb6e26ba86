"""Forecasting end to end on the tiny model: batching, seeds, storage, reuse, errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from advisor.data.store import SqlMarketStore
from advisor.errors import UnknownTickerError
from advisor.forecaster.generation import Decoding, generate
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.service import build_prompts, build_windows, forecast_tickers
from db.engine import session_scope
from db.models import Forecast, ModelVersion

FAST = Decoding(max_new_tokens=12)


@pytest.fixture
def handle(tiny_model_dir: Path, tmp_path: Path):
    return load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path)


def test_batched_greedy_equals_one_at_a_time(market, handle) -> None:
    with market() as session:
        windows = build_windows(SqlMarketStore(session), ["AAA", "BBB", "CCC"], date(2014, 5, 9))
    prompts = build_prompts(windows, handle, PromptConfig(), FAST)
    texts, hashes = [p.text for p in prompts], [p.hash for p in prompts]
    batched = generate(handle, texts, hashes, Decoding(max_new_tokens=12, batch_size=3), progress=False)
    single = generate(handle, texts, hashes, Decoding(max_new_tokens=12, batch_size=1), progress=False)
    assert [g[0].text for g in batched] == [g[0].text for g in single]
    assert all(g[0].new_tokens > 0 for g in batched)


def test_sampled_candidates_are_reproducible_from_the_stored_seed(market, handle) -> None:
    with market() as session:
        windows = build_windows(SqlMarketStore(session), ["AAA", "BBB"], date(2014, 5, 9))
    prompts = build_prompts(windows, handle, PromptConfig(), FAST)
    decoding = Decoding(mode="sample", num_candidates=3, max_new_tokens=12, seed=7)
    first = generate(handle, [p.text for p in prompts], [p.hash for p in prompts], decoding, progress=False)
    alone = generate(handle, [prompts[1].text], [prompts[1].hash], decoding, progress=False)
    assert [g.text for g in first[1]] == [g.text for g in alone[0]], "independent of the other prompts in the run"
    assert len({g.text for g in first[0]}) > 1, "candidates differ"
    assert {g.seed for g in first[0]} == {first[0][0].seed}


def test_forecasts_are_stored_with_what_reproduces_them_and_reused(market, handle) -> None:
    with session_scope(market) as session:
        outcomes = forecast_tickers(session, SqlMarketStore(session), handle, ["AAA", "BBB"], date(2014, 5, 9), FAST, progress=False)
    with market() as session:
        rows = session.scalars(select(Forecast).order_by(Forecast.ticker)).all()
        version = session.get(ModelVersion, rows[0].model_version_id)
        assert [r.ticker for r in rows] == ["AAA", "BBB"]
        row = rows[0]
        assert row.forecast_date == date(2014, 5, 9) and row.target_start == date(2014, 5, 12) and row.target_end == date(2014, 5, 16)
        assert row.prompt_text.startswith("<|im_start|>system") and len(row.prompt_hash) == 64
        assert row.decoding["mode"] == "greedy" and row.decoding["max_new_tokens"] == 12 and row.decoding["dtype"] == "float32"
        assert row.parse_status == "unparsed" and row.direction is None, "a random model's text is never a signal"
        assert version.kind == "base" and version.key == handle.version_key
        assert row.text_item_ids
    assert not outcomes[0][0].reused
    with session_scope(market) as session:
        again = forecast_tickers(session, SqlMarketStore(session), handle, ["AAA", "BBB"], date(2014, 5, 9), FAST, progress=False)
    assert all(group[0].reused for group in again)
    with market() as session:
        assert session.scalar(select(func.count()).select_from(Forecast)) == 2


def test_an_unknown_ticker_fails_before_anything_is_generated_or_written(market, handle) -> None:
    with pytest.raises(UnknownTickerError):
        with session_scope(market) as session:
            forecast_tickers(session, SqlMarketStore(session), handle, ["AAA", "NOPE"], date(2014, 5, 9), FAST, progress=False)
    with market() as session:
        assert session.scalar(select(func.count()).select_from(Forecast)) == 0
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_generation_that_returns_nothing_is_stored_unparsed(market, handle, monkeypatch) -> None:
    from advisor.forecaster import service
    from advisor.forecaster.generation import Generation

    monkeypatch.setattr(service, "generate", lambda h, texts, hashes, d, **k: [[Generation("", 0, 0, 0, True)] for _ in texts])
    with session_scope(market) as session:
        outcome = forecast_tickers(session, SqlMarketStore(session), handle, ["AAA"], date(2014, 5, 9), FAST, progress=False)[0][0]
    assert outcome.forecast.parse_status == "unparsed" and outcome.forecast.parse_error == "empty output"
    assert not outcome.view.is_signal


def test_decoding_settings_are_validated() -> None:
    from advisor.errors import ConfigError

    with pytest.raises(ConfigError):
        Decoding(mode="greedy", num_candidates=2)
    with pytest.raises(ConfigError):
        Decoding(mode="sample", temperature=0)
    with pytest.raises(ConfigError):
        Decoding(mode="beam")  # type: ignore[arg-type]


def test_the_stopping_criterion_stops_each_sequence_on_its_own(handle) -> None:
    import torch

    from advisor.forecaster.backends.hf import AnswerStop

    tokenizer = handle.tokenizer
    prompt = tokenizer("Predict AAA.", add_special_tokens=False)["input_ids"]
    done_text = "[Prediction & Analysis]\nPrediction: Up by 1-2%\nAnalysis: fine.\n"
    going_text = "[Prediction & Analysis]\nPrediction: Up by 1-2%\nAnalysis: fi"
    rows = [prompt + tokenizer(t, add_special_tokens=False)["input_ids"] for t in (done_text, going_text)]
    width = max(map(len, rows))
    batch = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    stop = AnswerStop(tokenizer, prompt_length=len(prompt) + width - len(rows[0]))
    assert stop(batch[:1], None).tolist() == [True] and stop.reasons == {0: "answer_complete"}
    stop = AnswerStop(tokenizer, prompt_length=len(prompt) + width - len(rows[1]))
    assert stop(batch[1:], None).tolist() == [False] and stop.reasons == {}


def test_early_stop_is_recorded_with_each_view(market, handle) -> None:
    with session_scope(market) as session:
        forecast_tickers(session, SqlMarketStore(session), handle, ["AAA"], date(2014, 5, 9), FAST, progress=False)
    with market() as session:
        row = session.scalars(select(Forecast)).one()
    assert row.decoding["early_stop"] is True
    assert row.decoding["stop_reason"] in ("eos", "length", "answer_complete", "repetition")
    assert row.decoding["finished"] == (row.decoding["stop_reason"] != "length")


def test_each_view_is_checked_and_a_failing_view_is_stored_but_not_a_signal(market, handle, monkeypatch) -> None:
    from advisor.data.labels import Direction, MagnitudeBin
    from advisor.forecaster import service
    from advisor.forecaster.generation import Generation
    from advisor.forecaster.service import expected_return_pct
    from advisor.forecaster.views import render_view

    with market() as session:
        window = build_windows(SqlMarketStore(session), ["AAA"], date(2014, 5, 9))[0]
    week = window.weeks[-1]
    verb = "rose" if week.return_pct >= 0 else "fell"
    true_fact = f"Week ending {week.end}: the stock {verb} {abs(week.return_pct):.2f}%."
    false_fact = f"Week ending {week.end}: the stock {verb} {abs(week.return_pct) + 3:.2f}%."
    side = (lambda fact: ([fact], ["None of note."])) if verb == "rose" else (lambda fact: (["None of note."], [fact]))
    for fact, passes in ((true_fact, True), (false_fact, False)):
        text = render_view(Direction.UP, MagnitudeBin(1, 2), *side(fact), "Expect a rise.")
        monkeypatch.setattr(service, "generate", lambda h, texts, hashes, d, _t=text, **k: [[Generation(_t, 0, 0, 0, True)] for _ in texts])
        with session_scope(market) as session:
            outcome = forecast_tickers(session, SqlMarketStore(session), handle, ["AAA"], date(2014, 5, 9), FAST, progress=False)[0][0]
            row = outcome.forecast
            assert outcome.view.is_signal and row.check_passed is passes and row.check_result["passed"] is passes
            assert outcome.check is not None and outcome.check.summary().startswith(f"{int(passes)} of 1 stated facts found")
            assert (expected_return_pct(row) is not None) is passes and outcome.is_signal is passes
            session.rollback()
