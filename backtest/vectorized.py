"""An independent pandas/numpy replay of the same strategy, to cross-check Backtrader.

It shares the decisions, the order plan and the cost model (:mod:`advisor.execution`, which the
local paper broker fills with too) with the Backtrader path, which applies the costs with its own
slippage and commission machinery; the cash rule, valuation and the calendar are computed here from
the price arrays directly. Agreement of the daily equity within a tight tolerance (see
the tests) is evidence that the Backtrader run does what :mod:`backtest.engine` says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import numpy as np
import pandas as pd

from advisor.execution import CostModel, PlannedOrder, plan_orders
from backtest.engine import DecideFn, EngineResult


def run_vectorized(
    prices: Mapping[str, pd.DataFrame],
    decide: DecideFn,
    decision_dates: Sequence[date],
    initial_cash: float,
    costs: CostModel,
) -> EngineResult:
    tickers = sorted(t for t, f in prices.items() if not f.empty)
    calendar = sorted(set().union(*(set(prices[t].index) for t in tickers)))
    days = [ts.date() for ts in calendar]
    index = pd.DatetimeIndex(calendar)
    # Dense arrays (days x tickers); NaN where a name has no bar that day.
    fields = {name: np.full((len(days), len(tickers)), np.nan) for name in ("open", "high", "low", "close")}
    for j, ticker in enumerate(tickers):
        frame = prices[ticker].reindex(index)
        for name in fields:
            fields[name][:, j] = frame[name].to_numpy()
    has_bar = ~np.isnan(fields["close"])
    last_close = pd.DataFrame(fields["close"]).ffill().to_numpy()
    column = {t: j for j, t in enumerate(tickers)}
    decision_set = set(decision_dates)

    cash = float(initial_cash)
    qty = np.zeros(len(tickers))
    pending: list[PlannedOrder] = []
    records, position_rows, fill_rows = [], [], []
    rejected = 0
    decided: dict[date, Mapping[str, float]] = {}
    for i, day in enumerate(days):
        still_pending = []
        for order in pending:
            j = column[order.ticker]
            if not has_bar[i, j]:
                still_pending.append(order)
                continue
            open_, high, low = fields["open"][i, j], fields["high"][i, j], fields["low"][i, j]
            price = costs.fill_price(open_, high, low, buy=order.qty > 0)
            commission = costs.commission_for(order.qty, price)
            new_cash = cash - order.qty * price - commission
            if order.opening and new_cash < 0:
                rejected += 1
                continue
            cash = new_cash
            qty[j] += order.qty
            fill_rows.append({"date": day, "ticker": order.ticker, "qty": order.qty, "price": price, "commission": commission, "notional": abs(order.qty * price)})
        pending = still_pending

        live = has_bar[: i + 1].any(axis=0)
        values = np.where(live, qty * np.nan_to_num(last_close[i]), 0.0)
        equity = cash + values.sum()
        for j in map(int, np.flatnonzero(qty != 0)):
            position_rows.append({"date": day, "ticker": tickers[j], "quantity": qty[j], "weight": values[j] / equity})
        records.append({"date": day, "equity": equity, "cash": cash, "gross_exposure": np.abs(values).sum() / equity, "net_exposure": values.sum() / equity})

        if day in decision_set:
            weights = decide(day)
            if weights is None:
                continue
            decided[day] = dict(weights)
            closes = {tickers[j]: last_close[i, j] for j in range(len(tickers)) if live[j]}
            positions = {tickers[j]: qty[j] for j in range(len(tickers)) if live[j]}
            pending = plan_orders(weights, equity, closes, positions, costs.min_order_notional)
    daily = pd.DataFrame(records).set_index("date")
    return EngineResult(
        daily,
        pd.DataFrame(position_rows, columns=["date", "ticker", "quantity", "weight"]),
        pd.DataFrame(fill_rows, columns=["date", "ticker", "qty", "price", "commission", "notional"]),
        rejected,
        decided,
    )
