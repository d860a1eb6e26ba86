"""The rebalance bot on the local paper broker: idempotent, crash-safe, killable, capped."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from advisor.config import BrokerSettings
from advisor.trading import bot as bot_module
from advisor.trading.bot import BotKilledError, RebalanceOptions, client_order_id, kill
from advisor.trading.broker import OrderRequest, Side
from db.models import BotEvent, Fill, Order, Position
from tests.trading.conftest import WEEK, local_bot

FAST = RebalanceOptions(poll_timeout_s=5, poll_interval_s=0)


def count_orders(factory, **where) -> int:
    with factory() as session:
        query = select(func.count()).select_from(Order)
        for key, value in where.items():
            query = query.where(getattr(Order, key) == value)
        return session.scalar(query)


def test_one_run_plans_sends_fills_and_a_second_sends_nothing(trading_db) -> None:
    bot, _ = local_bot(trading_db)
    report = bot.run_once(FAST)
    assert report.decision_week == WEEK and report.planned
    assert set(report.final.values()) == {"filled"}
    assert all(cid.startswith(f"rb-u1-{WEEK:%Y%m%d}-") for cid in report.sent)
    with trading_db() as session:
        assert session.scalar(select(func.count()).select_from(Fill)) == len(report.planned)
        positions = {p.ticker: p.qty for p in session.scalars(select(Position)) if p.qty}
        assert set(positions) == {t.ticker for t in report.planned}
        assert session.scalars(select(BotEvent)).first() is not None
    sent = count_orders(trading_db)
    again = bot.run_once(FAST)
    assert again.planned == [] and again.sent == [] and count_orders(trading_db) == sent
    assert any("already rebalanced" in m for m in again.messages)


def test_limits_hold_in_the_plan(trading_db) -> None:
    bot, _ = local_bot(trading_db)
    report = bot.run_once(FAST)
    equity = report.equity
    assert all(t.notional <= 0.3 * equity + 1 for t in report.planned)
    assert sum(t.notional for t in report.planned if t.side is Side.BUY) <= 0.95 * equity + 1


def test_dry_run_sends_and_records_nothing(trading_db) -> None:
    bot, _ = local_bot(trading_db)
    report = bot.run_once(RebalanceOptions(dry_run=True))
    assert report.planned and report.dry_run and count_orders(trading_db) == 0


def test_process_killed_between_writing_intents_and_sending(trading_db, monkeypatch) -> None:
    bot, clock = local_bot(trading_db)

    def crash(order_id, report):
        raise SystemExit("killed by the operating system")

    monkeypatch.setattr(bot, "send", crash)
    with pytest.raises(SystemExit):
        bot.run_once(FAST)
    intents = count_orders(trading_db, status="intent")
    assert intents > 0 and count_orders(trading_db) == intents, "intents were written before anything was sent"
    restarted, _ = local_bot(trading_db, clock=clock)
    report = restarted.run_once(FAST)
    assert len(report.sent) == intents and set(report.final.values()) == {"filled"}
    with trading_db() as session:
        ids = list(session.scalars(select(Order.client_order_id)))
    assert len(ids) == len(set(ids)) == intents, "each order exists once"


def test_kill_switch_cancels_open_orders_and_blocks_runs(trading_db) -> None:
    bot, clock = local_bot(trading_db)
    report = bot.run_once(RebalanceOptions(poll_timeout_s=0, poll_interval_s=0))
    assert report.sent and count_orders(trading_db, status="accepted") == len(report.sent)
    canceled = kill(trading_db, bot.broker, 1)
    assert sorted(canceled) == sorted(report.sent)
    assert count_orders(trading_db, status="canceled") == len(report.sent)
    with pytest.raises(BotKilledError, match="kill switch"):
        bot.run_once(FAST)
    bot_module.resume(trading_db, "local", 1)
    assert bot.run_once(FAST).decision_week == WEEK


def test_orders_above_the_per_order_cap_are_split_into_slices(trading_db) -> None:
    bot, _ = local_bot(trading_db, settings=BrokerSettings(max_order_notional=10_000))
    report = bot.run_once(FAST)
    assert all(t.notional <= 10_000 for t in report.planned)
    by_name: dict[tuple[str, Side], list[int]] = {}
    for trade in report.planned:
        by_name.setdefault((trade.ticker, trade.side), []).append(trade.sequence)
    assert any(len(seqs) > 1 for seqs in by_name.values()), "a position above the cap needs several orders"
    assert all(sorted(seqs) == list(range(len(seqs))) for seqs in by_name.values())
    assert not report.rejected and set(report.final.values()) == {"filled"}
    with trading_db() as session:
        positions = {p.ticker: p.qty for p in session.scalars(select(Position)) if p.qty}
    for (ticker, side), _ in by_name.items():
        total = sum(t.qty for t in report.planned if t.ticker == ticker and t.side is side)
        assert positions[ticker] == pytest.approx(total if side is Side.BUY else -total, rel=1e-6)
    sent = count_orders(trading_db)
    assert bot.run_once(FAST).sent == [] and count_orders(trading_db) == sent


def test_per_order_cap_blocks_at_the_broker_layer(trading_db) -> None:
    from advisor.trading.safety import OrderBlockedError

    bot, _ = local_bot(trading_db, settings=BrokerSettings(max_order_notional=1_000))
    with pytest.raises(OrderBlockedError, match="per-order cap"):
        bot.broker.submit_order(OrderRequest("manual-1", "AAA", Side.BUY, notional=5_000))
    assert count_orders(trading_db) == 0


def test_daily_cap(trading_db) -> None:
    bot, _ = local_bot(trading_db, settings=BrokerSettings(max_order_notional=50_000, max_daily_notional=40_000))
    report = bot.run_once(FAST)
    assert report.sent and report.rejected
    assert any("daily cap" in reason for reason in report.rejected.values())


def test_max_weight_is_enforced_even_for_orders_not_from_the_plan(trading_db) -> None:
    from advisor.trading.safety import OrderBlockedError

    bot, _ = local_bot(trading_db)
    with pytest.raises(OrderBlockedError, match="max weight"):
        bot.broker.submit_order(OrderRequest("manual-1", "AAA", Side.BUY, notional=40_000))  # 40% > max weight 30%


def test_unknown_broker_orders_are_adopted_and_stale_intents_expire(trading_db) -> None:
    from advisor.trading.local_broker import LocalPaperBroker

    bot, clock = local_bot(trading_db)
    LocalPaperBroker(trading_db, 1, clock=clock).submit_order(OrderRequest("placed-by-hand", "CCC", Side.BUY, qty=1))
    with trading_db() as session:
        session.add(Order(client_order_id=client_order_id(1, date(2014, 4, 25), "AAA", Side.BUY, 0), user_id=1, broker="local",
                          decision_week=date(2014, 4, 25), ticker="AAA", side="buy", qty=1, status="intent"))
        session.commit()
    report = bot.run_once(FAST)
    assert report.reconciled[client_order_id(1, date(2014, 4, 25), "AAA", Side.BUY, 0)] == "expired (stale intent)"
    with trading_db() as session:
        adopted = session.scalar(select(Order).where(Order.client_order_id == "placed-by-hand"))
        assert adopted.adopted and adopted.status == "filled"


def test_client_order_ids_are_unique_per_broker_account(trading_db) -> None:
    from sqlalchemy.exc import IntegrityError

    cid = client_order_id(1, WEEK, "AAA", Side.BUY, 0)
    with trading_db() as session:
        session.add_all([Order(client_order_id=cid, user_id=1, broker=b, ticker="AAA", side="buy", qty=1) for b in ("local", "alpaca")])
        session.commit()
        session.add(Order(client_order_id=cid, user_id=1, broker="local", ticker="AAA", side="buy", qty=1))
        with pytest.raises(IntegrityError):
            session.commit()


def test_two_trade_runs_for_one_user_and_week_at_once_send_each_order_once(trading_db) -> None:
    from db.engine import make_engine, make_session_factory
    from tests.db.test_concurrent_jobs import run_together

    first, _ = local_bot(trading_db)
    second, _ = local_bot(make_session_factory(make_engine(str(trading_db.kw["bind"].url))))
    assert run_together(lambda: first.run_once(FAST), lambda: second.run_once(FAST)) == []
    with trading_db() as session:
        fills = session.scalar(select(func.count()).select_from(Fill))
    orders = count_orders(trading_db)
    alone, _ = local_bot(trading_db)
    assert orders > 0 and fills == orders and alone.run_once(FAST).sent == []
