"""Sentiment benchmark: scoring 1,000 real posts with the LoRA classifier and with naive Bayes, side by side.
Prints figures; asserts nothing.

Posts are the bundle's own (1,000 distinct tweets spread over its tweets file), scored in one
process after the model is loaded (load time reported apart): by the classifier as the product serves
it (the decoding engine on the loaded base, :mod:`advisor.forecaster.tone`), by the transformers
classifier, and by naive Bayes; then how many of the 1,000 posts change label between naive Bayes and
the classifier. With ``--data-dir`` (a data directory holding the imported bundle) it also builds the
SFT targets of ``--windows`` training windows with both scorers and counts the posts whose tone and the
targets whose text change.

Run: .venv/bin/python bench/bench_sentiment.py [--posts 1000] [--adapter DIR] [--data-dir var --windows 500]
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
    parser.add_argument("--data-dir", type=Path, default=None, help="A data directory with the bundle imported (for the targets comparison).")
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--skip-transformers", action="store_true", help="Do not time the transformers classifier.")
    args = parser.parse_args()

    import torch

    from advisor.config import DEFAULT_BASE_MODEL
    from advisor.forecaster.loading import ModelSpec, cpu_has_native_bf16, load_base
    from advisor.forecaster.modelstore import adapter_hash
    from advisor.forecaster.sentiment import find_tfns, load_scorer
    from advisor.forecaster.sentiment_lora import LABEL_NAMES, adapter_layers, find_sentiment_adapter, load_classifier
    from advisor.forecaster.tone import ClassifierScorer, EngineSentimentClassifier, ToneCache

    adapter = args.adapter or find_sentiment_adapter(args.model_dir)
    if adapter is None:
        print("skipped: no sentiment adapter yet (run 'advisor sentiment train' first, or pass --adapter)")
        return
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, native bf16: {cpu_has_native_bf16()}; adapter {adapter} "
          f"(classifies from {adapter_layers(adapter) or 'all'} layers)")
    posts = bundle_posts(args.bundle, args.posts)
    naive = load_scorer(find_tfns(args.bundle))
    started = time.perf_counter()
    nb_labels = [naive.score(p) for p in posts]
    nb_s = time.perf_counter() - started

    started = time.perf_counter()
    base = load_base(ModelSpec(base=DEFAULT_BASE_MODEL), args.model_dir)
    served = EngineSentimentClassifier(base, adapter, adapter_hash(adapter))
    load_s = time.perf_counter() - started
    served.predict(posts[:16])  # first-call setup (the adapter merged into the engine's weights), not part of the rate
    started = time.perf_counter()
    lora = served.predict(posts)
    engine_s = time.perf_counter() - started
    line = f"{len(posts)} bundle posts: the classifier on the engine {engine_s:.1f} s ({len(posts) / engine_s:.0f} posts/s; base load {load_s:.1f} s apart)"
    if not args.skip_transformers:
        classifier, _ = load_classifier(DEFAULT_BASE_MODEL, args.model_dir, adapter)
        classifier.predict(posts[:16])
        started = time.perf_counter()
        reference = classifier.predict(posts)
        hf_s = time.perf_counter() - started
        same = sum(a == b for a, b in zip(lora, reference, strict=True))
        line += f", on transformers {hf_s:.1f} s (same label {same}/{len(posts)})"
    print(line + f", naive Bayes {nb_s:.2f} s; peak RSS {int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)} MB")
    as_score = {0: -1, 1: 1, 2: 0}
    changed = sum(as_score[label] != nb for label, nb in zip(lora, nb_labels, strict=True))
    counts = {LABEL_NAMES[k]: sum(1 for label in lora if label == k) for k in LABEL_NAMES}
    print(f"labels from the LoRA classifier: {counts}; posts whose label differs from naive Bayes: {changed} of {len(posts)} ({changed / len(posts):.0%})")
    if args.data_dir is not None:
        compare_targets(args.data_dir, args.windows, naive, ClassifierScorer(served.predict, adapter_hash(adapter), ToneCache(None), name=adapter.name))


def compare_targets(data_dir: Path, windows: int, naive: object, classifier: object) -> None:
    """SFT targets of ``windows`` training windows written with naive Bayes and with the classifier."""
    from datetime import date

    from advisor.data.store import PreloadedMarketStore
    from advisor.data.textselect import readable_quote
    from advisor.forecaster.service import WindowConfig
    from advisor.forecaster.sft import labelled_windows
    from advisor.forecaster.targets import sft_target
    from db.engine import make_engine, make_session_factory

    factory = make_session_factory(make_engine(f"sqlite:///{data_dir / 'advisor.db'}"))
    with factory() as session:
        store = PreloadedMarketStore(session)
        pairs = labelled_windows(store, store.tickers(), date(2014, 1, 1), date(2015, 3, 31), WindowConfig(), 0, windows)
    texts = [t.text for w, _ in pairs for week in w.weeks for t in week.texts if readable_quote(t.text) is not None]
    started = time.perf_counter()
    classifier.prepare(texts)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    differ = sum(naive.score(t) != classifier.score(t) for t in texts)  # type: ignore[attr-defined]
    targets = sum(sft_target(w, label, naive) != sft_target(w, label, classifier) for w, label in pairs)  # type: ignore[arg-type]
    print(f"SFT targets of {len(pairs)} training windows (2014-01 .. 2015-03): {len(texts)} quotable posts, read by the classifier in {seconds:.1f} s; "
          f"tone differs from naive Bayes on {differ} ({differ / max(1, len(texts)):.0%}); target text differs in {targets} of {len(pairs)} "
          f"({targets / max(1, len(pairs)):.0%})")


if __name__ == "__main__":
    main()
