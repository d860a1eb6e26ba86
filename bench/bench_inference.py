"""Inference benchmarks on the real default model + an SFT adapter. Prints figures; asserts nothing.

Side by side in one run, each path in its own process (so peak RSS is its own), same prompts, same
adapter, same token cap (160):

  * greedy weekly views for N tickers on one date (default 30): plain transformers ``generate``
    (batch 16, free text: what a transformers user writes), the project's transformers backend and
    the engine backend, both decoding as the product does (grounded: each view's facts constrained to
    its window, see advisor/forecaster/grounding.py); wall time (model load excluded and reported
    apart), views/min, new tokens/s, peak RSS; the engine's time split into prefill and decode passes;
  * agreement of the engine's greedy views with the transformers backend's: identical text, parse
    rate, same predicted bin;
  * sampled candidates (default 200 prompts x 4, grounded): the engine on all of them; the transformers
    backend on a subset (default 16 prompts), reported as a rate because the full set would take
    most of an hour there;
  * the adapter's first use on the engine (stacking its LoRA factors and merging them into the
    engine's weights — the engine's only "conversion"), and ``advisor forecast`` end to end for the
    N tickers (process start, imports and model load included).

Run: .venv/bin/python bench/bench_inference.py [--views 30] [--prompts 200] [--candidates 4] [--reference-prompts 16]
Needs the offline bundle; uses the shipped SFT adapter unless --adapter names another.
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
BASE = "SmolLM2-135M-Instruct"
VIEW_DATE = date(2015, 6, 5)
SAMPLE_PERIOD = (date(2015, 4, 1), date(2015, 9, 30))
BUNDLE = [DEFAULT_BUNDLE]  # set from --bundle; the children read the sentiment set next to it


def sft_adapter(requested: Path | None) -> Path:
    """``--adapter`` if given, else the adapter that ships with the project (what a fresh clone serves)."""
    from advisor.forecaster.shipped import shipped_adapter

    return requested if requested is not None else shipped_adapter()


def prompts(factory, model_dir: Path, n_views: int, n_sampled: int) -> dict:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from advisor.data.store import PreloadedMarketStore
    from advisor.data.windows import Horizon, decision_dates
    from advisor.errors import DataUnavailableError
    from advisor.forecaster.loading import prepare_tokenizer
    from advisor.forecaster.modelstore import resolve_model_path
    from advisor.forecaster.prompts import PromptConfig, build_prompt
    from advisor.forecaster.service import WindowConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE, model_dir))
    prepare_tokenizer(tokenizer)
    out: dict = {"views": [], "sampled": []}
    with factory() as session:
        store = PreloadedMarketStore(session)
        tickers = store.tickers()
        for ticker in tickers:
            if len(out["views"]) >= n_views:
                break
            try:
                window = WindowConfig().build(store, ticker, VIEW_DATE)
            except DataUnavailableError:
                continue
            out["views"].append(_prompt(build_prompt(window, tokenizer, PromptConfig()), ticker, VIEW_DATE))
        for day in decision_dates(*SAMPLE_PERIOD, Horizon.WEEK):
            for ticker in tickers:
                if len(out["sampled"]) >= n_sampled:
                    break
                try:
                    window = WindowConfig().build(store, ticker, day)
                except DataUnavailableError:
                    continue
                out["sampled"].append(_prompt(build_prompt(window, tokenizer, PromptConfig()), ticker, day))
    return out


def _prompt(prompt, ticker: str, day: date) -> dict:  # type: ignore[no-untyped-def]
    return {"ticker": ticker, "date": str(day), "text": prompt.text, "hash": prompt.hash, "tokens": prompt.token_count}


CHILD = r"""
import json, resource, sys, time
spec = json.loads(sys.argv[1])
import torch
from pathlib import Path
started = time.perf_counter()
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.generation import Decoding, generate
handle = load_model(ModelSpec(base=spec["base"], adapter=Path(spec["adapter"])), Path(spec["model_dir"]))
load_s = time.perf_counter() - started
items = json.load(open(spec["prompts"]))[spec["set"]][: spec["limit"]]
texts, hashes = [p["text"] for p in items], [p["hash"] for p in items]
result = {"load_s": round(load_s, 2), "prompts": len(items)}
if spec["path"] == "plain":
    tok = handle.tokenizer
    started = time.perf_counter()
    outs, new = [], 0
    with handle.activate() as model, torch.inference_mode():
        for s in range(0, len(texts), 16):
            enc = tok(texts[s : s + 16], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=160, do_sample=False, pad_token_id=tok.pad_token_id)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                ids = row.tolist()
                if tok.eos_token_id in ids:
                    ids = ids[: ids.index(tok.eos_token_id)]
                new += len(ids)
                outs.append([tok.decode(ids, skip_special_tokens=True).strip()])
    result["seconds"] = time.perf_counter() - started
else:
    if spec["path"] == "engine":
        from advisor.forecaster.backends.fast import engine_adapter, engine_for
        started = time.perf_counter()
        engine_for(handle.base)._weights_for(engine_adapter(handle))
        result["adapter_first_use_s"] = round(time.perf_counter() - started, 2)
    # grounded, as the product decodes: the windows again from the database, the posts' tone read as the views
    # read it (the LoRA sentiment classifier where it can be served, else naive Bayes), before the clock starts
    from datetime import date
    from advisor.data.store import PreloadedMarketStore
    from advisor.forecaster.grounding import grounding_for
    from advisor.forecaster.prompts import PromptConfig, build_prompt
    from advisor.forecaster.sentiment import find_tfns, load_scorer
    from advisor.forecaster.service import WindowConfig
    from db.engine import make_engine, make_session_factory
    from advisor.forecaster.tone import classifier_scorer
    scorer = classifier_scorer(Path(spec["model_dir"])) or load_scorer(find_tfns(Path(spec["bundle"])))
    groundings = []
    with make_session_factory(make_engine("sqlite:///" + spec["db"]))() as session:
        store = PreloadedMarketStore(session)
        for item in items:
            window = WindowConfig().build(store, item["ticker"], date.fromisoformat(item["date"]))
            prompt = build_prompt(window, handle.tokenizer, PromptConfig())
            assert prompt.hash == item["hash"]
            scorer.prepare(t.text for week in window.weeks for t in week.texts if t.id in set(prompt.text_item_ids))
            groundings.append(grounding_for(window, scorer, prompt.text_item_ids, PromptConfig().max_text_chars))
    split = {"prefill_s": 0.0, "decode_s": 0.0, "decode_passes": 0}
    if spec["path"] == "engine":
        from advisor.forecaster.engine import DecoderEngine
        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter(); out = fn(*a, **k); split[name] += time.perf_counter() - t
                if name == "decode_s": split["decode_passes"] += 1
                return out
            return wrapper
        DecoderEngine._admit = timed("prefill_s", DecoderEngine._admit)
        DecoderEngine._decode_step = timed("decode_s", DecoderEngine._decode_step)
    decoding = Decoding() if spec["candidates"] == 1 else Decoding(mode="sample", num_candidates=spec["candidates"], seed=3)
    started = time.perf_counter()
    gens = generate(handle, texts, hashes, decoding, progress=False, backend=spec["path"], groundings=groundings)
    result["seconds"] = time.perf_counter() - started
    result |= {k: round(v, 2) for k, v in split.items()}
    outs = [[g.text for g in row] for row in gens]
    new = sum(g.new_tokens for row in gens for g in row)
result["new_tokens"] = new
result["texts"] = outs
result["peak_rss_mb"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps(result))
"""


def child(path: str, prompt_file: Path, which: str, limit: int, candidates: int, adapter: Path, model_dir: Path) -> dict:
    spec = {"path": path, "prompts": str(prompt_file), "set": which, "limit": limit, "candidates": candidates,
            "adapter": str(adapter), "model_dir": str(model_dir), "base": BASE, "db": str(prompt_file.parent / "bench.db"),
            "bundle": str(BUNDLE[0])}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{path} child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def describe(name: str, r: dict, candidates: int = 1) -> str:
    views = r["prompts"] * candidates
    split = (f"; prefill {r['prefill_s']} s, decode {r['decode_s']} s in {r['decode_passes']} passes"
             if r.get("decode_passes") else "")
    return (f"{name:<28} {r['seconds']:7.1f} s  {views / r['seconds'] * 60:6.1f} views/min  {r['new_tokens'] / r['seconds']:6.1f} new tokens/s  "
            f"peak RSS {r['peak_rss_mb']:5d} MB  (model load {r['load_s']} s{split})")


def agreement(engine: dict, reference: dict) -> str:
    from advisor.forecaster.views import parse_view

    a = [parse_view(t[0]) for t in engine["texts"]]
    b = [parse_view(t[0]) for t in reference["texts"]]
    n = len(a)
    same_text = sum(x[0] == y[0] for x, y in zip(engine["texts"], reference["texts"], strict=True))
    same_bin = sum(x.is_signal and y.is_signal and x.direction == y.direction and x.magnitude == y.magnitude for x, y in zip(a, b, strict=True))
    return (f"engine vs transformers backend, {n} greedy views: identical text {same_text}/{n}, parsed {sum(x.is_signal for x in a)}/{n} "
            f"vs {sum(y.is_signal for y in b)}/{n}, same predicted bin {same_bin}/{n}")


def cli_forecast(db_path: Path, model_dir: Path, tickers: list[str], backend: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "advisor"), "--db-url", f"sqlite:///{db_path}", "--model-dir", str(model_dir),
         "forecast", "--tickers", ",".join(tickers), "--date", str(VIEW_DATE), "--backend", backend],
        capture_output=True, text=True, cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"advisor forecast failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--adapter", type=Path, default=None, help="an SFT adapter directory (default: the shipped one)")
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--reference-prompts", type=int, default=16)
    args = parser.parse_args()
    BUNDLE[0] = args.bundle
    import torch

    from advisor.forecaster.loading import cpu_has_native_bf16

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, native bf16: {cpu_has_native_bf16()}, CUDA: {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db_path = tmp / "bench.db"
        factory = prepare(db_path, args.bundle, args.model_dir)
        adapter = sft_adapter(args.adapter)
        data = prompts(factory, args.model_dir, args.views, args.prompts)
        prompt_file = tmp / "prompts.json"
        prompt_file.write_text(json.dumps(data))
        mean_tokens = sum(p["tokens"] for p in data["views"]) / len(data["views"])
        print(f"adapter {adapter.name}; {len(data['views'])} weekly prompts on {VIEW_DATE} (mean {mean_tokens:.0f} tokens), "
              f"{len(data['sampled'])} prompts for sampling; up to 160 new tokens")

        print(f"\n== {len(data['views'])} greedy weekly views")
        plain = child("plain", prompt_file, "views", args.views, 1, adapter, args.model_dir)
        reference = child("transformers", prompt_file, "views", args.views, 1, adapter, args.model_dir)
        engine = child("engine", prompt_file, "views", args.views, 1, adapter, args.model_dir)
        print(describe("plain generate (b16, free)", plain))
        print(describe("transformers backend", reference))
        print(describe("engine backend", engine))
        print(f"engine: {plain['seconds'] / engine['seconds']:.2f}x plain generate, {reference['seconds'] / engine['seconds']:.2f}x the transformers backend; "
              f"adapter first use (LoRA stacked and merged) {engine['adapter_first_use_s']} s")
        print(agreement(engine, reference))
        cli_s = cli_forecast(db_path, args.model_dir, [p["ticker"] for p in data["views"]], "engine")
        print(f"advisor forecast --backend engine, {len(data['views'])} tickers, whole command (imports, model load, prompts, storage): {cli_s:.1f} s")

        k = args.candidates
        print(f"\n== sampled candidates: {len(data['sampled'])} prompts x {k}")
        sampled = child("engine", prompt_file, "sampled", args.prompts, k, adapter, args.model_dir)
        print(describe(f"engine backend ({sampled['prompts']}x{k})", sampled, k))
        subset = child("transformers", prompt_file, "sampled", args.reference_prompts, k, adapter, args.model_dir)
        print(describe(f"transformers ({subset['prompts']}x{k})", subset, k))
        projected = subset["seconds"] / subset["prompts"] * sampled["prompts"]
        print(f"transformers backend projected to {sampled['prompts']}x{k}: {projected / 60:.1f} min (engine: {sampled['seconds'] / 60:.1f} min, "
              f"{projected / sampled['seconds']:.2f}x)")


if __name__ == "__main__":
    main()
