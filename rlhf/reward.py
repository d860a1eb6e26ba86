"""The reward model: TRL RewardTrainer + LoRA with a sequence-classification head on the same base.

It learns to score a (prompt, view) pair so that chosen views score above rejected ones. Its
held-out pair accuracy is reported; at forecast time it can rerank sampled candidates (best of n).
SmolLM2 pads with its end-of-turn token, so the conversation is rendered with the chat template's
trailing newline and the score is read at the last non-padding token (transformers does this from
``pad_token_id``). Each pair's prompt runs once for both views (:mod:`rlhf.shared_prompt`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from advisor.errors import AdvisorError
from advisor.forecaster.loading import prepare_tokenizer
from advisor.forecaster.modelstore import resolve_model_path
from advisor.forecaster.training import Precision, training_attention
from rlhf.train_pref import MIN_DPO_PAIRS

MIN_PAIRS = MIN_DPO_PAIRS  # the same floor as DPO: fewer pairs cannot fit a score head that ranks anything


def load_scoring_model(base_path: Path, attention: str = "sdpa") -> Any:
    """The base causal LM with a one-output score head. The head is new by design, so transformers' load
    report ("score.weight MISSING ... newly initialized") is silenced here and only here."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32, attn_implementation=attention)
    finally:
        hf_logging.set_verbosity(verbosity)


@dataclass(frozen=True)
class RewardOptions:
    max_steps: int = 20
    batch_size: int = 2
    learning_rate: float = 5e-4
    lora_r: int = 8
    max_length: int = 1024
    seed: int = 0
    shared_prompt: bool = True  # run each pair's prompt once (exact); False: TRL's own forward (benchmark reference)
    min_pairs: int = MIN_PAIRS  # lower only for tests on toy data


@dataclass
class RewardResult:
    adapter_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def _texts(tokenizer: Any, row: dict[str, Any], key: str) -> str:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return prompt + row[key][0]["content"] + "<|im_end|>\n"
    return tokenizer.apply_chat_template(prompt + row[key], tokenize=False)


def train_reward_model(
    base_model: str, model_dir: Path, train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], out_dir: Path,
    options: RewardOptions = RewardOptions(), *, progress: bool = True,
) -> RewardResult:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf.shared_prompt import SharedPromptRewardTrainer

    if len(train_rows) < options.min_pairs:
        raise AdvisorError(f"the reward model needs at least {options.min_pairs} training pairs, got {len(train_rows)}")
    base_path = resolve_model_path(base_model, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    prepare_tokenizer(tokenizer)
    tokenizer.padding_side = "right"
    model = load_scoring_model(base_path, training_attention())
    model.config.pad_token_id = tokenizer.pad_token_id
    precision = Precision.auto()
    config = RewardConfig(
        output_dir=str(out_dir / "trainer"), use_cpu=precision.use_cpu, bf16=precision.bf16,
        per_device_train_batch_size=options.batch_size, max_steps=options.max_steps, learning_rate=options.learning_rate,
        max_length=options.max_length, gradient_checkpointing=False, save_strategy="no", report_to="none",
        logging_steps=max(1, options.max_steps // 5), seed=options.seed, disable_tqdm=not progress,
    )
    trainer_class = SharedPromptRewardTrainer if options.shared_prompt else RewardTrainer
    trainer = trainer_class(
        model=model, args=config, train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer,
        peft_config=LoraConfig(r=options.lora_r, lora_alpha=2 * options.lora_r, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"),
    )
    started = time.perf_counter()
    output = trainer.train()
    elapsed = time.perf_counter() - started
    cast(Any, trainer.model).save_pretrained(str(out_dir))
    (out_dir / "advisor-reward.json").write_text(json.dumps({"base_model": base_model}))
    scorer = RewardScorer(trainer.model, tokenizer)
    metrics = {
        "train_loss": float(output.training_loss),
        "steps": int(output.global_step),
        "seconds_per_step": round(elapsed / max(1, output.global_step), 2),
        "train_pairs": len(train_rows),
        "eval_pairs": len(eval_rows),
        # Rescoring the training pairs would cost a forward pass per text; TRL already measured each
        # batch's accuracy as it trained on it, which shows whether the model is fitting.
        "train_batch_accuracy": _logged_mean(trainer.state.log_history, "accuracy"),
        "eval_accuracy": scorer.pair_accuracy(eval_rows) if eval_rows else None,
        "bf16": precision.bf16,
    }
    return RewardResult(out_dir, metrics)


def _logged_mean(history: list[dict[str, Any]], key: str) -> float | None:
    values = [float(entry[key]) for entry in history if key in entry]
    return round(sum(values) / len(values), 4) if values else None


class RewardScorer:
    """Scores (prompt, view) pairs with a trained reward model."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, base_model: str, model_dir: Path, adapter_path: Path) -> RewardScorer:
        from peft import PeftModel
        from transformers import AutoTokenizer

        base_path = resolve_model_path(base_model, model_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        prepare_tokenizer(tokenizer)
        tokenizer.padding_side = "right"
        model = load_scoring_model(base_path)
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(PeftModel.from_pretrained(model, str(adapter_path)), tokenizer)

    def score_texts(self, texts: list[str], batch_size: int = 4) -> list[float]:
        import torch

        scores: list[float] = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False, truncation=True, max_length=1536)
            with torch.inference_mode():
                logits = self.model(**batch).logits
            scores.extend(float(x) for x in logits[:, 0])
        return scores

    def score(self, prompt: list[dict[str, str]] | str, completion: str) -> float:
        return self.score_texts([_texts(self.tokenizer, {"prompt": prompt, "c": [{"role": "assistant", "content": completion}]}, "c")])[0]

    def score_pairs(self, rows: list[dict[str, Any]], progress: str | None = None) -> list[tuple[float, float]]:
        """(score of ``chosen``, score of ``rejected``) per row, each pair's shared prompt run once.

        ``progress`` names a progress bar; None shows none."""
        import torch
        from tqdm.auto import tqdm

        from rlhf.shared_prompt import pair_rewards

        out: list[tuple[float, float]] = []
        for row in tqdm(rows, desc=progress, unit="pair", disable=progress is None):
            batch = self.tokenizer([_texts(self.tokenizer, row, "chosen"), _texts(self.tokenizer, row, "rejected")], return_tensors="pt",
                                   padding=True, add_special_tokens=False, truncation=True, max_length=1536)
            with torch.inference_mode():
                scores = pair_rewards(self.model, batch["input_ids"], batch["attention_mask"], self.tokenizer.pad_token_id)
            out.append((float(scores[0]), float(scores[1])))
        return out

    def pair_accuracy(self, rows: list[dict[str, Any]]) -> float | None:
        if not rows:
            return None
        return sum(c > r for c, r in self.score_pairs(rows)) / len(rows)

    def best_of(self, prompt: list[dict[str, str]] | str, candidates: list[str]) -> int:
        """Index of the highest-scoring candidate (best-of-n reranking)."""
        scores = [self.score(prompt, c) for c in candidates]
        return max(range(len(candidates)), key=lambda i: (scores[i], -i))
