"""What a paper account looks like now and over time, for ``advisor trade status`` and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import BotEvent, BotState, DailyBar, Fill, Order, PaperAccount


@dataclass
class AccountStatus:
    broker: str
    bot_status: str
    kill_requested: bool
    last_decision_week: date | None
    message: str | None
    orders: pd.DataFrame
    fills: pd.DataFrame
    events: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def account_status(session: Session, user_id: int, broker: str, *, limit: int = 50) -> AccountStatus:
    state = session.scalar(select(BotState).where(BotState.user_id == user_id, BotState.broker == broker))
    orders = pd.DataFrame(
        [
            {"id": o.id, "client_order_id": o.client_order_id, "week": o.decision_week, "ticker": o.ticker, "side": o.side,
             "qty": o.qty, "status": o.status, "filled_qty": o.filled_qty, "avg_price": o.filled_avg_price,
             "adopted": o.adopted, "error": o.error, "submitted_at": o.submitted_at}
            for o in session.scalars(select(Order).where(Order.user_id == user_id, Order.broker == broker).order_by(Order.id.desc()).limit(limit))
        ]
    )
    fills = pd.DataFrame(
        [
            {"order": o.client_order_id, "ticker": o.ticker, "side": o.side, "qty": f.qty, "price": f.price, "commission": f.commission, "filled_at": f.filled_at}
            for f, o in session.execute(
                select(Fill, Order).join(Order, Fill.order_id == Order.id).where(Order.user_id == user_id, Order.broker == broker).order_by(Fill.id.desc()).limit(limit)
            ).all()
        ]
    )
    events = pd.DataFrame(
        [
            {"at": e.created_at, "level": e.level, "message": e.message}
            for e in session.scalars(select(BotEvent).where(BotEvent.user_id == user_id, BotEvent.broker == broker).order_by(BotEvent.id.desc()).limit(limit))
        ]
    )
    return AccountStatus(
        broker=broker, bot_status=state.status if state else "never run", kill_requested=bool(state and state.kill_requested),
        last_decision_week=state.last_decision_week if state else None, message=state.message if state else None,
        orders=orders, fills=fills, events=events,
    )


def equity_history(session: Session, user_id: int, broker: str, until: datetime | None = None) -> pd.DataFrame:
    """Daily equity of a paper account rebuilt from its fills and closing prices (cash + positions)."""
    account = session.scalar(select(PaperAccount).where(PaperAccount.user_id == user_id, PaperAccount.broker == broker))
    rows = session.execute(
        select(Fill.filled_at, Fill.qty, Fill.price, Fill.commission, Order.ticker, Order.side)
        .join(Order, Fill.order_id == Order.id).where(Order.user_id == user_id, Order.broker == broker).order_by(Fill.filled_at)
    ).all()
    if account is None or not rows:
        return pd.DataFrame(columns=["date", "equity", "cash"])
    fills = pd.DataFrame(rows, columns=["filled_at", "qty", "price", "commission", "ticker", "side"])
    fills["signed"] = fills["qty"].where(fills["side"] == "buy", -fills["qty"])
    fills["day"] = pd.to_datetime(fills["filled_at"], utc=True).dt.tz_convert("America/New_York").dt.date
    tickers = sorted(fills["ticker"].unique())
    first = fills["day"].min()
    query = select(DailyBar.date, DailyBar.ticker, DailyBar.close).where(DailyBar.ticker.in_(tickers), DailyBar.date >= first)
    if until is not None:
        query = query.where(DailyBar.available_at <= until)
    closes = pd.DataFrame(session.execute(query).all(), columns=["date", "ticker", "close"])
    if closes.empty:
        return pd.DataFrame(columns=["date", "equity", "cash"])
    panel = closes.pivot(index="date", columns="ticker", values="close").sort_index().ffill()
    cash, holdings, out = account.initial_cash, {t: 0.0 for t in tickers}, []
    by_day = {d: g for d, g in fills.groupby("day")}
    for day in panel.index:
        for fill in by_day.get(day, pd.DataFrame()).itertuples():
            holdings[fill.ticker] += fill.signed
            cash -= fill.signed * fill.price + fill.commission
        value = sum(q * panel.at[day, t] for t, q in holdings.items() if q and pd.notna(panel.at[day, t]))
        out.append({"date": day, "equity": cash + value, "cash": cash})
    return pd.DataFrame(out)
