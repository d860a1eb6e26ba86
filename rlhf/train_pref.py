"""DPO and KTO on a user's LoRA adapter, starting from its parent (the SFT adapter).

The policy is the base model with the parent adapter loaded *trainable*; TRL adds a frozen copy of
that adapter as the reference, so the reference is the parent policy, and the trained adapter still
applies to the plain base (one loaded base serves every user's adapter). In a single process the
reference log-probs are computed once before training (``precompute_ref_log_probs``) when the run sees
every row, which saves a forward pass per step. Each pair's prompt runs once for both of its views
(:mod:`rlhf.shared_prompt`), in training and in the reference pass.

This module is also a script, so the same code runs data-parallel without changes:

    accelerate launch --multi_gpu --num_processes 2 -m rlhf.train_pref SPEC.json   # 2 ranks; CPU (gloo) without GPUs
    accelerate launch --config_file rlhf/configs/multi_gpu.yaml -m rlhf.train_pref SPEC.json
    accelerate launch --config_file rlhf/configs/deepspeed_zero2.yaml -m rlhf.train_pref SPEC.json

(accelerate 1.15 runs ``--cpu --num_processes 2`` as a single process: its multi-CPU launcher needs mpirun.
On a machine without GPUs ``--multi_gpu`` starts torch DDP ranks on the CPU with the gloo backend.)

SPEC.json holds a :class:`PreferenceSpec`; rows are read from ``rows_path`` (JSON lines). Only the
main process saves the adapter and writes ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from advisor.errors import AdvisorError
from advisor.forecaster.loading import prepare_tokenizer
from advisor.forecaster.modelstore import resolve_model_path

# The floor for a preference run. Measured (bench/bench_dpo_floor.py, a conservative user's pairs, DPO from
# the shipped adapter, one pass at the loop's batch and learning rate, 32 held-out windows): tiny runs are
# not harmless no-ops, they swing the advisor at random. 2 steps on 4 pairs changed the predicted bin of
# 94% of the views and the share of Down calls by +50 points [+31, +66]; 8 steps on 16 pairs changed 47%
# and the Down share by -44 points [-63, -28], against pairs whose chosen view calls Down 70% of the time.
# 16 is the least evidence the loop accepts; it does not make the direction of the change reliable.
MIN_DPO_PAIRS = 16
MIN_KTO_EXAMPLES = 4


@dataclass(frozen=True)
class PreferenceSpec:
    method: Literal["dpo", "kto"]
    base_model: str
    model_dir: str
    parent_adapter: str
    rows_path: str
    out_dir: str
    max_steps: int = 12
    batch_size: int = 2
    learning_rate: float = 2e-4
    beta: float = 0.1
    max_length: int = 1024
    seed: int = 0
    progress: bool = True
    shared_prompt: bool = True  # run each pair's prompt once (exact); False: TRL's own forward (benchmark reference)
    min_pairs: int = MIN_DPO_PAIRS  # lower only for tests on toy data
    validation_rows_path: str | None = None  # DPO: pairs from later training weeks that pick the step to keep
    eval_steps: int = 0  # evaluate the validation pairs every this many steps (0: keep the last step)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> PreferenceSpec:
        return cls(**json.loads(Path(path).read_text()))


def too_few_reason(method: str) -> str:
    if method == "dpo":
        return (f"on fewer than {MIN_DPO_PAIRS} pairs DPO swings the advisor on too little evidence (measured: 2 steps on 4 pairs moved "
                "the share of Down calls by 50 points; bench/bench_dpo_floor.py); collect more feedback, add candidates or let more "
                "forecast weeks finish")
    return "collect more thumbs (both up and down) or A/B choices"


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class BestStepSelector:
    """Keeps the adapter weights of the step with the lowest DPO loss on the validation pairs.

    Why: at the loop's learning rate DPO does not stop at the user's preference. A real run on a
    conservative user's pairs (70% prefer a Down view) went on until the adapter said "Down by 1-2%"
    for every window and ranked held-out pairs worse than its parent (README, "Personal tuning: the
    measured effect"). Pairs from the last training weeks, which the run does not train on, show when
    more steps stop helping; step 0 (the parent) is a candidate too, so a run that never improves them
    changes nothing. A transformers ``TrainerCallback`` (duck-typed: only ``on_evaluate`` matters).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.history: list[dict[str, float]] = []
        self.best_loss = float("inf")
        self.best_step = 0
        self.best_state: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not metrics or "eval_loss" not in metrics:
            return
        loss = float(metrics["eval_loss"])
        self.history.append({"step": int(state.global_step), "loss": round(loss, 4),
                             "accuracy": round(float(metrics.get("eval_rewards/accuracies", float("nan"))), 4)})
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, int(state.global_step)
            self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def restore_best(self) -> dict[str, Any]:
        """Load the best step's weights back; what was chosen and the validation curve."""
        import torch

        if self.best_state:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    if name in self.best_state:
                        param.copy_(self.best_state[name])
        return {"selected_step": self.best_step, "selected_validation_loss": round(self.best_loss, 4), "validation_curve": self.history}


def run(spec: PreferenceSpec) -> dict[str, Any]:
    """Train; returns metrics (on every process; only the main one saves)."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from advisor.forecaster.training import Precision, training_attention

    rows = read_rows(Path(spec.rows_path))
    minimum = spec.min_pairs if spec.method == "dpo" else MIN_KTO_EXAMPLES
    if len(rows) < minimum:
        raise AdvisorError(
            f"{spec.method.upper()} needs at least {minimum} training {'pairs' if spec.method == 'dpo' else 'rated views'}, "
            f"got {len(rows)}: {too_few_reason(spec.method)}"
        )
    if spec.method == "dpo" and spec.max_steps * spec.batch_size < minimum:
        raise AdvisorError(f"{spec.max_steps} DPO steps of {spec.batch_size} pairs see {spec.max_steps * spec.batch_size} pairs, fewer than "
                           f"the {minimum} the loop requires as evidence: raise the steps or the batch")
    if spec.method == "kto" and len({bool(r["label"]) for r in rows}) < 2:
        raise AdvisorError("KTO needs both thumbs up and thumbs down examples")
    base_path = resolve_model_path(spec.base_model, Path(spec.model_dir))
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    prepare_tokenizer(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, attn_implementation=training_attention())
    policy = PeftModel.from_pretrained(base, spec.parent_adapter, is_trainable=True)
    precision = Precision.auto()
    # Reference log-probs are precomputed once (a forward pass per row) instead of at every step. A
    # run shorter than an epoch would pay that for rows it never sees, so it trains on a seeded sample
    # of exactly the rows it has steps for (the trainer would sample that many anyway). TRL's precompute
    # writes a dataset cache file that other ranks read too early; several ranks compute the reference
    # log-probs live (through the frozen reference adapter) instead.
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    # TRL's KTO refuses a per-device batch of 1 (it needs desirable and undesirable views together).
    batch_size = spec.batch_size if spec.method == "dpo" else max(2, spec.batch_size)
    seen = spec.max_steps * batch_size
    if single_process and spec.method == "dpo" and len(rows) > seen:
        rows = random.Random(spec.seed).sample(rows, seen)
    common: dict[str, Any] = dict(
        output_dir=str(Path(spec.out_dir) / "trainer"), use_cpu=precision.use_cpu, bf16=precision.bf16,
        per_device_train_batch_size=batch_size, max_steps=spec.max_steps, learning_rate=spec.learning_rate,
        beta=spec.beta, max_length=spec.max_length, gradient_checkpointing=False, save_strategy="no", report_to="none",
        logging_steps=1, seed=spec.seed, disable_tqdm=not spec.progress, precompute_ref_log_probs=single_process,
    )
    validation = read_rows(Path(spec.validation_rows_path)) if spec.method == "dpo" and spec.validation_rows_path and spec.eval_steps else []
    if validation:
        common |= dict(eval_strategy="steps", eval_steps=spec.eval_steps, per_device_eval_batch_size=batch_size)
    started = time.perf_counter()
    selector = None
    trainer: Any
    if spec.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        from rlhf.shared_prompt import SharedPromptDPOTrainer

        trainer_class = SharedPromptDPOTrainer if spec.shared_prompt else DPOTrainer
        trainer = trainer_class(model=policy, args=DPOConfig(**common), train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                eval_dataset=Dataset.from_list(validation) if validation else None)
        if validation:
            selector = BestStepSelector(policy)
            trainer.add_callback(selector)
            trainer.evaluate()  # step 0: the parent itself, the step to keep when no later one does better
    else:
        from trl import KTOConfig, KTOTrainer

        trainer = KTOTrainer(model=policy, args=KTOConfig(**common), train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    prepared = time.perf_counter() - started  # includes the precomputed reference log-probs
    started = time.perf_counter()
    output = trainer.train()
    elapsed = time.perf_counter() - started
    selection = selector.restore_best() if selector is not None else None
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "method": spec.method,
        "train_loss": float(output.training_loss),
        "first_loss": logs[0]["loss"] if logs else None,
        "last_loss": logs[-1]["loss"] if logs else None,
        "steps": int(output.global_step),
        "seconds": round(elapsed, 1),
        "seconds_per_step": round(elapsed / max(1, output.global_step), 2),
        "reference_seconds": round(prepared, 1),  # trainer set-up, including the reference pass when precomputed
        "examples": len(rows),  # rows trained on (a seeded sample when the run is shorter than an epoch)
        "processes": trainer.accelerator.num_processes,
        "bf16": precision.bf16,
    }
    if selection is not None:
        metrics |= {"validation_pairs": len(validation), **selection}
    for key in ("rewards/accuracies", "rewards/margins"):
        values = [entry[key] for entry in trainer.state.log_history if key in entry]
        if values:
            metrics[key.replace("/", "_")] = values[-1]
    if trainer.accelerator.is_main_process:
        out = Path(spec.out_dir)
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        unwrapped.save_pretrained(str(out), selected_adapters=["default"])
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    trainer.accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m rlhf.train_pref SPEC.json", file=sys.stderr)
        return 2
    run(PreferenceSpec.load(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
