"""What does DPO on a few pairs do to the advisor? The measurement behind the loop's floor of pairs.

Takes a tuned user's own training pairs (from a database where ``advisor rlhf run`` has labelled them),
trains DPO from the same parent adapter on the first N of them (seeded order, one pass, the loop's
batch and learning rate) for each N, and counts on held-out windows how many greedy views change
against the parent: the predicted bin, and the text at all.

    python bench/bench_dpo_floor.py --data-dir var/scale --user scale-cautious --sizes 8,32 --heldout 48
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "scale")
    parser.add_argument("--model-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--user", default="scale-cautious")
    parser.add_argument("--sizes", default="8,32")
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--eval-start", type=date.fromisoformat, default=date(2015, 4, 1))
    parser.add_argument("--eval-end", type=date.fromisoformat, default=date(2015, 9, 30))
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()

    import sqlite3

    from advisor.config import load_settings
    from advisor.data.store import PreloadedMarketStore
    from advisor.forecaster.generation import Decoding
    from advisor.forecaster.loading import ModelSpec, load_model
    from advisor.forecaster.prompts import PromptConfig
    from advisor.forecaster.service import forecast_windows
    from advisor.runtime import Runtime
    from rlhf.datasets import pair_examples, time_split
    from rlhf.evaluate import mean_ci
    from rlhf.loop import heldout_grid
    from rlhf.profiles import get_user
    from rlhf.registry import handle_for
    from rlhf.train_pref import PreferenceSpec, write_rows
    from rlhf.train_pref import run as train

    if not (args.data_dir / "advisor.db").is_file():
        print(f"skipped: {args.data_dir / 'advisor.db'} does not exist. This benchmark reads a user's labelled pairs: run the "
              "loop first (README, 'Personal tuning: the measured effect'), then pass its --data-dir and --user.")
        return
    # A snapshot of the database (SQLite's backup API), so a tuning run writing to it meanwhile is not blocked;
    # the Runtime configures the post scorer as the product does (the TFNS model saved at import).
    scratch = Path(tempfile.mkdtemp())
    with sqlite3.connect(args.data_dir / "advisor.db") as source, sqlite3.connect(scratch / "advisor.db") as copy:
        source.backup(copy)
    rt = Runtime(load_settings(None, data_dir=str(scratch), model_dir=str(args.model_dir)))
    factory = rt.session_factory
    base_model = rt.settings.base_model
    with factory() as session:
        user = get_user(session, args.user)
        pairs = time_split(pair_examples(session, user), split_date=args.eval_start).train
        store = PreloadedMarketStore(session)
        windows = heldout_grid(store, store.tickers(), args.eval_start, args.eval_end, args.heldout, 0)
        parent, _ = handle_for(session, None, base_model, args.model_dir)  # the shared adapter every user's tuning starts from
    parent_adapter = parent.adapter_path
    random.Random(0).shuffle(pairs)
    print(f"{args.user}: {len(pairs)} training pairs; {len(windows)} held-out windows; parent adapter {parent_adapter}")
    with factory() as session:
        parent_views = [(g[0].view, g[0].forecast.raw_text) for g in forecast_windows(session, parent, windows, Decoding(), PromptConfig(), progress=False)]
        session.rollback()
    def down(view) -> float:  # noqa: ANN001
        return 1.0 if view.is_signal and (view.expected_return_pct or 0.0) < 0 else 0.0

    chosen_down = mean_ci([1.0 if "Prediction: Down" in p["chosen"][0]["content"] else 0.0 for p in pairs])
    print(f"share of chosen views that call Down in these pairs: {chosen_down['value']:.1%}; parent's Down share on the held-out "
          f"windows: {sum(down(v) for v, _ in parent_views) / len(parent_views):.1%}")
    print("\n| pairs | DPO steps | s/step | views with another bin [95% CI] | views with other text | Down share change, paired [95% CI] |")
    print("|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        if size > len(pairs):
            print(f"| {size} | — | — | only {len(pairs)} pairs | — |")
            continue
        out = Path(tempfile.mkdtemp()) / f"dpo-{size}"
        spec = PreferenceSpec(method="dpo", base_model=base_model, model_dir=str(args.model_dir), parent_adapter=str(parent_adapter),
                              rows_path=str(write_rows(pairs[:size], out / "train.jsonl")), out_dir=str(out),
                              max_steps=max(1, size // args.batch), batch_size=args.batch, progress=False,
                              min_pairs=1)  # below the floor on purpose: this measures it
        started = time.perf_counter()
        metrics = train(spec)
        handle = load_model(ModelSpec(base=base_model, adapter=out), args.model_dir)
        with factory() as session:
            views = [(g[0].view, g[0].forecast.raw_text) for g in forecast_windows(session, handle, windows, Decoding(), PromptConfig(), progress=False)]
            session.rollback()
        bins = mean_ci([1.0 if a[0].prediction_text != b[0].prediction_text else 0.0 for a, b in zip(views, parent_views, strict=True)])
        texts = sum(1 for a, b in zip(views, parent_views, strict=True) if a[1] != b[1])
        shift = mean_ci([down(a[0]) - down(b[0]) for a, b in zip(views, parent_views, strict=True)])
        print(f"| {size} | {metrics['steps']} | {metrics['seconds_per_step']} | {bins['value']:.1%} [{bins['low']:.1%}, {bins['high']:.1%}] "
              f"| {texts}/{len(views)} | {shift['value']:+.1%} [{shift['low']:+.1%}, {shift['high']:+.1%}] |  ({time.perf_counter() - started:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
