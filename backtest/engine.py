"""The Backtrader engine: weekly decisions, market orders filled at the next bar's open, costs, cash.

Execution rules (the product's one execution model, :mod:`advisor.execution`: the order planner and
cost model that the paper bot and the local paper broker use too; the vectorised cross-check in
:mod:`backtest.vectorized` follows the same rules with its own arithmetic):
  * at a decision session's close the strategy asks the decider for target weights, cancels
    unfilled orders, and sends market orders sized from that close and the account value
    (fractional shares); they fill at each name's **next available open** — never at a price the
    decision saw; a name with no bar (halt, gap) fills at its next bar;
  * orders go in three phases, each in ticker order: reductions/closes, new shorts, new longs; a
    position that flips sign is closed first and reopened in a later phase;
  * fills pay slippage (buy at open x (1 + s), sell at open x (1 - s), kept within the bar's
    high/low) and a commission in basis points of notional;
  * an opening order that would take cash below zero is not filled (Backtrader's rule); closing
    orders always fill; proceeds of short sales are credited to cash;
  * account value = cash + sum(position x last close).
Prices are split/dividend-adjusted OHLC (open/high/low scaled by adj_close / close).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import backtrader as bt
import pandas as pd

from advisor.execution import CostModel, PlannedOrder, plan_orders

__all__ = ["CostModel", "EngineResult", "PlannedOrder", "adjusted_ohlc", "plan_orders", "run_backtrader"]

DecideFn = Callable[[date], "Mapping[str, float] | None"]


@dataclass
class EngineResult:
    daily: pd.DataFrame  # index date: equity, cash, gross_exposure, net_exposure
    positions: pd.DataFrame  # date, ticker, quantity, weight (non-zero positions)
    fills: pd.DataFrame  # date, ticker, qty, price, commission, notional
    rejected: int = 0
    decisions: dict[date, Mapping[str, float]] = field(default_factory=dict)


def adjusted_ohlc(bars: pd.DataFrame) -> pd.DataFrame:
    """Split/dividend-adjusted OHLC from a store bars frame (index date)."""
    factor = (bars["adj_close"] / bars["close"]).to_numpy()
    frame = pd.DataFrame(
        {
            "open": bars["open"].to_numpy() * factor,
            "high": bars["high"].to_numpy() * factor,
            "low": bars["low"].to_numpy() * factor,
            "close": bars["adj_close"].to_numpy(),
            "volume": bars["volume"].to_numpy(dtype=float),
        },
        index=pd.DatetimeIndex(pd.to_datetime([str(d) for d in bars.index])),
    )
    return frame.sort_index()


class RebalanceStrategy(bt.Strategy):
    """At each decision date: ask ``decide`` for weights and rebalance (see module docstring)."""

    params: tuple[tuple[str, Any], ...] = (("decide", None), ("decision_dates", frozenset()), ("min_notional", 1.0))

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.position_rows: list[dict] = []
        self.fill_rows: list[dict] = []
        self.rejected = 0
        self.open_orders: list[bt.Order] = []

    def prenext(self) -> None:  # feeds start on different days; act from the first bar of any feed
        self.next()

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            self.fill_rows.append(
                {
                    "date": order.data.datetime.date(0),
                    "ticker": order.data._name,
                    "qty": order.executed.size,
                    "price": order.executed.price,
                    "commission": order.executed.comm,
                    "notional": abs(order.executed.size * order.executed.price),
                }
            )
        elif order.status in (order.Margin, order.Rejected):
            self.rejected += 1

    def _live(self) -> list[bt.feeds.PandasData]:
        return [d for d in self.datas if len(d)]

    def next(self) -> None:
        today = self.datetime.date(0)
        equity = self.broker.getvalue()
        cash = self.broker.getcash()
        gross = net = 0.0
        for data in self._live():
            size = self.getposition(data).size
            if size:
                value = size * data.close[0]
                gross += abs(value)
                net += value
                self.position_rows.append({"date": today, "ticker": data._name, "quantity": size, "weight": value / equity})
        self.records.append({"date": today, "equity": equity, "cash": cash, "gross_exposure": gross / equity, "net_exposure": net / equity})
        if today not in self.p.decision_dates:
            return
        weights = self.p.decide(today)
        if weights is None:
            return
        for order in self.open_orders:
            if order.alive():
                self.cancel(order)
        self.open_orders = []
        live = {d._name: d for d in self._live()}
        closes = {name: d.close[0] for name, d in live.items()}
        positions = {name: self.getposition(d).size for name, d in live.items()}
        for planned in plan_orders(weights, equity, closes, positions, self.p.min_notional):
            data = live[planned.ticker]
            order = self.buy(data=data, size=planned.qty) if planned.qty > 0 else self.sell(data=data, size=-planned.qty)
            self.open_orders.append(order)


class _PercentCommission(bt.CommInfoBase):
    params = (("stocklike", True), ("commtype", bt.CommInfoBase.COMM_PERC), ("percabs", True))


def run_backtrader(
    prices: Mapping[str, pd.DataFrame],
    decide: DecideFn,
    decision_dates: Sequence[date],
    initial_cash: float,
    costs: CostModel,
) -> EngineResult:
    """Replay ``prices`` (adjusted OHLC per ticker) through Backtrader with the rebalancing strategy."""
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.broker.setcash(initial_cash)
    cerebro.broker.set_checksubmit(False)
    cerebro.broker.set_slippage_perc(costs.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=False)
    cerebro.broker.addcommissioninfo(_PercentCommission(commission=costs.commission))
    for ticker in sorted(prices):
        frame = prices[ticker]
        if frame.empty:
            continue
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, name=ticker, openinterest=None), name=ticker)
    decided: dict[date, Mapping[str, float]] = {}

    def recording_decide(day: date) -> Mapping[str, float] | None:
        weights = decide(day)
        if weights is not None:
            decided[day] = dict(weights)
        return weights

    cerebro.addstrategy(RebalanceStrategy, decide=recording_decide, decision_dates=frozenset(decision_dates), min_notional=costs.min_order_notional)
    strategy = cerebro.run()[0]
    daily = pd.DataFrame(strategy.records).set_index("date")
    positions = pd.DataFrame(strategy.position_rows, columns=["date", "ticker", "quantity", "weight"])
    fills = pd.DataFrame(strategy.fill_rows, columns=["date", "ticker", "qty", "price", "commission", "notional"])
    return EngineResult(daily, positions, fills, strategy.rejected, decided)
