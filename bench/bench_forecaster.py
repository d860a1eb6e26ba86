"""Forecaster benchmarks on the real default model. Prints figures; asserts nothing.

  * generation tokens/s at batch 1, 8 and 16 (our generate(), auto dtype, no early stop);
  * views per minute for N tickers (default 30): our pipeline (batch 16, early stop) vs a plain
    one-prompt-at-a-time ``model.generate`` loop, same model, same prompts, same token cap, same run;
  * SFT step time and peak memory (a fresh SFT run in a child process);
  * parse rate of held-out prompts before (base) and after SFT.

Run: .venv/bin/python bench/bench_forecaster.py [--views 30] [--sft-steps 60] [--sft-batch 4] [--heldout 48]
(~15 minutes with the defaults on a 2-core CPU with bf16 units, about three times that on one
without; ``--views 12 --sft-steps 12 --sft-batch 2 --heldout 16`` is a quick run). Needs the offline bundle.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO.parent / "shared" / "data" / "stocknet"
TRAIN = (date(2014, 1, 1), date(2015, 3, 31))
HELDOUT = (date(2015, 4, 1), date(2015, 9, 30))


def bench_generation(factory, model_dir: Path, n_views: int) -> None:  # type: ignore[no-untyped-def]
    import torch

    from advisor.data.store import PreloadedMarketStore
    from advisor.forecaster.generation import Decoding, generate
    from advisor.forecaster.loading import ModelSpec, load_model
    from advisor.forecaster.prompts import PromptConfig
    from advisor.forecaster.service import WindowConfig, build_prompts

    handle = load_model(ModelSpec(), model_dir)
    with factory() as session:
        store = PreloadedMarketStore(session)
        tickers = store.tickers()[:n_views]
        windows = [WindowConfig().build(store, t, date(2015, 6, 5)) for t in tickers]
    decoding = Decoding()
    prompts = build_prompts(windows, handle, PromptConfig(), decoding)
    print(f"prompts: {len(prompts)}, mean {sum(p.token_count for p in prompts) / len(prompts):.0f} tokens; dtype {handle.base.dtype}")

    for batch in (1, 8, 16):
        # One full batch of prompts (two single prompts for batch 1), 64 new tokens each, no early stop.
        subset = [prompts[i % len(prompts)] for i in range(max(batch, 2))]
        started = time.perf_counter()
        out = generate(handle, [p.text for p in subset], [p.hash for p in subset], Decoding(max_new_tokens=64, batch_size=batch, early_stop=False), progress=False)
        elapsed = time.perf_counter() - started
        tokens = sum(g[0].new_tokens for g in out)
        print(f"generate(): batch {batch}: {tokens / elapsed:.1f} new tokens/s ({tokens} tokens, {len(subset)} prompts, {elapsed:.1f} s, prefill included)")

    started = time.perf_counter()
    ours = generate(handle, [p.text for p in prompts], [p.hash for p in prompts], Decoding(), progress=False)
    ours_s = time.perf_counter() - started
    tokenizer = handle.tokenizer
    started = time.perf_counter()
    plain_tokens = 0
    with handle.activate() as model, torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt.text, return_tensors="pt", add_special_tokens=False)
            output = model.generate(**ids, max_new_tokens=Decoding().max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            plain_tokens += output.shape[1] - ids["input_ids"].shape[1]
    plain_s = time.perf_counter() - started
    ours_tokens = sum(g[0].new_tokens for g in ours)
    print(
        f"{len(prompts)} tickers (base model, up to {Decoding().max_new_tokens} new tokens): our pipeline {len(prompts) / ours_s * 60:.1f} views/min "
        f"({ours_tokens / ours_s:.0f} tok/s); plain one-at-a-time model.generate {len(prompts) / plain_s * 60:.1f} views/min "
        f"({plain_tokens / plain_s:.0f} tok/s)"
    )


def bench_sft(db_path: Path, model_dir: Path, steps: int, batch: int) -> Path:
    """SFT in a child process so its peak RSS is its own."""
    code = f"""
import json
from datetime import date
from pathlib import Path
from advisor.forecaster.sft import SFTOptions, train_sft
from advisor.forecaster.sentiment import find_tfns, load_scorer
from db.engine import make_engine, make_session_factory
factory = make_session_factory(make_engine("sqlite:///{db_path}"))
scorer = load_scorer(find_tfns(Path({str(DEFAULT_BUNDLE)!r})))
result = train_sft(factory, Path({str(model_dir)!r}), SFTOptions(start=date{TRAIN[0].timetuple()[:3]}, end=date{TRAIN[1].timetuple()[:3]},
    base_model="SmolLM2-135M-Instruct", max_steps={steps}, batch_size={batch}, check_prompts=0), scorer, progress=False)
print("RESULT", json.dumps({{"adapter": str(result.adapter_path), **result.metrics}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"SFT failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(line[len("RESULT ") :])
    print(
        f"SFT: {metrics['steps']} steps of batch {batch} in {metrics['seconds']} s = {metrics['seconds_per_step']} s/step; "
        f"peak RSS {metrics['peak_rss_mb']} MB; loss {metrics['first_logged_loss']:.3f} -> {metrics['last_logged_loss']:.3f}; bf16 {metrics['bf16']}"
    )
    return Path(metrics["adapter"])


def bench_parse_rate(factory, model_dir: Path, adapter: Path, n: int) -> None:  # type: ignore[no-untyped-def]
    from advisor.forecaster.evaluation import collect_windows, score_model
    from advisor.forecaster.generation import Decoding
    from advisor.forecaster.loading import ModelSpec, load_model
    from advisor.forecaster.prompts import PromptConfig
    from advisor.forecaster.service import WindowConfig

    windows = collect_windows(factory, *HELDOUT, tickers=None, max_windows=n, seed=11, window_config=WindowConfig())
    for name, spec in (("base (untuned)", ModelSpec()), ("after SFT", ModelSpec(adapter=adapter))):
        started = time.perf_counter()
        scored = score_model(factory, load_model(spec, model_dir), windows, Decoding(), PromptConfig(), progress=False)
        rate = sum(s.parsed for s in scored) / len(scored)
        print(f"parse rate {name}: {rate:.1%} of {len(scored)} held-out prompts ({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--views", type=int, default=30, help="tickers in the views-per-minute comparison")
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--sft-batch", type=int, default=4)
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--only", choices=("generation", "sft"), help="run one part (sft includes the parse rates)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        factory = prepare(db_path, args.bundle, args.model_dir)
        if args.only != "sft":
            bench_generation(factory, args.model_dir, args.views)
        if args.only != "generation":
            adapter = bench_sft(db_path, args.model_dir, args.sft_steps, args.sft_batch)
            bench_parse_rate(factory, args.model_dir, adapter, args.heldout)


if __name__ == "__main__":
    main()
