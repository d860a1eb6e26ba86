"""Reward model, DPO and KTO on the tiny model: they train, they save, they refuse too little data;
and the DPO entry point runs unchanged under ``accelerate launch --cpu --num_processes 2``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from advisor.errors import AdvisorError
from rlhf.reward import MIN_PAIRS, RewardOptions, RewardScorer, train_reward_model
from rlhf.train_pref import MIN_DPO_PAIRS, PreferenceSpec, run, write_rows

PROMPT = [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": "Predict the stock of AAA next week."}]


def pair_rows(n: int = 8) -> list[dict]:
    return [
        {"prompt": PROMPT + [{"role": "user", "content": f"Week {i}."}],
         "chosen": [{"role": "assistant", "content": f"Prediction: Up by 1-2% (week {i})"}],
         "rejected": [{"role": "assistant", "content": f"Prediction: Down by more than 5% (week {i})"}]}
        for i in range(n)
    ]


def kto_rows(n: int = 8) -> list[dict]:
    return [
        {"prompt": PROMPT, "completion": [{"role": "assistant", "content": f"Prediction: {'Up' if i % 2 else 'Down'} by 1-2%"}], "label": bool(i % 2)}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def parent_adapter(tiny_model_dir: Path, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
    path = tmp_path_factory.mktemp("parent") / "sft"
    model.save_pretrained(path)
    return path


def spec_for(method: str, tiny_model_dir: Path, parent: Path, tmp_path: Path, rows: list[dict], steps: int = 3) -> PreferenceSpec:
    return PreferenceSpec(
        method=method, base_model=str(tiny_model_dir), model_dir=str(tmp_path), parent_adapter=str(parent),
        rows_path=str(write_rows(rows, tmp_path / "rows.jsonl")), out_dir=str(tmp_path / method), max_steps=steps,
        learning_rate=1e-2, max_length=256, progress=False, min_pairs=4,  # toy data: the mechanics, not the floor
    )


def assert_every_lora_tensor_changed(parent: Path, trained: Path) -> None:
    before, after = load_file(parent / "adapter_model.safetensors"), load_file(trained / "adapter_model.safetensors")
    assert before.keys() == after.keys() and before
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"not trained: {unchanged[:3]}"


@pytest.mark.parametrize(("method", "rows"), [("dpo", pair_rows()), ("kto", kto_rows())])
def test_preference_training_changes_every_adapter_parameter(method: str, rows, tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path) -> None:
    metrics = run(spec_for(method, tiny_model_dir, parent_adapter, tmp_path, rows))
    out = tmp_path / method
    assert metrics["steps"] == 3 and metrics["processes"] == 1
    assert json.loads((out / "metrics.json").read_text())["method"] == method
    assert_every_lora_tensor_changed(parent_adapter, out)


def _swapped(rows: list[dict]) -> list[dict]:
    return [dict(r, chosen=r["rejected"], rejected=r["chosen"]) for r in rows]


@pytest.mark.parametrize("validation_agrees", [True, False])
def test_dpo_keeps_the_step_that_does_best_on_the_validation_pairs(validation_agrees: bool, tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path) -> None:
    """Validation pairs that agree with the training pairs keep a trained step; pairs that contradict
    them keep step 0, i.e. the parent's weights exactly (training only made them worse)."""
    validation = pair_rows(10)[8:] if validation_agrees else _swapped(pair_rows(10)[8:])
    spec = dataclasses.replace(spec_for("dpo", tiny_model_dir, parent_adapter, tmp_path, pair_rows(8), steps=4),
                               validation_rows_path=str(write_rows(validation, tmp_path / "validation.jsonl")), eval_steps=2)
    metrics = run(spec)
    curve = metrics["validation_curve"]
    assert [h["step"] for h in curve] == [0, 2, 4] and metrics["validation_pairs"] == 2
    assert curve[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the parent is its own reference
    before, after = load_file(parent_adapter / "adapter_model.safetensors"), load_file(tmp_path / "dpo" / "adapter_model.safetensors")
    if validation_agrees:
        assert metrics["selected_step"] > 0 and metrics["selected_validation_loss"] < curve[0]["loss"]
        assert any(not torch.equal(before[k], after[k]) for k in before)
    else:
        assert metrics["selected_step"] == 0 and all(h["loss"] > curve[0]["loss"] for h in curve[1:])
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_too_few_examples_are_refused_with_the_needed_count(tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(AdvisorError, match="at least 4 training pairs, got 2"):
        run(spec_for("dpo", tiny_model_dir, parent_adapter, tmp_path, pair_rows(2)))
    floor = dataclasses.replace(spec_for("dpo", tiny_model_dir, parent_adapter, tmp_path, pair_rows(8)), min_pairs=MIN_DPO_PAIRS)
    with pytest.raises(AdvisorError, match=f"at least {MIN_DPO_PAIRS} training pairs, got 8: on fewer than {MIN_DPO_PAIRS} pairs DPO swings the advisor"):
        run(floor)
    with pytest.raises(AdvisorError, match="see 6 pairs, fewer than the 8"):
        run(dataclasses.replace(floor, min_pairs=8, max_steps=3))
    with pytest.raises(AdvisorError, match="both thumbs up and thumbs down"):
        run(spec_for("kto", tiny_model_dir, parent_adapter, tmp_path, [dict(r, label=True) for r in kto_rows()]))
    assert not (tmp_path / "dpo" / "adapter_model.safetensors").exists()


def test_reward_model_trains_scores_and_reranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = pair_rows(8)
    result = train_reward_model(str(tiny_model_dir), tmp_path, rows[:6], rows[6:], tmp_path / "rm",
                                RewardOptions(max_steps=6, learning_rate=5e-3, min_pairs=4), progress=False)
    assert result.metrics["steps"] == 6 and result.metrics["eval_pairs"] == 2
    assert 0.0 <= result.metrics["eval_accuracy"] <= 1.0
    assert 0.0 <= result.metrics["train_batch_accuracy"] <= 1.0  # TRL's own per-batch accuracy, no extra pass
    saved = load_file(tmp_path / "rm" / "adapter_model.safetensors")
    lora_b = {k: v for k, v in saved.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values()), "LoRA B starts at zero: every one must have moved"
    assert any("score" in k for k in saved), "the score head is trained and saved with the adapter"
    scorer = RewardScorer.load(str(tiny_model_dir), tmp_path, tmp_path / "rm")
    score = scorer.score(PROMPT, "Prediction: Up by 1-2%")
    assert isinstance(score, float)
    best = scorer.best_of(PROMPT, ["Prediction: Down by more than 5%", "Prediction: Up by 1-2%"])
    assert best in (0, 1)
    with pytest.raises(AdvisorError, match=f"at least {MIN_PAIRS} training pairs"):
        train_reward_model(str(tiny_model_dir), tmp_path, rows[:6], [], tmp_path / "rm2", progress=False)


def test_dpo_runs_unchanged_under_accelerate_with_two_cpu_processes(tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path) -> None:
    """Two real processes (gloo). accelerate 1.15 runs ``--cpu --num_processes 2`` as ONE process unless
    mpirun is installed; ``--multi_gpu --num_processes 2`` on a machine without GPUs starts two CPU ranks."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists() and shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    spec = spec_for("dpo", tiny_model_dir, parent_adapter, tmp_path, pair_rows(8), steps=2)
    spec_path = spec.save(tmp_path / "spec.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "rlhf.train_pref", str(spec_path)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 2
    assert_every_lora_tensor_changed(parent_adapter, tmp_path / "dpo")


def test_dpo_runs_unchanged_under_the_literal_accelerate_cpu_command(tiny_model_dir: Path, parent_adapter: Path, tmp_path: Path) -> None:
    """``accelerate launch --cpu --num_processes 2`` works as written; accelerate 1.15 starts one process for it
    here (multi-CPU needs mpirun), and the metrics say so instead of claiming two."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists() and shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    spec = spec_for("dpo", tiny_model_dir, parent_adapter, tmp_path, pair_rows(8), steps=2)
    spec_path = spec.save(tmp_path / "spec.json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "rlhf.train_pref", str(spec_path)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert metrics["processes"] in (1, 2) and metrics["steps"] == 2
    assert_every_lora_tensor_changed(parent_adapter, tmp_path / "dpo")
