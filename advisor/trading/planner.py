"""Planning a week's orders: the user's views -> target weights (the backtest's portfolio function) ->
orders with the one planner of :mod:`advisor.execution`, sliced under the broker's per-order cap."""

from __future__ import annotations

import math
from datetime import date, timedelta

from sqlalchemy.orm import Session

from advisor import market_calendar
from advisor.data.store import SqlMarketStore
from advisor.errors import AdvisorError
from advisor.execution import plan_orders
from advisor.forecaster.service import expected_return_pct, load_views
from advisor.forecaster.versions import serving_version
from advisor.portfolio import target_weights, trailing_daily_volatility
from advisor.trading.botcore import (
    SLICE_HEADROOM,
    BotContext,
    PlannedTrade,
    RebalanceOptions,
    RunReport,
)
from advisor.trading.broker import Side


def week_views(session: Session, user_id: int, base_fingerprint: str, week: date, tickers: tuple[str, ...] | None) -> dict[str, float | None]:
    """Expected return (%) per name from the user's serving model's views of ``week``; None where no usable view."""
    version = serving_version(session, user_id, base_fingerprint)
    if version is None:
        raise AdvisorError("no model version serves this user yet: train one (advisor train sft) and forecast first")
    rows = load_views(session, version.id, user_id, week, week, include_shared=True).get(week, {})
    names = tickers or tuple(sorted(rows))
    return {t: (expected_return_pct(rows[t]) if t in rows else None) for t in names}


def week_market_inputs(session: Session, tickers: tuple[str, ...], week: date) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Trailing daily volatility and last close per name, as known at the decision session's close."""
    as_of = market_calendar.session_close(week)
    store = SqlMarketStore(session)
    vols: dict[str, float | None] = {}
    prices: dict[str, float | None] = {}
    for ticker in tickers:
        bars = store.bars(ticker, as_of, start=week - timedelta(days=120)) if store.date_range(ticker) else None
        vols[ticker] = trailing_daily_volatility(bars["adj_close"]) if bars is not None and len(bars) else None
        prices[ticker] = float(bars["close"].iloc[-1]) if bars is not None and len(bars) else None
    return vols, prices


class Planner(BotContext):
    def views(self, session: Session, week: date, tickers: tuple[str, ...] | None) -> dict[str, float | None]:
        if self.base_fingerprint is None:
            raise AdvisorError("the bot needs the base model's fingerprint to find the user's views")
        return week_views(session, self.user_id, self.base_fingerprint, week, tickers)

    def stored_view_count(self, session: Session, week: date) -> int:
        """How many views the user's serving model has for the week, signals or not."""
        version = serving_version(session, self.user_id, self.base_fingerprint or "")
        return len(load_views(session, version.id, self.user_id, week, week, include_shared=True).get(week, {})) if version else 0

    def plan(self, week: date, options: RebalanceOptions, report: RunReport) -> list[PlannedTrade]:
        if self.generate_views is not None and options.tickers:
            with self.factory() as session:
                have = self.views(session, week, options.tickers)
            missing = tuple(t for t, v in have.items() if v is None)
            if missing and options.dry_run:  # a dry run writes nothing, views included
                report.messages.append(f"no view yet for {', '.join(missing)} (week {week}): a real run generates them first")
            elif missing:
                self.generate_views(week, missing)
                self.log(f"generated views for {', '.join(missing)} (week {week})")
        with self.factory() as session:
            views = self.views(session, week, options.tickers)
            vols, prices = week_market_inputs(session, tuple(views), week)
        if not any(v is not None for v in views.values()):
            # No usable view at all for the week (not forecast yet, or every view unparsed or failed by
            # the view checker): that is missing data, not a call to sell everything. Nothing is planned
            # or recorded, so a later run, once usable views exist, trades.
            with self.factory() as session:
                stored = self.stored_view_count(session, week)
            if stored:
                report.messages.append(
                    f"none of the {stored} views for week {week} is a signal (unparsed, or failed the view checker): "
                    "nothing planned, positions left as they are"
                )
            else:
                report.messages.append(f"no views for week {week}: nothing planned, positions left as they are (forecast the week first)")
            return []
        unusable = [t for t, v in views.items() if v is None]
        if unusable:
            report.messages.append(f"no usable view this week for {', '.join(unusable)}: no position")
        weights = target_weights(views, vols, self.params)
        account = self.broker.get_account()
        report.equity = account.equity
        positions = {p.ticker: p.qty for p in self.broker.get_positions()}
        prices_now: dict[str, float] = {}
        for ticker in sorted(set(weights) | set(positions)):
            price = self.broker.latest_price(ticker) or prices.get(ticker)
            if price is None or not price > 0:
                report.messages.append(f"{ticker}: no price, not traded")
            else:
                prices_now[ticker] = price
        # The product's one order planner (the backtest's): closes and reductions, then new shorts, then new longs.
        trades: list[PlannedTrade] = []
        for order in plan_orders(weights, account.equity, prices_now, positions, options.min_notional, self._round):
            side = Side.BUY if order.qty > 0 else Side.SELL
            price = prices_now[order.ticker]
            for qty in self._slices(abs(order.qty), price):
                sequence = sum(1 for t in trades if t.ticker == order.ticker and t.side is side)
                trades.append(PlannedTrade(order.ticker, side, qty, price, weights.get(order.ticker, 0.0), positions.get(order.ticker, 0.0), sequence))
        return trades

    def _slices(self, qty: float, price: float) -> list[float]:
        """One trade split into orders under the broker's per-order cap (each slice gets its own sequence number
        and client order id), so a large rebalance goes through instead of being blocked whole."""
        cap = self.broker.max_order_notional
        if cap is None or qty * price <= cap * SLICE_HEADROOM:
            return [qty]
        count = math.ceil(qty * price / (cap * SLICE_HEADROOM))
        if self.broker.supports_fractional:
            size = round(qty / count, 6)
            return [size] * (count - 1) + [round(qty - size * (count - 1), 6)]
        base, extra = divmod(int(qty), count)
        return [float(base + (1 if i < extra else 0)) for i in range(count) if base + (1 if i < extra else 0) > 0]

    def _round(self, qty: float) -> float:
        if self.broker.supports_fractional:
            return round(qty, 6)
        return float(math.trunc(qty))
