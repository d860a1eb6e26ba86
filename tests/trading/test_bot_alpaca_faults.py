"""The rebalance bot against the fake Alpaca paper server, with faults: no order is ever lost or doubled.

Everything below the bot is real: :func:`make_broker` builds the guarded :class:`AlpacaPaperBroker`, which
talks HTTP to :mod:`tests.fakes.alpaca_server` through alpaca-py. Every case checks both books:

* the database (``orders``: one row per client order id, the broker's status and cumulative fills;
  ``fills``: one row per execution, summing to the order's filled quantity; ``positions`` mirrored);
* the fake server (at most one order per client order id, and every order there is known to the database);

and that running the bot again for the same week sends nothing (the POST count does not move).

Time: the bot, the caps and the fake all live at 5 minutes after the close of :data:`WEEK` (2014-05-09),
so the decision week is ``WEEK`` and the stored views of ``trading_db`` apply; the fake's prices are the
store's closes that day, so the plan's sizes and the caps agree with the fake's book. The plan for that
week is three buys (AAA, BBB, DDD), sent in that order. The market is closed at that time (as the
exchange calendar says), so orders rest as ``accepted`` until the test fills them, usually from the
bot's poll sleep (``fake.advance()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import requests
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.config import BrokerSettings
from advisor.trading import bot as bot_module
from advisor.trading.alpaca_broker import AlpacaPaperBroker
from advisor.trading.bot import BotKilledError, RebalanceBot, RebalanceOptions, client_order_id, kill
from advisor.trading.broker import OrderRequest, Side
from advisor.trading.errors import OperationalBrokerError, TemporaryBrokerError
from advisor.trading.factory import make_broker
from db.engine import session_scope
from db.models import BotEvent, DailyBar, Fill, Forecast, Order, Position
from tests.fakes.alpaca_server import FakeAlpaca
from tests.trading.conftest import FINGERPRINT, PARAMS, WEEK

NOW = market_calendar.session_close(WEEK) + timedelta(minutes=5)
FAST = RebalanceOptions(poll_timeout_s=5, poll_interval_s=0)
NO_WAIT = RebalanceOptions(poll_timeout_s=0, poll_interval_s=0)  # one poll pass, then leave orders open
AAA, BBB, DDD = (client_order_id(1, WEEK, t, Side.BUY, 0) for t in ("AAA", "BBB", "DDD"))
PLANNED = [AAA, BBB, DDD]
TIMEOUT_S = 0.5


def now() -> datetime:
    return NOW


def store_closes(factory: sessionmaker[Session]) -> dict[str, float]:
    with factory() as session:
        return dict(session.execute(select(DailyBar.ticker, DailyBar.close).where(DailyBar.date == WEEK)).all())


@pytest.fixture
def fake(trading_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAlpaca]:
    with FakeAlpaca(prices=store_closes(trading_db), cash=100_000.0, market_open=False, now=NOW) as server:
        monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", server.api_key)
        monkeypatch.setenv("ADVISOR_ALPACA_SECRET_KEY", server.secret_key)
        yield server


def alpaca_bot(factory: sessionmaker[Session], fake: FakeAlpaca, sleep: Callable[[float], None] | None = None) -> RebalanceBot:
    """A fresh bot process: new broker, new client, same database and server. By default each poll
    sleep lets the market fill every open order."""
    settings = BrokerSettings(kind="alpaca", alpaca_base_url=fake.base_url, max_order_notional=50_000)
    broker = make_broker("alpaca", settings, factory, 1, PARAMS.max_weight, clock=now,
                         alpaca_client_options={"sleep": lambda s: None, "timeout_s": TIMEOUT_S, "backoff_s": 0.0})
    return RebalanceBot(factory, broker, 1, PARAMS, base_fingerprint=FINGERPRINT, clock=now,
                        sleep=sleep or (lambda s: fake.advance()))


def posts(fake: FakeAlpaca, cid: str | None = None) -> int:
    return sum(1 for r in fake.requests_for("submit_order", "POST") if cid is None or (r.body or {}).get("client_order_id") == cid)


def orders(factory: sessionmaker[Session]) -> dict[str, Order]:
    with factory() as session:
        rows = session.scalars(select(Order).where(Order.broker == "alpaca").order_by(Order.id)).all()
        for row in rows:
            _ = row.fills  # load before the session closes
        session.expunge_all()
    cids = [r.client_order_id for r in rows]
    assert len(cids) == len(set(cids)), "one database row per client order id"
    return {r.client_order_id: r for r in rows}


def check_books(factory: sessionmaker[Session], fake: FakeAlpaca) -> dict[str, Order]:
    """Nothing lost, nothing doubled: the database and the fake's book agree order by order (after a run
    that polled every order it sent)."""
    rows = orders(factory)
    at_broker = {o.client_order_id for o in fake.orders.values()}
    assert at_broker <= set(rows), f"orders at the broker the database does not know: {at_broker - set(rows)}"
    for cid, row in rows.items():
        assert fake.count_orders(cid) <= 1, f"{cid} placed {fake.count_orders(cid)} times"
        placed = fake.order_by_client_id(cid)
        if placed is None:
            assert row.status in ("intent", "rejected", "canceled", "expired"), f"{cid} is {row.status} but not at the broker"
            assert row.broker_order_id is None and not row.fills
            continue
        assert row.broker_order_id == placed.id
        fill_qty = sum(f.qty for f in row.fills)
        assert fill_qty == pytest.approx(row.filled_qty, abs=1e-6), f"{cid}: fills sum to {fill_qty}, order says {row.filled_qty}"
        assert len({f.broker_fill_id for f in row.fills}) == len(row.fills)
        if row.fills:
            assert sum(f.qty * f.price for f in row.fills) / fill_qty == pytest.approx(row.filled_avg_price)
        assert row.status == placed.status and row.filled_qty == pytest.approx(placed.filled_qty)
        assert row.filled_avg_price == (pytest.approx(placed.filled_avg_price) if placed.filled_qty else None)
    return rows


def check_positions(factory: sessionmaker[Session], fake: FakeAlpaca) -> dict[str, float]:
    with factory() as session:
        mirrored = {p.ticker: p.qty for p in session.scalars(select(Position).where(Position.user_id == 1, Position.broker == "alpaca")) if p.qty}
    assert mirrored == pytest.approx({symbol: p.qty for symbol, p in fake.positions.items()})
    return mirrored


def rerun_sends_nothing(factory: sessionmaker[Session], fake: FakeAlpaca) -> None:
    before = posts(fake)
    report = alpaca_bot(factory, fake).run_once(FAST)
    assert report.planned == [] and report.sent == []
    assert any("already rebalanced" in m for m in report.messages)
    assert posts(fake) == before, "a second run for the same week sent an order"
    check_books(factory, fake)


def fills(factory: sessionmaker[Session], cid: str) -> list[tuple[float, float]]:
    with factory() as session:
        return [(f.qty, f.price) for f in session.scalars(select(Fill).join(Order).where(Order.client_order_id == cid).order_by(Fill.id))]


# ---------------------------------------------------------------------------------- happy path


def test_happy_path_sends_each_order_once_records_fills_and_mirrors_positions(trading_db, fake) -> None:
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.decision_week == WEEK and [t.ticker for t in report.planned] == ["AAA", "BBB", "DDD"]
    assert report.sent == PLANNED and report.final == {cid: "filled" for cid in PLANNED}
    assert all(posts(fake, cid) == 1 for cid in PLANNED) and posts(fake) == 3
    rows = check_books(trading_db, fake)
    assert set(rows) == set(PLANNED)
    for trade in report.planned:
        row = rows[client_order_id(1, WEEK, trade.ticker, Side.BUY, 0)]
        assert row.status == "filled" and not row.adopted and row.decision_week == WEEK
        assert row.filled_qty == pytest.approx(trade.qty) and row.submitted_at is not None
        # Alpaca reports cumulative qty and average price only: one fill derived from them.
        assert fills(trading_db, row.client_order_id) == [(pytest.approx(trade.qty), pytest.approx(fake.prices[trade.ticker]))]
    assert check_positions(trading_db, fake) == pytest.approx({t.ticker: t.qty for t in report.planned})
    assert fake.cash == pytest.approx(100_000 - sum(t.notional for t in report.planned))
    rerun_sends_nothing(trading_db, fake)


def test_a_week_without_views_plans_nothing_and_sells_nothing(trading_db, fake) -> None:
    """Views not forecast yet are missing data, not a signal to liquidate the account."""
    with session_scope(trading_db) as session:
        session.execute(delete(Forecast).where(Forecast.forecast_date == WEEK))
    fake.set_position("AAA", 100, 45.0)
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.decision_week == WEEK and report.planned == [] and report.sent == []
    assert any(m.startswith(f"no views for week {WEEK}: nothing planned") for m in report.messages)
    assert posts(fake) == 0 and orders(trading_db) == {}, "no intent recorded: a run once the views exist still trades"
    assert check_positions(trading_db, fake) == {"AAA": 100}


# ---------------------------------------------------------------------------------- order creation faults


def test_timeout_after_the_order_was_accepted_is_resolved_by_lookup(trading_db, fake) -> None:
    fake.accept_then_hang(seconds=3.0)  # the first POST (AAA) is placed, its answer never arrives in time
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.sent == PLANNED and report.final == {cid: "filled" for cid in PLANNED}
    assert posts(fake, AAA) == 1, "the order was looked up, never sent again"
    assert fake.count_requests("get_order_by_client_id") >= 1
    rows = check_books(trading_db, fake)
    assert fake.count_orders() == 3 and rows[AAA].status == "filled"
    with trading_db() as session:
        assert session.scalar(select(BotEvent).where(BotEvent.message.like(f"{AAA}: send failed%"))) is not None
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


@pytest.mark.parametrize(("status", "process"), [(429, False), (500, False), (504, False), (504, True)])
def test_retryable_answer_on_submit_is_one_post_then_lookup_then_at_most_one_more(trading_db, fake, status, process) -> None:
    fake.fail("submit_order", status, process=process)  # the first POST (AAA) only
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    failed = [r for r in fake.requests_for("submit_order") if r.fault == "status"]
    assert len(failed) == 1 and failed[0].body["client_order_id"] == AAA, "alpaca-py did not retry the POST on its own"
    # The bot looked AAA up: absent -> sent exactly once more; present (the gateway placed it) -> adopted as is.
    assert posts(fake, AAA) == (1 if process else 2)
    assert fake.count_orders(AAA) == 1 and report.sent == PLANNED
    rows = check_books(trading_db, fake)
    assert {cid: rows[cid].status for cid in PLANNED} == {cid: "filled" for cid in PLANNED}
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_persistent_5xx_leaves_intents_that_the_next_run_sends_exactly_once(trading_db, fake) -> None:
    fake.fail("submit_order", 500, times=None)
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.sent == [] and fake.count_orders() == 0
    assert all(posts(fake, cid) == 2 for cid in PLANNED), "one POST, a lookup that found nothing, one more POST: no more"
    assert sum("the intent stays" in m for m in report.messages) == 3
    rows = check_books(trading_db, fake)
    assert {cid: r.status for cid, r in rows.items()} == {cid: "intent" for cid in PLANNED}

    fake.clear_faults()
    again = alpaca_bot(trading_db, fake).run_once(FAST)
    assert again.planned == [] and again.sent == PLANNED, "the same intents, not a new plan"
    assert all(posts(fake, cid) == 3 for cid in PLANNED) and fake.count_orders() == 3
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "filled" for cid in PLANNED}
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_a_5xx_then_a_rejection_on_the_one_resend_is_recorded_and_the_run_goes_on(trading_db, fake) -> None:
    fake.fail("submit_order", 500)  # AAA: no answer we can trust...
    fake.reject_orders(403, "insufficient buying power")  # ...and the one resend after the lookup is refused
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert list(report.rejected) == [AAA] and "insufficient buying power" in report.rejected[AAA]
    assert report.sent == [BBB, DDD]
    rows = check_books(trading_db, fake)
    assert rows[AAA].status == "rejected" and "insufficient buying power" in rows[AAA].error
    assert posts(fake, AAA) == 2 and fake.count_orders(AAA) == 0
    assert rows[BBB].status == rows[DDD].status == "filled"
    rerun_sends_nothing(trading_db, fake)


# ---------------------------------------------------------------------------------- duplicates and adoption


def test_our_order_already_at_the_broker_but_unknown_to_the_database_is_adopted_not_doubled(trading_db, fake) -> None:
    """A previous process placed AAA with the bot's deterministic id and crashed before recording it
    (or its database was restored from a backup): the order is open at the broker, unknown here."""
    outsider = AlpacaPaperBroker(fake.api_key, fake.secret_key, fake.base_url, timeout_s=TIMEOUT_S)
    placed = outsider.submit_order(OrderRequest(AAA, "AAA", Side.BUY, qty=611.300887))
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.adopted == [AAA]
    assert [t.ticker for t in report.planned] == ["AAA", "BBB", "DDD"]
    assert report.sent == [BBB, DDD], "AAA is already at the broker: not sent again"
    assert posts(fake, AAA) == 1 and fake.count_orders(AAA) == 1
    rows = check_books(trading_db, fake)
    assert rows[AAA].broker_order_id == placed.broker_order_id and rows[AAA].status == "filled"
    assert rows[AAA].decision_week == WEEK and rows[AAA].intent.get("adopted") is True
    assert all(rows[cid].status == "filled" for cid in PLANNED)
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_duplicate_client_order_id_at_send_time_adopts_the_existing_order(trading_db, fake, monkeypatch) -> None:
    """Between writing the intents and sending, another process placed AAA under the same id: the
    broker answers 422 "client_order_id must be unique" and the bot adopts that order."""
    bot = alpaca_bot(trading_db, fake)
    outsider = AlpacaPaperBroker(fake.api_key, fake.secret_key, fake.base_url, timeout_s=TIMEOUT_S)
    write_intents = bot.write_intents

    def write_then_race(week, trades):  # type: ignore[no-untyped-def]
        ids = write_intents(week, trades)
        outsider.submit_order(OrderRequest(AAA, "AAA", Side.BUY, qty=7))
        return ids

    monkeypatch.setattr(bot, "write_intents", write_then_race)
    report = bot.run_once(FAST)
    assert report.sent == PLANNED and posts(fake, AAA) == 2 and fake.count_orders(AAA) == 1
    duplicate = [r for r in fake.requests_for("submit_order") if r.body["client_order_id"] == AAA][1]
    assert duplicate.fault is None  # the fake itself refused it: 422 client_order_id must be unique
    rows = check_books(trading_db, fake)
    assert rows[AAA].filled_qty == pytest.approx(7) and rows[AAA].status == "filled", "the broker's order, as it is"
    with trading_db() as session:
        assert session.scalar(select(BotEvent).where(BotEvent.message == f"{AAA} already at the broker: adopted its state")) is not None
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_an_unknown_open_order_placed_by_hand_is_adopted_and_reported(trading_db, fake) -> None:
    by_hand = AlpacaPaperBroker(fake.api_key, fake.secret_key, fake.base_url, timeout_s=TIMEOUT_S)
    by_hand.submit_order(OrderRequest("placed-by-hand", "CCC", Side.BUY, qty=5))
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.adopted == ["placed-by-hand"] and report.sent == PLANNED
    rows = check_books(trading_db, fake)
    manual = rows["placed-by-hand"]
    assert manual.adopted and manual.ticker == "CCC" and manual.decision_week is None and manual.status == "filled"
    assert fake.count_orders("placed-by-hand") == 1 and posts(fake) == 4
    with trading_db() as session:
        assert session.scalar(select(BotEvent).where(BotEvent.level == "warning", BotEvent.message.like("adopted an order%placed-by-hand"))) is not None
    assert check_positions(trading_db, fake)["CCC"] == pytest.approx(5)
    rerun_sends_nothing(trading_db, fake)
    assert len(orders(trading_db)) == 4, "adopted once, not again on the next run"


# ---------------------------------------------------------------------------------- fills and rejections


def test_partial_fills_are_recorded_incrementally_without_duplicates(trading_db, fake) -> None:
    fake.partial_fill_next(0.4)  # AAA: 40% executes on arrival
    price = fake.prices["AAA"]
    sleeps: list[int] = []

    def market(_: float) -> None:
        sleeps.append(1)
        if len(sleeps) == 2:
            fake.fill(BBB)
            fake.fill(DDD)
        if len(sleeps) == 3:
            fake.fill(AAA, price=price * 1.01)  # the rest, a bit higher

    report = alpaca_bot(trading_db, fake, sleep=market).run_once(FAST)
    assert report.final == {cid: "filled" for cid in PLANNED} and len(sleeps) == 3
    qty = report.planned[0].qty
    assert fake.count_requests("get_order_by_client_id") >= 8, "AAA was polled several times while partially filled"
    assert fills(trading_db, AAA) == [(pytest.approx(round(qty * 0.4, 9)), pytest.approx(price)),
                                      (pytest.approx(qty - round(qty * 0.4, 9)), pytest.approx(price * 1.01))]
    rows = check_books(trading_db, fake)
    assert rows[AAA].filled_qty == pytest.approx(qty)
    assert rows[AAA].filled_avg_price == pytest.approx(price * (0.4 + 0.6 * 1.01))
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)
    assert len(fills(trading_db, AAA)) == 2


def test_a_partial_fill_left_open_is_completed_by_the_next_runs_reconcile(trading_db, fake) -> None:
    fake.partial_fill_next(0.25)
    report = alpaca_bot(trading_db, fake, sleep=lambda s: None).run_once(NO_WAIT)
    assert report.final[AAA].startswith("partially_filled") and "next run reconciles" in report.final[AAA]
    assert len(fills(trading_db, AAA)) == 1
    check_books(trading_db, fake)
    fake.advance()
    again = alpaca_bot(trading_db, fake).run_once(FAST)
    assert again.sent == [] and again.reconciled == {cid: "filled" for cid in PLANNED}
    assert [q for q, _ in fills(trading_db, AAA)] == [pytest.approx(round(report.planned[0].qty * 0.25, 9)),
                                                     pytest.approx(report.planned[0].qty - round(report.planned[0].qty * 0.25, 9))]
    check_books(trading_db, fake)
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_a_rejected_order_is_recorded_with_its_reason_and_the_rebalance_goes_on(trading_db, fake) -> None:
    fake.reject_orders(403, "insufficient buying power")  # the first order (AAA)
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert list(report.rejected) == [AAA] and "insufficient buying power" in report.rejected[AAA]
    assert report.sent == [BBB, DDD] and report.final == {BBB: "filled", DDD: "filled"}
    rows = check_books(trading_db, fake)
    assert rows[AAA].status == "rejected" and "HTTP 403" in rows[AAA].error and "insufficient buying power" in rows[AAA].error
    assert posts(fake, AAA) == 1 and fake.count_orders(AAA) == 0, "a rejection is final: not resent"
    assert set(check_positions(trading_db, fake)) == {"BBB", "DDD"}
    rerun_sends_nothing(trading_db, fake)
    assert orders(trading_db)[AAA].status == "rejected"


# ---------------------------------------------------------------------------------- connection faults


@pytest.mark.parametrize("fault", ["drop", "reset"])
def test_connection_lost_on_the_second_submit(trading_db, fake, monkeypatch, fault) -> None:
    """drop: BBB is placed and half the answer is lost; reset: the connection closes before the server acts."""
    bot = alpaca_bot(trading_db, fake)
    send, calls = bot.send, []

    def send_with_fault(order_id, report):  # type: ignore[no-untyped-def]
        calls.append(order_id)
        if len(calls) == 2:
            (fake.drop_connection if fault == "drop" else fake.reset_connection)("submit_order")
        send(order_id, report)

    monkeypatch.setattr(bot, "send", send_with_fault)
    report = bot.run_once(FAST)
    assert [r.fault for r in fake.requests_for("submit_order")].count(fault) == 1
    assert report.sent == PLANNED and report.final == {cid: "filled" for cid in PLANNED}
    assert posts(fake, BBB) == (1 if fault == "drop" else 2), "looked up first; resent only when confirmed absent"
    assert fake.count_orders(BBB) == 1
    check_books(trading_db, fake)
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_broker_unreachable_mid_rebalance_then_the_next_run_reconciles(trading_db, fake, monkeypatch) -> None:
    """After AAA is sent every connection is reset (reads and writes): the run stops, BBB and DDD stay
    intents, AAA stays open; the next process reconciles AAA and sends BBB and DDD exactly once."""
    bot = alpaca_bot(trading_db, fake, sleep=lambda s: None)
    send, calls = bot.send, []

    def send_then_outage(order_id, report):  # type: ignore[no-untyped-def]
        calls.append(order_id)
        if len(calls) == 2:
            fake.reset_connection("*", times=None)
        send(order_id, report)

    monkeypatch.setattr(bot, "send", send_then_outage)
    with pytest.raises(TemporaryBrokerError):  # the sends leave intents; mirroring positions cannot: the run stops
        bot.run_once(NO_WAIT)
    rows = check_books(trading_db, fake)
    assert {cid: r.status for cid, r in rows.items()} == {AAA: "accepted", BBB: "intent", DDD: "intent"}
    # The safety check's price read failed before any POST; the lookup could not tell either: no blind send.
    assert posts(fake) == 1 and posts(fake, BBB) == posts(fake, DDD) == 0 and fake.count_orders() == 1
    assert fake.count_requests("get_order_by_client_id") > 0

    fake.clear_faults()
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.planned == [] and report.sent == [BBB, DDD] and report.reconciled[AAA] == "accepted"
    assert all(posts(fake, cid) == 1 and fake.count_orders(cid) == 1 for cid in PLANNED)
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "filled" for cid in PLANNED}
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_dropped_connections_on_reads_are_retried_without_side_effects(trading_db, fake) -> None:
    fake.drop_connection("get_order_by_client_id", times=2)
    fake.reset_connection("list_positions")
    fake.drop_connection("get_account")
    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.sent == PLANNED and report.final == {cid: "filled" for cid in PLANNED}
    assert all(f.exhausted for f in fake.faults)
    assert posts(fake) == 3
    check_books(trading_db, fake)
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


# ---------------------------------------------------------------------------------- crashes


def test_process_killed_between_writing_intents_and_sending(trading_db, fake, monkeypatch) -> None:
    bot = alpaca_bot(trading_db, fake)

    def crash(order_id, report):  # type: ignore[no-untyped-def]
        raise SystemExit("killed by the operating system")

    monkeypatch.setattr(bot, "send", crash)
    with pytest.raises(SystemExit):
        bot.run_once(FAST)
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "intent" for cid in PLANNED}
    assert posts(fake) == 0

    report = alpaca_bot(trading_db, fake).run_once(FAST)  # a new process: new bot, broker and client
    assert report.planned == [] and report.sent == PLANNED
    assert all(posts(fake, cid) == 1 for cid in PLANNED) and fake.count_orders() == 3
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "filled" for cid in PLANNED}
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


def test_process_killed_after_the_broker_accepted_but_before_recording(trading_db, fake, monkeypatch) -> None:
    bot = alpaca_bot(trading_db, fake)
    inner = bot.broker.inner  # type: ignore[attr-defined]
    submit = inner.submit_order

    def submit_then_crash(request):  # type: ignore[no-untyped-def]
        submit(request)
        raise SystemExit("killed right after the POST returned")

    monkeypatch.setattr(inner, "submit_order", submit_then_crash)
    with pytest.raises(SystemExit):
        bot.run_once(FAST)
    assert fake.count_orders(AAA) == 1 and posts(fake) == 1
    rows = orders(trading_db)  # the database is behind the broker here: AAA was placed, its intent not updated
    assert {cid: r.status for cid, r in rows.items()} == {cid: "intent" for cid in PLANNED} and rows[AAA].broker_order_id is None

    report = alpaca_bot(trading_db, fake).run_once(FAST)
    assert report.reconciled[AAA] == "accepted" and report.sent == [BBB, DDD]
    assert all(posts(fake, cid) == 1 for cid in PLANNED) and fake.count_orders() == 3
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "filled" for cid in PLANNED}
    check_positions(trading_db, fake)
    rerun_sends_nothing(trading_db, fake)


# ---------------------------------------------------------------------------------- kill switch, live URL


def test_kill_switch_cancels_open_orders_at_the_broker_and_blocks_runs_until_resumed(trading_db, fake) -> None:
    bot = alpaca_bot(trading_db, fake, sleep=lambda s: None)
    report = bot.run_once(NO_WAIT)
    assert report.sent == PLANNED and len(fake.open_orders()) == 3
    canceled = kill(trading_db, bot.broker, 1)
    assert sorted(canceled) == sorted(PLANNED) and fake.open_orders() == []
    assert all(fake.order_by_client_id(cid).status == "canceled" for cid in PLANNED)
    assert fake.count_requests("cancel_order") == 3
    assert {cid: r.status for cid, r in check_books(trading_db, fake).items()} == {cid: "canceled" for cid in PLANNED}
    before = len(fake.requests)
    with pytest.raises(BotKilledError, match="kill switch"):
        alpaca_bot(trading_db, fake).run_once(FAST)
    assert len(fake.requests) == before, "a killed bot does not even talk to the broker"

    bot_module.resume(trading_db, "alpaca", 1)
    rerun_sends_nothing(trading_db, fake)  # canceled orders of the week are not resent after a resume
    assert {cid: r.status for cid, r in orders(trading_db).items()} == {cid: "canceled" for cid in PLANNED}


def test_kill_switch_during_a_run_stops_before_the_next_send(trading_db, fake, monkeypatch) -> None:
    bot = alpaca_bot(trading_db, fake, sleep=lambda s: None)
    send, calls = bot.send, []

    def send_then_kill(order_id, report):  # type: ignore[no-untyped-def]
        calls.append(order_id)
        if len(calls) == 2:  # the operator hits the kill switch from another process
            kill(trading_db, alpaca_bot(trading_db, fake).broker, 1)
        send(order_id, report)

    monkeypatch.setattr(bot, "send", send_then_kill)
    with pytest.raises(BotKilledError):
        bot.run_once(NO_WAIT)
    assert posts(fake) == 1 and fake.order_by_client_id(AAA).status == "canceled"
    rows = check_books(trading_db, fake)
    assert rows[AAA].status == "canceled"
    assert rows[BBB].status == rows[DDD].status == "canceled" and rows[BBB].error == "kill switch before sending"


def test_live_url_is_refused_before_any_request(trading_db, fake, monkeypatch) -> None:
    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a request was made")

    monkeypatch.setattr(requests.Session, "send", no_network)
    for url in ("https://api.alpaca.markets", "https://api.alpaca.markets/v2"):
        settings = BrokerSettings(kind="alpaca", alpaca_base_url=url)
        with pytest.raises(OperationalBrokerError, match="paper trading only, never live trading"):
            make_broker("alpaca", settings, trading_db, 1, PARAMS.max_weight, clock=now)
    assert fake.requests == [] and orders(trading_db) == {}
