"""How often do two users rank a pair of views differently? Over real bundle weeks, every pair of the 12 bins.

Prints, for the questionnaire's archetypes, the share of pairs both users label (utility gap above the
margin) on which they prefer different views, with a 95% bootstrap interval over weeks, for the
product's utility (loss aversion over the week's days) and, side by side, plain mean-variance
(loss aversion 1 for everyone: the utility before it).

    python bench/bench_preferences.py [--db var/advisor.db] [--start 2012-09-01 --end 2015-09-30] [--every 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEFAULT_BUNDLE, REPO, prepare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=REPO / "var" / "advisor.db", help="a database with the bundle imported")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2012, 9, 1))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2015, 9, 30))
    parser.add_argument("--every", type=int, default=1, help="use every n-th ticker (faster)")
    args = parser.parse_args()

    from advisor.data.store import PreloadedMarketStore
    from db.engine import make_engine, make_session_factory
    from rlhf.profiles import ARCHETYPES, score_answers
    from rlhf.utility import UserUtility, bundle_weeks, disagreement

    if args.db.is_file():
        factory = make_session_factory(make_engine(f"sqlite:///{args.db}"))
    else:
        scratch = Path(tempfile.mkdtemp()) / "bench.db"
        print(f"{args.db} not found: importing the bundle into {scratch}")
        factory = prepare(scratch, args.bundle, REPO / "var" / "models")
    users = {name: score_answers(answers) for name, answers in ARCHETYPES.items()}
    for name, scored in users.items():
        print(f"{name:12s} {scored.describe()}")
    started = time.perf_counter()
    with factory() as session:
        store = PreloadedMarketStore(session)
        tickers = store.tickers()[:: args.every]
        weeks = list(bundle_weeks(store, tickers, args.start, args.end))
    print(f"{len(weeks):,} ticker-weeks ({len(tickers)} tickers, {args.start} .. {args.end}), loaded in {time.perf_counter() - started:.1f} s")
    print()
    print("| users | utility | pairs labelled by both | disagree | share [95% CI over weeks] |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for a, b in (("conservative", "aggressive"), ("conservative", "moderate"), ("moderate", "aggressive")):
        for label, ua, ub in (
            ("loss-averse (product)", users[a].utility, users[b].utility),
            ("mean-variance (kappa 1)", UserUtility(users[a].params), UserUtility(users[b].params)),
        ):
            per_week = [disagreement([w], ua, ub) for w in weeks]
            labelled = np.array([d.labelled_by_both for d in per_week], dtype=float)
            differ = np.array([d.disagree for d in per_week], dtype=float)
            share = differ.sum() / labelled.sum()
            idx = rng.integers(0, len(weeks), size=(1000, len(weeks)))
            boot = differ[idx].sum(axis=1) / np.maximum(labelled[idx].sum(axis=1), 1)
            low, high = np.percentile(boot, [2.5, 97.5])
            print(f"| {a} vs {b} | {label} | {int(labelled.sum()):,} | {int(differ.sum()):,} | {share:.1%} [{low:.1%}, {high:.1%}] |")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
