"""The one execution model: how target weights become orders, and what a simulated fill costs.

The backtest (Backtrader and its vectorised cross-check), the local paper broker and the rebalance
bot all use these rules, so a strategy trades the same way in a backtest and on the paper account:

* :func:`plan_orders` moves positions to target weights of the account's equity at known prices,
  in three phases, each in ticker order: reductions and closes, new shorts, new longs. A position
  that flips sign is closed first and reopened in a later phase. A change worth less than
  ``min_notional`` is not traded.
* :class:`CostModel` prices a simulated market fill at the bar's open plus slippage (kept within
  the bar's high and low) and charges a commission in basis points of the notional.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """Slippage and commission in basis points, and the smallest order worth sending."""

    commission_bps: float = 1.0
    slippage_bps: float = 5.0
    min_order_notional: float = 1.0

    @property
    def commission(self) -> float:
        return self.commission_bps / 10_000

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 10_000

    def fill_price(self, open_: float, high: float, low: float, *, buy: bool) -> float:
        """A market order's fill at the bar's open: buys pay the slippage, sells give it up."""
        return min(open_ * (1 + self.slippage), high) if buy else max(open_ * (1 - self.slippage), low)

    def commission_for(self, qty: float, price: float) -> float:
        return abs(qty) * price * self.commission


@dataclass(frozen=True)
class PlannedOrder:
    ticker: str
    qty: float  # signed: + buy, - sell
    opening: bool  # opens or adds to a position (a closing order never needs cash)


def plan_orders(
    weights: Mapping[str, float],
    equity: float,
    prices: Mapping[str, float],
    positions: Mapping[str, float],
    min_notional: float,
    round_qty: Callable[[float], float] = lambda qty: qty,
) -> list[PlannedOrder]:
    """Orders that move ``positions`` to ``weights`` of ``equity`` at ``prices``, in submission order.

    ``round_qty`` rounds a traded quantity (whole shares for a broker without fractional trading).
    A name without a positive price is skipped: it cannot be sized.
    """
    closing: list[PlannedOrder] = []
    new_shorts: list[PlannedOrder] = []
    new_longs: list[PlannedOrder] = []
    for ticker in sorted(set(weights) | {t for t, q in positions.items() if q}):
        price = prices.get(ticker)
        if price is None or not price > 0:
            continue
        current = positions.get(ticker, 0.0)
        target = weights.get(ticker, 0.0) * equity / price
        if abs(target - current) * price < min_notional:
            continue
        if current != 0 and (target == 0 or math.copysign(1, target) != math.copysign(1, current)):
            closing.append(PlannedOrder(ticker, -current, opening=False))
            current = 0.0
        delta = round_qty(target - current)
        if delta == 0 or abs(delta) * price < min_notional:
            continue
        if current != 0 and abs(target) < abs(current):
            closing.append(PlannedOrder(ticker, delta, opening=False))
        elif delta < 0:
            new_shorts.append(PlannedOrder(ticker, delta, opening=True))
        else:
            new_longs.append(PlannedOrder(ticker, delta, opening=True))
    return closing + new_shorts + new_longs
