"""Sentiment benchmark: scoring 1,000 real posts with the LoRA classifier and with naive Bayes, side by side.
Prints figures; asserts nothing.

Posts are the bundle's own (1,000 distinct tweets spread over its tweets file), scored in one
process after the model is loaded (load time reported apart). Also prints the TFNS validation figures
of both and how many of the 1,000 posts change label between the two scorers.

Run: .venv/bin/python bench/bench_sentiment.py [--posts 1000] [--adapter DIR]
Uses the newest adapter trained into --model-dir, else the shipped one, unless --adapter names another.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO.parent / "shared" / "data" / "stocknet"


def bundle_posts(bundle: Path, n: int) -> list[str]:
    """``n`` distinct posts spread over the bundle's tweets file (every k-th row, so not one ticker's first days)."""
    import pandas as pd

    texts = pd.read_csv(bundle / "tweets.csv.gz", usecols=["text"])["text"].astype(str).drop_duplicates()
    step = max(1, len(texts) // n)
    return texts.iloc[::step].head(n).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--posts", type=int, default=1000)
    args = parser.parse_args()

    import torch

    from advisor.config import DEFAULT_BASE_MODEL
    from advisor.forecaster.loading import cpu_has_native_bf16
    from advisor.forecaster.sentiment import find_tfns, load_scorer
    from advisor.forecaster.sentiment_lora import LABEL_NAMES, find_sentiment_adapter, load_classifier

    adapter = args.adapter or find_sentiment_adapter(args.model_dir)
    if adapter is None:
        print("skipped: no sentiment adapter yet (run 'advisor sentiment train' first, or pass --adapter)")
        return
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, native bf16: {cpu_has_native_bf16()}; adapter {adapter}")
    posts = bundle_posts(args.bundle, args.posts)
    tfns = find_tfns(args.bundle)
    naive = load_scorer(tfns)
    started = time.perf_counter()
    nb_labels = [naive.score(p) for p in posts]
    nb_s = time.perf_counter() - started

    started = time.perf_counter()
    classifier, _ = load_classifier(DEFAULT_BASE_MODEL, args.model_dir, adapter)
    load_s = time.perf_counter() - started
    classifier.predict(posts[:16])  # first-call setup, not part of the rate
    started = time.perf_counter()
    lora = classifier.predict(posts)
    lora_s = time.perf_counter() - started
    as_score = {0: -1, 1: 1, 2: 0}
    changed = sum(as_score[label] != nb for label, nb in zip(lora, nb_labels, strict=True))
    counts = {LABEL_NAMES[k]: sum(1 for label in lora if label == k) for k in LABEL_NAMES}
    print(f"{len(posts)} bundle posts: LoRA classifier {lora_s:.1f} s ({len(posts) / lora_s:.0f} posts/s; model load {load_s:.1f} s apart), "
          f"naive Bayes {nb_s:.2f} s; peak RSS {int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)} MB")
    print(f"labels from the LoRA classifier: {counts}; posts whose label differs from naive Bayes: {changed} of {len(posts)} ({changed / len(posts):.0%})")


if __name__ == "__main__":
    main()
