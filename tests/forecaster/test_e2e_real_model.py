"""End to end on the real default model (SmolLM2-135M-Instruct), through the CLI.

Marked slow (it trains for a few real steps on CPU); it runs in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from advisor.config import DEFAULT_BASE_MODEL
from db.engine import make_engine, make_session_factory
from db.models import Forecast, ModelVersion, TrainingRun
from tests.advisor.test_cli_data import run_cli

pytestmark = pytest.mark.slow


def test_sft_forecast_and_evaluate_with_the_default_model(monkeypatch, capsys, tmp_path: Path, default_model_dir: Path, real_bundle: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / DEFAULT_BASE_MODEL).symlink_to(default_model_dir / DEFAULT_BASE_MODEL)
    db_url = f"sqlite:///{tmp_path / 'e2e.db'}"

    def cli(*args: str) -> str:
        code, out, err = run_cli(monkeypatch, capsys, "--db-url", db_url, "--model-dir", str(model_dir), "--data-dir", str(tmp_path), *args)
        assert code == 0, err + out
        return out

    cli("init")
    cli("data", "import", str(real_bundle), "--quiet")
    out = cli("forecast", "--tickers", "AAPL", "--date", "2015-06-05", "--base-only", "--max-new-tokens", "48")
    assert "AAPL" in out
    out = cli("train", "sft", "--start", "2014-01-01", "--end", "2014-12-31", "--max-steps", "3", "--batch-size", "2", "--check-prompts", "2")
    assert "registered as model version" in out and "held-out parse rate" in out
    out = cli("forecast", "--tickers", "AAPL,MSFT", "--date", "2015-06-05", "--max-new-tokens", "96")
    assert "MSFT" in out and "decision 2015-06-05 -> week 2015-06-08 .. 2015-06-12" in out
    out = cli("forecast", "--tickers", "GE", "--date", "2015-06-05", "--samples", "2", "--max-new-tokens", "32")
    assert "candidate 1" in out
    out = cli("eval", "forecasts", "--start", "2015-04-01", "--end", "2015-05-31", "--max-windows", "3", "--no-base")
    assert "| always_up | 3 |" in out

    factory = make_session_factory(make_engine(db_url))
    with factory() as session:
        run = session.scalars(select(TrainingRun)).one()
        assert run.status == "succeeded" and run.metrics["steps"] == 3
        assert run.metrics["last_logged_loss"] < run.metrics["first_logged_loss"] * 1.5
        sft = session.get(ModelVersion, run.output_model_version_id)
        rows = session.scalars(select(Forecast).where(Forecast.model_version_id == sft.id, Forecast.ticker.in_(["AAPL", "MSFT"]))).all()
        assert {r.ticker for r in rows} >= {"AAPL", "MSFT"}
        assert all(r.decoding["dtype"] in ("bfloat16", "float32") for r in rows)
        sampled = session.scalars(select(Forecast).where(Forecast.ticker == "GE", Forecast.forecast_date == "2015-06-05")).all()
        assert sorted(r.candidate_index for r in sampled) == [0, 1] and sampled[0].decoding["mode"] == "sample"
    reports = list((tmp_path / "reports").glob("eval-weekly-*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["windows"] == 3


def test_a_fresh_install_writes_checked_views_with_the_shipped_adapter(monkeypatch, capsys, tmp_path: Path, default_model_dir: Path, real_db) -> None:
    """No training step: `advisor forecast` uses the shipped adapter, and its views pass the checker."""
    import shutil

    from advisor.forecaster import shipped

    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / DEFAULT_BASE_MODEL).symlink_to(default_model_dir / DEFAULT_BASE_MODEL)
    db_path = tmp_path / "fresh.db"
    shutil.copy(real_db.kw["bind"].url.database, db_path)  # the bundle, imported; no model versions yet
    db_url = f"sqlite:///{db_path}"

    def cli(*args: str) -> tuple[int, str]:
        code, out, err = run_cli(monkeypatch, capsys, "--db-url", db_url, "--model-dir", str(model_dir), "--data-dir", str(tmp_path), *args)
        return code, err + out

    code, out = cli("forecast", "--tickers", "AAPL,MSFT", "--date", "2015-06-05")
    assert code == 0, out
    assert out.count("Prediction:") == 2 and "no fine-tuned adapter" not in out
    assert out.count("stated facts found in the data") == 2, out
    factory = make_session_factory(make_engine(db_url))
    with factory() as session:
        rows = session.scalars(select(Forecast)).all()
        assert len(rows) == 2 and {r.model_version.name for r in rows} == {shipped.SHIPPED_NAME}
        # Each view carries the checker's verdict (how many pass is measured by the evaluation, not here).
        assert all(r.check_result is not None and r.check_passed is r.check_result["passed"] for r in rows)

    monkeypatch.setattr(shipped, "SHIPPED_FILES", {**shipped.SHIPPED_FILES, "adapter_model.safetensors": "0" * 64})
    fresh = tmp_path / "fresh2.db"
    shutil.copy(real_db.kw["bind"].url.database, fresh)
    db_url = f"sqlite:///{fresh}"
    code, out = cli("forecast", "--tickers", "AAPL", "--date", "2015-06-05")
    assert code != 0 and "does not match its pinned SHA-256" in out and "Traceback" not in out
