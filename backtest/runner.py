"""One backtest request: validate, run the views and the comparisons through the same engine, store.

Runs in one group: the views of a model version under a risk profile; the equal-weight buy-and-hold
benchmark of the same names and period; and, unless turned off, the reference strategies
(always-long, momentum, and the oracle ceiling) under the same profile. Each run is stored (config,
metrics, daily equity, daily non-zero positions) and the group is drawn as one PNG.

Documented behaviour for awkward input:
  * a name without prices in the period is left out (views for it are ignored) and reported;
  * a name that starts trading inside the period takes positions from its first bar;
  * a missing day (halt, gap) values the name at its last close and fills its orders at its next bar;
  * a decision whose views are missing or unparsed holds no position in that name.
Errors: no cash, a profile that allows no exposure, a period outside the stored data, no decision
dates, no names with prices, no stored views for the model version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.store import PreloadedMarketStore
from advisor.data.windows import weekly_decision_dates, weekly_label
from advisor.errors import AdvisorError, DataUnavailableError
from advisor.portfolio import RiskParams
from backtest.charts import equity_chart
from backtest.decisions import AlwaysLong, BuyAndHold, Decider, Momentum, Oracle, StoredViews
from backtest.engine import CostModel, EngineResult, adjusted_ohlc, run_backtrader
from backtest.metrics import hit_rate, performance
from db.engine import session_scope
from db.models import BacktestEquity, BacktestPosition, BacktestRun, DailyBar, Forecast
from db.queries import forecasts_visible_to

BENCHMARK = "benchmark (equal-weight buy and hold)"


class BacktestInputError(AdvisorError):
    """A backtest request that cannot run as asked."""


@dataclass(frozen=True)
class BacktestRequest:
    start: date
    end: date
    params: RiskParams
    profile_label: str
    model_version_id: int | None
    tickers: tuple[str, ...] | None = None
    user_id: int | None = None
    profile_id: int | None = None
    initial_cash: float = 100_000.0
    costs: CostModel = field(default_factory=CostModel)
    references: bool = True


@dataclass
class RunSummary:
    run_id: int
    strategy: str
    metrics: dict[str, Any]


@dataclass
class BacktestOutcome:
    group_key: str
    runs: list[RunSummary]
    chart_path: Path
    notes: list[str]

    def by_strategy(self) -> dict[str, RunSummary]:
        return {r.strategy: r for r in self.runs}


def validate(request: BacktestRequest) -> None:
    if not request.initial_cash > 0:
        raise BacktestInputError(f"initial cash must be positive, got {request.initial_cash}")
    if not request.params.allows_exposure:
        raise BacktestInputError(
            f"the profile '{request.profile_label}' allows no exposure (max weight {request.params.max_weight}, "
            f"max gross {request.params.max_gross}): there is nothing to backtest"
        )
    if request.end <= request.start:
        raise BacktestInputError(f"--end {request.end} must be after --start {request.start}")


def _prices(store: PreloadedMarketStore, tickers: list[str], start: date, end: date) -> tuple[dict[str, pd.DataFrame], list[str]]:
    prices, missing = {}, []
    for ticker in tickers:
        bars = store.outcome_bars(ticker, start, end) if store.date_range(ticker) else pd.DataFrame()
        if bars.empty:
            missing.append(ticker)
        else:
            prices[ticker] = adjusted_ohlc(bars)
    return prices, missing


def _view_tickers(session: Session, model_version_id: int, user_id: int | None, start: date, end: date) -> list[str]:
    query = select(Forecast.ticker).where(
        Forecast.model_version_id == model_version_id, Forecast.forecast_date >= start, Forecast.forecast_date <= end
    )
    query = query.where(forecasts_visible_to(user_id))
    return sorted(set(session.scalars(query.distinct())))


def run_backtest(factory: sessionmaker[Session], request: BacktestRequest, chart_dir: Path) -> BacktestOutcome:
    validate(request)
    notes: list[str] = []
    with factory() as session:
        store = PreloadedMarketStore(session)
        first, last = session.execute(select(func.min(DailyBar.date), func.max(DailyBar.date))).one()
        if first is None:
            raise BacktestInputError("the store holds no prices: import data first")
        if request.start < first or request.end > last:
            raise BacktestInputError(f"the period {request.start} .. {request.end} is outside the stored prices ({first} .. {last})")
        if request.model_version_id is not None:
            view_tickers = _view_tickers(session, request.model_version_id, request.user_id, request.start, request.end)
            if not view_tickers:
                raise BacktestInputError(
                    f"model version {request.model_version_id} has no stored views between {request.start} and {request.end}: "
                    "generate them first (advisor backtest --generate-missing, or advisor forecast)"
                )
        tickers = list(request.tickers) if request.tickers else (view_tickers if request.model_version_id is not None else store.tickers())
        prices, missing = _prices(store, tickers, request.start, request.end)
        if missing:
            notes.append(f"left out (no prices in the period): {', '.join(missing)}")
        if not prices:
            raise BacktestInputError(f"none of {', '.join(tickers)} has prices between {request.start} and {request.end}")
        names = tuple(sorted(prices))
        decisions = weekly_decision_dates(request.start, request.end)
        if not decisions:
            raise BacktestInputError(f"no weekly decision date between {request.start} and {request.end}")

        sources: list[tuple[str, Any]] = []
        if request.model_version_id is not None:
            views = StoredViews(session, request.model_version_id, request.user_id)
            sources.append(("views", Decider(store, views, request.params, names)))
        sources.append((BENCHMARK, BuyAndHold(names, decisions[0])))
        if request.references:
            for source in (AlwaysLong(), Momentum(store), Oracle(store)):
                sources.append((source.name, Decider(store, source, request.params, names)))

        results: dict[str, EngineResult] = {}
        for name, decide in sources:
            results[name] = run_backtrader(prices, decide, decisions, request.initial_cash, request.costs)
        if request.model_version_id is not None:
            coverage = dict(sources[0][1].source.coverage)
            notes.append(f"views used {coverage.get('used', 0)}, unparsed {coverage.get('unparsed', 0)}, missing {coverage.get('missing', 0)} (no position for those)")
        realised = _realised(store, results, names)

    config = {
        "start": str(request.start), "end": str(request.end), "profile": request.profile_label,
        "params": asdict(request.params), "costs": asdict(request.costs), "initial_cash": request.initial_cash,
        "tickers": list(names), "model_version_id": request.model_version_id, "user_id": request.user_id,
        "decision_dates": len(decisions), "fills": "next bar open", "engine": "backtrader",
    }
    group_key = hashlib.sha256(json.dumps(config, sort_keys=True).encode() + str(pd.Timestamp.now()).encode()).hexdigest()[:16]
    runs: list[RunSummary] = []
    with session_scope(factory) as session:
        for name, result in results.items():
            metrics = performance(result.daily, result.fills, request.initial_cash)
            metrics.update(hit_rate(result.decisions, realised) if name != BENCHMARK else {"hit_rate": None, "traded_views": 0})
            metrics["rejected_orders"] = result.rejected
            run_id = store_run(session, name, request, config, metrics, result, group_key, names)
            runs.append(RunSummary(run_id, name, metrics))
        views_run = next((run for run in runs if run.strategy == "views"), None)
        if views_run is not None and not views_run.metrics.get("avg_gross_exposure"):
            notes.append(
                "the views never led to a position"
                + ("" if request.params.allow_shorts else ": this profile is long-only, so a Down view holds cash")
            )
        main = "views" if "views" in results else BENCHMARK
        chart = equity_chart(
            {name: r.daily["equity"] for name, r in results.items()}, main, BENCHMARK,
            chart_dir / f"backtest-{group_key}.png",
            f"{request.profile_label} profile, {request.start} .. {request.end}, {len(names)} names",
        )
        for run in runs:
            session.get_one(BacktestRun, run.run_id).chart_path = str(chart)
    return BacktestOutcome(group_key, runs, chart, notes)


def _realised(store: PreloadedMarketStore, results: dict[str, EngineResult], names: tuple[str, ...]) -> dict[tuple[date, str], float]:
    """Realised next-week moves for every (decision, name) that some run traded (for hit rates)."""
    needed = {(day, t) for r in results.values() for day, w in r.decisions.items() for t, x in w.items() if x != 0}
    realised = {}
    for day, ticker in needed:
        try:
            realised[(day, ticker)] = weekly_label(store, ticker, day).return_pct
        except DataUnavailableError:
            continue
    return realised


def store_run(
    session: Session, name: str, request: BacktestRequest, config: dict[str, Any], metrics: dict[str, Any],
    result: EngineResult, group_key: str, names: tuple[str, ...],
) -> int:
    run = BacktestRun(
        group_key=group_key, strategy=name, user_id=request.user_id, profile_id=request.profile_id,
        model_version_id=request.model_version_id if name == "views" else None,
        start=request.start, end=request.end, tickers=list(names), config=config, metrics=metrics,
    )
    session.add(run)
    session.flush()
    daily = result.daily
    session.execute(
        insert(BacktestEquity),
        [
            {"run_id": run.id, "date": day, "equity": float(row.equity), "cash": float(row.cash),
             "gross_exposure": float(row.gross_exposure), "net_exposure": float(row.net_exposure)}
            for day, row in zip(daily.index, daily.itertuples(index=False), strict=True)
        ],
    )
    if not result.positions.empty:
        session.execute(
            insert(BacktestPosition),
            [
                {"run_id": run.id, "date": r.date, "ticker": r.ticker, "quantity": float(r.quantity), "weight": float(r.weight)}
                for r in result.positions.itertuples(index=False)
            ],
        )
    return run.id
