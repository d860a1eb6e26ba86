"""SFT: completion-only logits give the same loss, training trains, runs are recorded, failures too."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from advisor.forecaster.sentiment import SentimentScorer
from advisor.forecaster.service import WindowConfig
from advisor.forecaster.sft import SFTOptions, TooFewExamplesError, candidate_pairs, train_sft
from advisor.forecaster.training import CompletionLogitsSFTTrainer, completion_loss, detached_prompt_loss
from db.models import ModelVersion, TrainingRun


def test_completion_loss_equals_the_full_loss(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (3, 40))
    labels = ids.clone()
    labels[0, :30] = -100
    labels[1, :12] = -100
    labels[2, :35] = -100
    labels[2, 38:] = -100
    mask = torch.ones_like(ids)
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    fast, correct, count = completion_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert torch.allclose(full, fast, atol=1e-5)
    assert count == int((labels[:, 1:] != -100).sum()) and 0 <= int(correct) <= count


def test_float32_attention_under_bf16_autocast_matches_the_float32_model_and_trains(tiny_model_dir: Path) -> None:
    """Training's attention (training.py): computed in float32 inside bf16 autocast, padded rows included."""
    from transformers import AutoModelForCausalLM

    from advisor.forecaster.training import FLOAT32_SDPA, register_float32_sdpa

    register_float32_sdpa()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=FLOAT32_SDPA)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0  # a right-padded row
    expected = reference(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5)  # float32 in: the same, padding too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(logits).all() and (logits.float() - expected).abs().max() < 0.5
    logits.float()[mask.bool()].logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_the_detached_prompt_loss_has_the_same_value_and_trains_the_answer_path(tiny_model_dir: Path) -> None:
    """Same loss value (right-padded rows, as TRL's collator pads); gradients flow into every layer."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 40))
    labels = ids.clone()
    labels[0, :30] = -100
    labels[1, :12] = -100
    mask = torch.ones_like(ids)
    mask[1, 34:] = 0  # right padding
    labels[1, 34:] = -100
    exact, _, exact_count = completion_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    detached, correct, count = detached_prompt_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert count == exact_count and 0 <= int(correct) <= count
    assert torch.allclose(exact, detached, atol=1e-5)
    detached.backward()
    grads = [p.grad for name, p in model.named_parameters() if "layers" in name and "proj" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_training_changes_every_trainable_parameter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [
        {"prompt": [{"role": "user", "content": f"Week {i}: stock rose {i}%."}], "completion": [{"role": "assistant", "content": "Prediction: Up by 1-2%"}]}
        for i in range(8)
    ]
    trainer = CompletionLogitsSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, per_device_train_batch_size=4, max_steps=3,
                       learning_rate=1e-2, report_to="none", save_strategy="no", gradient_checkpointing=False, disable_tqdm=True),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        detach_prompt=True,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert before
    for name, param in trainer.model.named_parameters():
        if name in before:
            assert not torch.equal(param, before[name]), f"{name} did not change"
    assert any("mean_token_accuracy" in entry for entry in trainer.state.log_history)


def test_training_period_excludes_labels_after_its_end(market) -> None:
    from advisor.data.store import SqlMarketStore

    with market() as session:
        pairs = candidate_pairs(SqlMarketStore(session), ["AAA"], date(2014, 2, 1), date(2014, 4, 30), seed=0)
    days = sorted(d for _, d in pairs)
    assert days[0] >= date(2014, 2, 1)
    assert days[-1] == date(2014, 4, 17), "the week after 2014-04-25 ends in May, outside the period"


def test_train_sft_records_the_run_and_registers_the_adapter(market, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = SFTOptions(
        start=date(2014, 2, 1), end=date(2014, 4, 30), base_model=str(tiny_model_dir), max_steps=2, batch_size=2,
        check_prompts=2, window=WindowConfig(periods=2, texts_per_period=1),
    )
    result = train_sft(market, tmp_path / "models", options, SentimentScorer(None), progress=False)
    assert (result.adapter_path / "adapter_model.safetensors").is_file()
    meta = json.loads((result.adapter_path / "advisor-adapter.json").read_text())
    assert meta["kind"] == "sft" and len(meta["base_fingerprint"]) == 64
    with market() as session:
        run = session.get(TrainingRun, result.run_id)
        version = session.get(ModelVersion, result.model_version_id)
        parent = session.get(ModelVersion, version.parent_id)
        assert run.status == "succeeded" and run.output_model_version_id == version.id
        assert run.data_snapshot["examples"] == 4 and run.data_snapshot["period"] == ["2014-02-01", "2014-04-30"]
        assert len(run.data_snapshot["dataset_sha256"]) == 64
        assert run.metrics["steps"] == 2 and run.metrics["heldout_prompts"] == 2
        assert 0 <= run.metrics["heldout_parse_rate"] <= 1
        assert version.kind == "sft" and parent.kind == "base" and version.adapter_hash


def test_too_few_examples_fails_the_run_and_registers_nothing(market, tiny_model_dir: Path, tmp_path: Path) -> None:
    options = SFTOptions(start=date(2014, 1, 1), end=date(2014, 1, 20), base_model=str(tiny_model_dir), max_steps=2, batch_size=2)
    with pytest.raises(TooFewExamplesError, match="at least 2"):
        train_sft(market, tmp_path / "models", options, SentimentScorer(None), progress=False)
    with market() as session:
        run = session.scalars(select(TrainingRun)).one()
        assert run.status == "failed" and "TooFewExamplesError" in run.error
        assert session.scalars(select(ModelVersion)).all() == []
