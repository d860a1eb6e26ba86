"""Trading benchmark: one 30-name weekly rebalance, end to end, on the local paper broker and on Alpaca paper.

The same plan on both: a temporary SQLite database with 30 synthetic tickers (``tests.helpers.make_bundle``)
and one "up" view per ticker for the decision week written straight into the forecasts table, so
every name gets a target weight and the rebalance is 30 buys. Each repetition uses a fresh user (a
fresh account), so it trades the week from scratch.

* **local**: :class:`LocalPaperBroker` on a simulated clock (fills at the next open from the store).
* **alpaca**: the real :class:`AlpacaPaperBroker` (alpaca-py over loopback HTTP) against the fake Alpaca
  server of ``tests/fakes`` (a benchmark may use test fakes; no network). Orders rest as accepted; the
  bot's poll sleep lets the fake fill them (``advance``), like a market that trades between two polls.

Both go through :func:`make_broker` (so the safety caps run on every order) and the full
:meth:`RebalanceBot.run_once`: reconcile, plan, intents, send, poll, record fills, mirror positions.
Prints wall time and orders per second for each (median of the repetitions), and HTTP requests per
order for Alpaca.

Run: .venv/bin/python bench/bench_trading.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.helpers and tests.fakes (benchmark only; product code never imports them)

NAMES = 30
WEEK = date(2014, 5, 9)
FINGERPRINT = "b" * 64


def tickers() -> tuple[str, ...]:
    return tuple(f"T{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(NAMES))  # TAA, TAB, ...


def build_database(directory: Path):  # type: ignore[no-untyped-def]
    from advisor import market_calendar
    from advisor.data.importer import import_bundle
    from db.engine import make_engine, make_session_factory, session_scope
    from db.migrate import upgrade
    from db.models import Forecast, ModelVersion
    from tests.helpers import make_bundle

    engine = make_engine(f"sqlite:///{directory / 'bench.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    bundle = make_bundle(directory / "bundle", tickers=tickers(), start=date(2013, 10, 1), end=date(2014, 6, 30), tweets_per_session=0)
    import_bundle(factory, bundle, progress=False)
    adapter = directory / "adapter"
    adapter.mkdir()
    with session_scope(factory) as session:
        version = ModelVersion(key="bench+views", name="bench views", kind="sft", base_model_id="bench", base_fingerprint=FINGERPRINT,
                               adapter_path=str(adapter))
        session.add(version)
        session.flush()
        for i, ticker in enumerate(tickers()):
            session.add(Forecast(
                forecast_key=f"bench-{ticker}-{WEEK}", ticker=ticker, forecast_date=WEEK, as_of=market_calendar.session_close(WEEK),
                target_start=market_calendar.next_session_after(WEEK), target_end=WEEK, model_version_id=version.id,
                prompt_hash="p" * 64, prompt_text="prompt", raw_text="text", parse_status="ok", direction="up",
                bin_low=float(i % 3), bin_high=float(i % 3 + 1), decoding={"mode": "greedy"}, seed=0, candidate_index=0,
                group_key=f"bench-{ticker}-{WEEK}",
            ))
    return factory


def new_user(factory, name: str) -> int:  # type: ignore[no-untyped-def]
    from db.engine import session_scope
    from db.models import User

    with session_scope(factory) as session:
        user = User(name=name)
        session.add(user)
        session.flush()
        return user.id


def store_closes(factory) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from db.models import DailyBar

    with factory() as session:
        return dict(session.execute(select(DailyBar.ticker, DailyBar.close).where(DailyBar.date == WEEK)).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="Rebalances per broker (a fresh account each).")
    args, _ = parser.parse_known_args()  # run_all.py passes every benchmark the same arguments

    from advisor import market_calendar
    from advisor.config import BrokerSettings
    from advisor.portfolio import RiskParams
    from advisor.trading.bot import RebalanceBot, RebalanceOptions
    from advisor.trading.factory import make_broker
    from advisor.trading.local_broker import SimulatedClock
    from tests.fakes.alpaca_server import FakeAlpaca

    params = RiskParams(risk_aversion=2.0, max_weight=0.05, max_gross=1.0, cash_buffer=0.05)
    settings = BrokerSettings(max_order_notional=50_000, max_daily_notional=1_000_000)
    options = RebalanceOptions(poll_timeout_s=60, poll_interval_s=0)
    decision_time = market_calendar.session_close(WEEK) + timedelta(minutes=5)

    def now():  # type: ignore[no-untyped-def]
        return decision_time

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        factory = build_database(Path(tmp))
        print(f"{NAMES} synthetic tickers, decision week {WEEK}; database built in {time.perf_counter() - started:.1f} s")
        results: dict[str, list[tuple[float, int]]] = {"local": [], "alpaca": []}
        requests_per_order: list[float] = []
        for rep in range(args.repeat):
            user_id = new_user(factory, f"bench-local-{rep}")
            clock = SimulatedClock(decision_time)
            broker = make_broker("local", settings, factory, user_id, params.max_weight, clock=clock)
            bot = RebalanceBot(factory, broker, user_id, params, base_fingerprint=FINGERPRINT)
            started = time.perf_counter()
            report = bot.run_once(options)
            wall = time.perf_counter() - started
            assert len(report.planned) == NAMES and set(report.final.values()) == {"filled"}, report
            results["local"].append((wall, len(report.sent)))

            with FakeAlpaca(prices=store_closes(factory), cash=100_000.0, market_open=False, now=decision_time) as fake:
                user_id = new_user(factory, f"bench-alpaca-{rep}")
                settings_alpaca = settings.model_copy(update={"kind": "alpaca", "alpaca_base_url": fake.base_url})
                os.environ["ADVISOR_ALPACA_API_KEY"], os.environ["ADVISOR_ALPACA_SECRET_KEY"] = fake.api_key, fake.secret_key
                broker = make_broker("alpaca", settings_alpaca, factory, user_id, params.max_weight, clock=now,
                                     alpaca_client_options={"sleep": lambda s: None})
                bot = RebalanceBot(factory, broker, user_id, params, base_fingerprint=FINGERPRINT, clock=now,
                                   sleep=lambda s, fake=fake: fake.advance())
                started = time.perf_counter()
                report = bot.run_once(options)
                wall = time.perf_counter() - started
                assert len(report.planned) == NAMES and set(report.final.values()) == {"filled"}, report
                assert fake.count_requests("submit_order") == NAMES == fake.count_orders()
                results["alpaca"].append((wall, len(report.sent)))
                requests_per_order.append(len(fake.requests) / NAMES)

        for name, runs in results.items():
            walls = [w for w, _ in runs]
            orders = runs[0][1]
            median = statistics.median(walls)
            print(f"{name:>6}: {orders} orders per rebalance, {median:.2f} s wall (median of {len(walls)}: "
                  f"{', '.join(f'{w:.2f}' for w in walls)}), {orders / median:,.1f} orders/s")
        print(f"alpaca: {statistics.median(requests_per_order):.1f} HTTP requests per order "
              "(safety-cap reads, submit, poll lookups, reconcile and account reads included)")


if __name__ == "__main__":
    main()
