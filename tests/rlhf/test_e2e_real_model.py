"""The personal tuning loop end to end on the real default model (slow; runs in CI).

Proves that an adapter was trained on stored preferences: every LoRA tensor of the tuned adapter differs
from its parent's, the run is recorded, and the held-out preference accuracy is reported. The run keeps its
last DPO step: with step selection, 8 steps on toy data may keep none (the parent), which is a correct
outcome (tested on the tiny model in test_loop.py) but proves nothing about training.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from advisor.config import DEFAULT_BASE_MODEL
from db.engine import session_scope
from db.models import ModelVersion, Preference, TrainingRun
from rlhf.loop import LoopOptions, run_loop
from rlhf.profiles import ARCHETYPES, save_profile

pytestmark = pytest.mark.slow
TICKERS = ("AAPL", "MSFT", "GE", "XOM", "JPM", "AMZN")


def test_a_user_adapter_is_trained_on_stored_preferences(tmp_path: Path, real_sft) -> None:
    factory, model_dir, sft = real_sft  # the real bundle and a 12-step SFT adapter (tests/conftest.py)
    with session_scope(factory) as session:
        save_profile(session, "bold", ARCHETYPES["aggressive"], simulated=True)
    options = LoopOptions(
        train_period=(date(2014, 10, 1), date(2015, 3, 27)), eval_period=(date(2015, 4, 1), date(2015, 5, 29)), tickers=TICKERS,
        train_prompts=24, eval_prompts=3, candidates=4, eval_candidates=2, dpo_steps=8, rm_steps=8, batch_size=2, simulate_user=True,
        select_step=False,
    )
    result = run_loop(factory, model_dir, DEFAULT_BASE_MODEL, "bold", options, tmp_path / "data")

    assert result.method in ("dpo", "kto") and result.parent_version_id is not None
    parent = load_file(sft.adapter_path / "adapter_model.safetensors")
    with factory() as session:
        tuned = session.get(ModelVersion, result.tuned_version_id)
        assert tuned.parent_id == result.parent_version_id and tuned.kind == result.method
        trained = load_file(Path(tuned.adapter_path) / "adapter_model.safetensors")
        runs = {r.kind: r for r in session.scalars(select(TrainingRun).where(TrainingRun.user_id == tuned.user_id))}
        stored = session.scalars(select(Preference).where(Preference.user_id == tuned.user_id)).all()
    assert parent.keys() == trained.keys()
    unchanged = [k for k in parent if torch.equal(parent[k], trained[k])]
    assert not unchanged, f"{len(unchanged)} LoRA tensors did not change"
    assert runs[result.method].status == "succeeded" and runs[result.method].data_snapshot["train"] >= 16  # the real floor
    assert {p.source for p in stored} >= {"simulated"} and len(stored) >= result.counts["train_pairs"]
    accuracy = result.report.preference_accuracy
    assert accuracy and accuracy["tuned"]["n"] >= 1 and 0.0 <= accuracy["tuned"]["value"] <= 1.0
    assert "preference accuracy" in Path(result.report_paths["markdown"]).read_text()
