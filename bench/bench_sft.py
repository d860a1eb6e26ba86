"""SFT benchmark on the real default model: TRL's own SFTTrainer against the project's trainer. Prints figures.

Side by side in one run, each in its own process (so peak RSS is its own), same windows, same seed,
same steps and batch: TRL's stock ``SFTTrainer`` (logits at every position, transformers' attention);
the project's default trainer (answer-only logits, float32 attention under bf16 autocast; exact
gradient); and ``detach_prompt`` (each prompt run once without gradient; see advisor/forecaster/training.py). For each: s/step, training tokens/s, peak RSS, the
train loss, and the teacher-forced answer loss of the trained adapter on held-out windows of the dev
period (2015-04-01 .. 2015-09-30) — the number that says whether detaching the prompt costs quality.
The matrix-multiply rate of this CPU (float32 and, where native, bfloat16) is printed as the ceiling.

Run: .venv/bin/python bench/bench_sft.py [--steps 40] [--batch 4] [--heldout 64]
Uses a copy of the project database (var/advisor.db, with the bundle imported) so the runs it
registers do not land in yours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
BASE = "SmolLM2-135M-Instruct"
DEFAULT_BUNDLE = REPO.parent / "shared" / "data" / "stocknet"

CHILD = """
import json, resource, sys
from datetime import date
from pathlib import Path
import torch
from advisor.config import DEFAULT_BASE_MODEL
from advisor.data.store import PreloadedMarketStore
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.prompts import PromptConfig, build_prompt
from advisor.forecaster.sentiment import find_tfns, load_scorer
from advisor.forecaster.service import WindowConfig
from advisor.forecaster.sft import SFTOptions, labelled_windows, train_sft
from advisor.forecaster.targets import sft_target
from db.engine import make_engine, make_session_factory

db, model_dir, bundle, steps, batch, heldout, variant = sys.argv[1:8]
if variant == "stock":  # TRL's own SFTTrainer: full logits, transformers' attention, each row in full
    import trl
    from advisor.forecaster import sft
    class Stock(trl.SFTTrainer):
        def __init__(self, *a, detach_prompt=False, **k):
            super().__init__(*a, **k)
    sft.CompletionLogitsSFTTrainer = Stock
    sft.training_attention = lambda: "sdpa"
factory = make_session_factory(make_engine(f"sqlite:///{db}"))
scorer = load_scorer(find_tfns(Path(bundle)))
options = SFTOptions(date(2014, 1, 1), date(2015, 3, 31), DEFAULT_BASE_MODEL, max_steps=int(steps), batch_size=int(batch),
                     check_prompts=0, detach_prompt=variant == "detached")
result = train_sft(factory, Path(model_dir), options, scorer, progress=False)
metrics = dict(result.metrics)
metrics["peak_rss_mb"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
handle = load_model(ModelSpec(base=DEFAULT_BASE_MODEL, adapter=result.adapter_path, dtype="float32"), Path(model_dir))
with factory() as session:
    pairs = labelled_windows(PreloadedMarketStore(session), PreloadedMarketStore(session).tickers(), date(2015, 4, 1), date(2015, 9, 30),
                             WindowConfig(), 7, int(heldout))
total, tokens = 0.0, 0
tok = handle.tokenizer
with torch.inference_mode(), handle.activate() as model:
    for window, label in pairs:
        prompt = build_prompt(window, tok, PromptConfig())
        answer = tok.apply_chat_template(list(prompt.messages) + [{"role": "assistant", "content": sft_target(window, label, scorer)}], tokenize=False)
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        n = len(tok(prompt.text, add_special_tokens=False)["input_ids"])
        logits = model(torch.tensor([ids])).logits[0, n - 1 : -1].float()
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[n:]), reduction="sum"))
        tokens += len(ids) - n
metrics["heldout_answer_loss"] = total / tokens
metrics["heldout_windows"] = len(pairs)
print("RESULT", json.dumps(metrics))
"""


def run_child(db: Path, model_dir: Path, bundle: Path, steps: int, batch: int, heldout: int, variant: str) -> dict:
    args = [sys.executable, "-c", CHILD, str(db), str(model_dir), str(bundle), str(steps), str(batch), str(heldout), variant]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads(line[7:])
    metrics["wall_s"] = time.perf_counter() - started
    return metrics


def matmul_rates() -> dict[str, float]:
    import torch

    from advisor.forecaster.loading import cpu_has_native_bf16

    rates = {}
    for dtype in [torch.float32] + ([torch.bfloat16] if cpu_has_native_bf16() else []):
        a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        for _ in range(3):
            a @ b
        started = time.perf_counter()
        for _ in range(30):
            a @ b
        rates[str(dtype).replace("torch.", "")] = 2 * 512 * 576 * 1536 * 30 / (time.perf_counter() - started) / 1e9
    return rates


def mean_example_tokens(db: Path, model_dir: Path, bundle: Path, n: int = 64) -> tuple[float, float]:
    """Mean (prompt, answer) tokens of training examples, for tokens/s."""
    from datetime import date

    from transformers import AutoTokenizer

    from advisor.data.store import PreloadedMarketStore
    from advisor.forecaster.modelstore import resolve_model_path
    from advisor.forecaster.prompts import PromptConfig, build_prompt
    from advisor.forecaster.sentiment import find_tfns, load_scorer
    from advisor.forecaster.service import WindowConfig
    from advisor.forecaster.sft import labelled_windows
    from advisor.forecaster.targets import sft_target
    from db.engine import make_engine, make_session_factory

    tok = AutoTokenizer.from_pretrained(resolve_model_path(BASE, model_dir))
    scorer = load_scorer(find_tfns(bundle))
    factory = make_session_factory(make_engine(f"sqlite:///{db}"))
    with factory() as session:
        store = PreloadedMarketStore(session)
        pairs = labelled_windows(store, store.tickers(), date(2014, 1, 1), date(2015, 3, 31), WindowConfig(), 0, n)
    prompt_tokens = answer_tokens = 0
    for window, label in pairs:
        prompt = build_prompt(window, tok, PromptConfig())
        prompt_tokens += prompt.token_count
        answer_tokens += len(tok(sft_target(window, label, scorer), add_special_tokens=False)["input_ids"]) + 2
    return prompt_tokens / len(pairs), answer_tokens / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=REPO / "var" / "advisor.db")
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--variants", default="stock,exact,detached",
                        help="stock: TRL's SFTTrainer; exact: the default (answer-only logits, float32 attention); detached: --detach-prompt")
    args = parser.parse_args()
    if not args.db.is_file():
        raise SystemExit(f"no database at {args.db}: run 'advisor init' and 'advisor data import {args.bundle}' first")
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}; matmul ceiling "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in matmul_rates().items()))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        shutil.copy(args.db, db)
        models = Path(tmp) / "models"
        models.mkdir()
        (models / BASE).symlink_to((args.model_dir / BASE).resolve())
        prompt_tokens, answer_tokens = mean_example_tokens(db, models, args.bundle)
        per_step = args.batch * (prompt_tokens + answer_tokens)
        print(f"{args.steps} steps of batch {args.batch}; examples average {prompt_tokens:.0f} prompt + {answer_tokens:.0f} answer tokens; "
              f"held-out answer loss on {args.heldout} dev-period windows (float32, teacher forced)")
        results = {}
        variants = {"stock": "TRL SFTTrainer", "exact": "exact (default)", "detached": "detached prompt"}
        for variant in args.variants.split(","):
            m = run_child(db, models, args.bundle, args.steps, args.batch, args.heldout, variant)
            results[variant] = m
            print(f"{variants[variant]:16s} {m['seconds_per_step']:6.2f} s/step  {per_step / m['seconds_per_step']:7.0f} tokens/s  "
                  f"peak RSS {m['peak_rss_mb']:5d} MB  train loss {m['train_loss']:.3f}  held-out answer loss {m['heldout_answer_loss']:.3f}")
        reference = results.get("stock")
        for variant, m in results.items():
            if reference is not None and variant != "stock":
                print(f"{variants[variant]}: {reference['seconds_per_step'] / m['seconds_per_step']:.2f}x TRL's SFTTrainer per step; held-out answer loss "
                      f"{m['heldout_answer_loss'] - reference['heldout_answer_loss']:+.3f} against it")

if __name__ == "__main__":
    main()
