"""RLHF benchmarks on the real default model. Prints figures; asserts nothing.

  * reward-model and DPO step time, training tokens/s and peak memory (each in its own process), on
    pairs built from real prompts (~360 tokens) with two SFT-style answers — TRL's own trainers and
    the project's shared-prompt trainers (rlhf/shared_prompt.py) side by side on the same pairs, with
    the float32 matrix-multiply rate of this CPU measured in the same run as the ceiling;
  * with --full: the wall time of one whole ``advisor rlhf run`` for one user on 30 tickers x 20
    training weeks (+ 4 held-out weeks), K=4 candidates, reward model and DPO 150 steps of 2 pairs
    each, 120 held-out windows x 2; the loop prints its stage times as it goes.

Run: .venv/bin/python bench/bench_rlhf.py [--steps 10] [--full]
Needs the offline bundle; starts from the newest SFT adapter in the model directory, else the shipped one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from common import prepare  # bench/ is the script's directory, first on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO.parent / "shared" / "data" / "stocknet"
BASE = "SmolLM2-135M-Instruct"


def sft_adapter(model_dir: Path) -> Path:
    """The newest SFT adapter trained into ``model_dir``, else the one that ships with the project."""
    from advisor.forecaster.shipped import shipped_adapter

    found = sorted((model_dir / "adapters").glob("sft-run*/adapter_model.safetensors"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else shipped_adapter()


def pairs(factory, model_dir: Path, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from advisor.data.labels import Direction
    from advisor.data.store import PreloadedMarketStore
    from advisor.forecaster.modelstore import resolve_model_path
    from advisor.forecaster.prompts import PromptConfig, build_prompt
    from advisor.forecaster.sentiment import SentimentScorer
    from advisor.forecaster.service import WindowConfig
    from advisor.forecaster.sft import labelled_windows
    from advisor.forecaster.targets import sft_target

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE, model_dir))
    scorer = SentimentScorer(None)
    rows = []
    with factory() as session:
        store = PreloadedMarketStore(session)
        for window, label in labelled_windows(store, store.tickers(), date(2014, 6, 1), date(2015, 3, 31), WindowConfig(), 5, n):
            flipped = type(label)(**{**label.__dict__, "direction": Direction.DOWN if label.direction is Direction.UP else Direction.UP})
            prompt = build_prompt(window, tokenizer, PromptConfig())
            rows.append({"prompt": list(prompt.messages),
                         "chosen": [{"role": "assistant", "content": sft_target(window, label, scorer)}],
                         "rejected": [{"role": "assistant", "content": sft_target(window, flipped, scorer)}]})
    return rows


def child(kind: str, rows_path: Path, adapter: Path, out: Path, steps: int, model_dir: Path, shared: bool) -> dict:
    code = f"""
import json, resource, time
from pathlib import Path
from rlhf.train_pref import PreferenceSpec, run, read_rows
from rlhf.reward import RewardOptions, train_reward_model
rows = read_rows(Path({str(rows_path)!r}))
if {kind!r} == "reward":
    started = time.perf_counter()
    result = train_reward_model({BASE!r}, Path({str(model_dir)!r}), rows[:{steps} * 2], [], Path({str(out)!r}),
                                RewardOptions(max_steps={steps}, shared_prompt={shared!r}, min_pairs=1), progress=False)
    metrics = dict(result.metrics)
else:
    metrics = run(PreferenceSpec(method="dpo", base_model={BASE!r}, model_dir={str(model_dir)!r}, parent_adapter={str(adapter)!r},
                                 rows_path={str(rows_path)!r}, out_dir={str(out)!r}, max_steps={steps}, progress=False, shared_prompt={shared!r}, min_pairs=1))
metrics["peak_rss_mb"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT", json.dumps(metrics))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}")
    return json.loads(line[7:])


def pair_tokens(rows: list[dict], model_dir: Path) -> float:
    """Mean tokens of a pair's two full texts (what TRL computes)."""
    from transformers import AutoTokenizer

    from advisor.forecaster.modelstore import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE, model_dir))
    total = 0
    for row in rows:
        for key in ("chosen", "rejected"):
            total += len(tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True)["input_ids"])
    return total / (2 * len(rows))


def matmul_gflops(dtype_name: str) -> float:
    """The matrix-multiply rate at the training precision (bf16 autocast where the CPU has bf16 units)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(30):
        a @ b
    return 2 * 512 * 576 * 1536 * 30 / (time.perf_counter() - started) / 1e9


def non_embedding_parameters(model_dir: Path) -> int:
    from transformers import AutoConfig

    from advisor.forecaster.modelstore import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(BASE, model_dir))
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i)


def full_run(factory, model_dir: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from advisor.data.store import PreloadedMarketStore
    from db.engine import session_scope
    from rlhf.loop import LoopOptions, run_loop
    from rlhf.profiles import ARCHETYPES, save_profile

    with factory() as session:
        tickers = tuple(PreloadedMarketStore(session).tickers()[:30])
    with session_scope(factory) as session:
        save_profile(session, "bench-user", ARCHETYPES["moderate"])
    # the sizes of issue 17's bar: 600 training prompts x K=4; the reward model and DPO each one pass
    # over up to 300 pairs (150 steps of 2)
    options = LoopOptions(train_period=(date(2014, 10, 1), date(2015, 2, 20)), eval_period=(date(2015, 3, 2), date(2015, 3, 31)),
                          tickers=tickers, train_prompts=600, eval_prompts=120, candidates=4, eval_candidates=2, rm_steps=150, dpo_steps=150)
    from rich.console import Console

    started = time.perf_counter()
    result = run_loop(factory, model_dir, BASE, "bench-user", options, data_dir, Console())  # the loop prints its stage times
    elapsed = time.perf_counter() - started
    u = result.report.utility
    print(f"full rlhf run (30 tickers x 20 weeks, K=4, 4 held-out weeks): {elapsed / 60:.1f} min; {result.counts}; "
          f"held-out utility tuned {u['tuned']['value']:.5f} vs parent {u['parent']['value']:.5f}; activated {result.activated}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        factory = prepare(tmp / "bench.db", args.bundle, args.model_dir)
        adapter = sft_adapter(args.model_dir)
        from rlhf.train_pref import write_rows

        rows = pairs(factory, args.model_dir, 2 * args.steps)
        rows_path = write_rows(rows, tmp / "pairs.jsonl")
        tokens = pair_tokens(rows, args.model_dir)
        from advisor.forecaster.training import Precision

        precision = "bfloat16" if Precision.auto().bf16 else "float32"
        gflops = matmul_gflops(precision)
        flops_per_token = 4 * non_embedding_parameters(args.model_dir)  # forward 2N + input gradients 2N (LoRA: no weight gradients)
        print(f"this CPU: {precision} matrix multiply (the training precision) {gflops:.0f} GFLOP/s; ceiling for LoRA training ~{gflops * 1e9 / flops_per_token:.0f} tokens/s "
              f"(4 x {flops_per_token / 4 / 1e6:.0f} M non-embedding parameters per token); pairs of {tokens:.0f} tokens on average (prompt + both views)")
        for kind in ("reward", "dpo"):
            figures = {}
            for shared in (False, True):
                m = child(kind, rows_path, adapter, tmp / f"{kind}-{shared}", args.steps, args.model_dir, shared)
                figures[shared] = m
                per_second = 2 * 2 * tokens / m["seconds_per_step"]  # batch 2 pairs x (chosen + rejected) full texts
                label = "shared-prompt" if shared else "TRL's own   "
                print(f"{kind} {label}: {m['steps']} steps of batch 2: {m['seconds_per_step']} s/step ({per_second:.0f} training tokens/s), "
                      f"peak RSS {m['peak_rss_mb']} MB" + (f", set-up with reference pass {m['reference_seconds']} s" if kind == "dpo" else ""))
            print(f"{kind}: shared-prompt step {figures[False]['seconds_per_step'] / figures[True]['seconds_per_step']:.2f}x faster than TRL's own")
        if args.full:
            full_run(factory, args.model_dir, tmp)


if __name__ == "__main__":
    main()
