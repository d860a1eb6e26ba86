"""Backtest benchmark: every ticker of the bundle, its whole history, weekly rebalancing.

Decisions come from the momentum reference views through the real portfolio function (no model
needed); they are computed once, then both engines replay the same decisions so the figures compare
the engines alone. Prints wall time and bars per second for Backtrader and the vectorised path, and
their largest relative difference in daily equity.

Run: .venv/bin/python bench/bench_backtest.py [--bundle ../shared/data/stocknet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stocknet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    args = parser.parse_args()

    from advisor.data.importer import import_bundle
    from advisor.data.store import PreloadedMarketStore
    from advisor.data.windows import weekly_decision_dates
    from advisor.portfolio import preset
    from backtest.decisions import Decider, Momentum
    from backtest.engine import CostModel, adjusted_ohlc, run_backtrader
    from backtest.vectorized import run_vectorized
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        factory = make_session_factory(engine)
        import_bundle(factory, args.bundle, progress=False)
        with factory() as session:
            store = PreloadedMarketStore(session)
            tickers = tuple(store.tickers())
            spans = [store.date_range(t) for t in tickers]
            start, end = min(s[0] for s in spans), max(s[1] for s in spans)
            prices = {t: adjusted_ohlc(store.outcome_bars(t, start, end)) for t in tickers}
            bars = sum(len(f) for f in prices.values())
            decisions = weekly_decision_dates(start, end)
            started = time.perf_counter()
            decider = Decider(store, Momentum(store), preset("aggressive"), tickers)
            weights = {d: decider(d) for d in decisions}
            decide_s = time.perf_counter() - started
        costs = CostModel()
        print(f"{len(tickers)} tickers, {start} .. {end}, {bars:,} daily bars, {len(decisions)} weekly decisions "
              f"(momentum views; decisions computed once in {decide_s:.1f} s)")
        started = time.perf_counter()
        bt = run_backtrader(prices, weights.get, decisions, 1_000_000, costs)
        bt_s = time.perf_counter() - started
        started = time.perf_counter()
        vec = run_vectorized(prices, weights.get, decisions, 1_000_000, costs)
        vec_s = time.perf_counter() - started
        diff = ((bt.daily["equity"] - vec.daily["equity"]).abs() / vec.daily["equity"]).max()
        print(f"backtrader: {bt_s:.1f} s wall, {bars / bt_s:,.0f} bars/s, {len(bt.fills):,} fills")
        print(f"vectorised: {vec_s:.1f} s wall, {bars / vec_s:,.0f} bars/s, {len(vec.fills):,} fills")
        print(f"largest relative difference of daily equity: {diff:.2e}")


if __name__ == "__main__":
    main()
