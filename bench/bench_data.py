"""Market-data benchmarks: bundle import, window construction, point-in-time query latency.

Run: .venv/bin/python bench/bench_data.py [--bundle ../shared/data/stocknet] [--weeks-limit N]
Prints figures; asserts nothing (targets live in the notes, not in timed tests).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stocknet"


def _import_child(db_path: str, bundle: str, queue: mp.Queue) -> None:
    from advisor.data.importer import import_bundle
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade

    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    start = time.perf_counter()
    summary = import_bundle(make_session_factory(engine), bundle, progress=False)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((elapsed, peak_mb, summary.bars_added, summary.texts_added))


def bench_import(bundle: Path, db_path: Path) -> None:
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_import_child, args=(str(db_path), str(bundle), queue))
    proc.start()
    elapsed, peak_mb, bars, texts = queue.get()
    proc.join()
    print(f"import: {bars:,} bars + {texts:,} text items in {elapsed:.2f} s wall; peak RSS of the importing process {peak_mb:.0f} MB")


def bench_windows(db_path: Path, weeks_limit: int | None) -> None:
    from advisor.data.store import PreloadedMarketStore
    from advisor.data.windows import DEFAULT_TEXTS_PER_WEEK, DEFAULT_WEEKS, build_window, weekly_decision_dates
    from advisor.errors import DataUnavailableError
    from db.engine import make_engine, make_session_factory

    factory = make_session_factory(make_engine(f"sqlite:///{db_path}"))
    with factory() as session:
        store = PreloadedMarketStore(session)
        tickers = store.tickers()
        built = skipped = 0
        start = time.perf_counter()
        for ticker in tickers:
            first, last = store.date_range(ticker)
            dates = weekly_decision_dates(first, last)
            if weeks_limit:
                dates = dates[-weeks_limit:]
            for day in dates:
                try:
                    build_window(store, ticker, day)
                    built += 1
                except DataUnavailableError:
                    skipped += 1  # the first weeks of each ticker lack history
        elapsed = time.perf_counter() - start
    print(
        f"windows: {built:,} built for {len(tickers)} tickers in {elapsed:.1f} s = {built / elapsed:,.0f} windows/s "
        f"(preloaded store, {DEFAULT_WEEKS} weeks, {DEFAULT_TEXTS_PER_WEEK} texts/week; {skipped} dates without enough history skipped)"
    )


def bench_queries(db_path: Path, samples: int = 300) -> None:
    from advisor import market_calendar
    from advisor.data.store import SqlMarketStore
    from advisor.data.windows import build_window
    from db.engine import make_engine, make_session_factory

    factory = make_session_factory(make_engine(f"sqlite:///{db_path}"))
    rng = random.Random(0)
    with factory() as session:
        store = SqlMarketStore(session)
        tickers = [t for t in store.tickers() if store.date_range(t)[0] < date(2014, 1, 1)]
        bars_ms, texts_ms, window_ms = [], [], []
        for _ in range(samples):
            ticker = rng.choice(tickers)
            day = market_calendar.session_on_or_before(date(2014, 3, 1) + timedelta(days=rng.randrange(0, 560)))
            as_of = market_calendar.session_close(day)
            t0 = time.perf_counter()
            store.bars(ticker, as_of, start=day - timedelta(days=40))
            t1 = time.perf_counter()
            store.texts(ticker, as_of, start_session=day - timedelta(days=28))
            t2 = time.perf_counter()
            build_window(store, ticker, day)
            t3 = time.perf_counter()
            bars_ms.append((t1 - t0) * 1e3)
            texts_ms.append((t2 - t1) * 1e3)
            window_ms.append((t3 - t2) * 1e3)

    def fmt(values: list[float]) -> str:
        ordered = sorted(values)
        return f"p50 {statistics.median(ordered):.2f} ms, p95 {ordered[int(0.95 * len(ordered))]:.2f} ms"

    print(f"point-in-time bars query (40 days, SQLite): {fmt(bars_ms)}")
    print(f"point-in-time texts query (4 weeks, SQLite): {fmt(texts_ms)}")
    print(f"one window through the SQL store: {fmt(window_ms)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--weeks-limit", type=int, default=None, help="Only the last N weeks per ticker.")
    args = parser.parse_args()
    if not (args.bundle / "prices.csv.gz").exists():
        raise SystemExit(f"bundle not found at {args.bundle}")
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        bench_import(args.bundle, db_path)
        bench_queries(db_path)
        bench_windows(db_path, args.weeks_limit)


if __name__ == "__main__":
    main()
