"""AlpacaPaperBroker through alpaca-py's real code path against the fake Alpaca server.

Nothing of alpaca-py is patched: requests go over loopback HTTP to :mod:`tests.fakes.alpaca_server`,
so these tests also prove that alpaca-py's own retry loop is really off for order creation (the fake
counts the POSTs) and that every call is bounded by the timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from advisor.config import ALPACA_PAPER_URL, BrokerSettings
from advisor.errors import ConfigError
from advisor.trading import alpaca_broker
from advisor.trading.alpaca_broker import AlpacaPaperBroker, check_paper_url
from advisor.trading.broker import OrderRequest, OrderStatus, Side
from advisor.trading.errors import (
    DuplicateClientOrderIdError,
    OperationalBrokerError,
    OrderRejectedError,
    TemporaryBrokerError,
)
from tests.fakes.alpaca_server import FakeAlpaca

TIMEOUT_S = 0.5
BACKOFF_S = 0.1


@pytest.fixture
def fake_alpaca() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(prices={"AAPL": 100.0, "MSFT": 250.0}, cash=100_000.0) as fake:
        yield fake


@pytest.fixture
def fake_alpaca_sleeps() -> list[float]:
    """The backoff delays the broker asked for (nothing really sleeps)."""
    return []


@pytest.fixture
def broker(fake_alpaca: FakeAlpaca, fake_alpaca_sleeps: list[float]) -> AlpacaPaperBroker:
    return AlpacaPaperBroker(
        fake_alpaca.api_key,
        fake_alpaca.secret_key,
        fake_alpaca.base_url,
        timeout_s=TIMEOUT_S,
        read_retries=3,
        backoff_s=BACKOFF_S,
        sleep=fake_alpaca_sleeps.append,
    )


def buy(client_order_id: str, ticker: str = "AAPL", *, qty: float | None = None, notional: float | None = None) -> OrderRequest:
    return OrderRequest(client_order_id, ticker, Side.BUY, qty=qty, notional=notional)


# ---------------------------------------------------------------------------------- happy path


def test_account_and_clock_are_mapped(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    account = broker.get_account()
    assert (account.cash, account.equity, account.buying_power, account.currency) == (100_000.0, 100_000.0, 100_000.0, "USD")

    new_york = ZoneInfo("America/New_York")
    fake_alpaca.set_clock(
        datetime(2024, 3, 8, 10, 0, tzinfo=new_york), True,
        datetime(2024, 3, 11, 9, 30, tzinfo=new_york), datetime(2024, 3, 8, 16, 0, tzinfo=new_york),
    )
    clock = broker.get_clock()
    assert clock.is_open is True
    assert clock.timestamp == datetime(2024, 3, 8, 15, 0, tzinfo=UTC)
    assert clock.timestamp.tzinfo is UTC
    assert clock.next_open == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)  # after the DST switch
    assert clock.next_close == datetime(2024, 3, 8, 21, 0, tzinfo=UTC)


def test_fractional_order_lifecycle_submit_lookup_list_cancel(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    order = broker.submit_order(buy("rb-1-AAPL", qty=1.25))
    assert order.status is OrderStatus.NEW and order.qty == 1.25 and order.notional is None
    assert order.side is Side.BUY and order.ticker == "AAPL" and order.filled_qty == 0.0 and order.filled_avg_price is None
    assert order.submitted_at is not None and order.submitted_at.tzinfo is UTC

    sent = fake_alpaca.requests_for("submit_order")[0].body
    assert sent == {"symbol": "AAPL", "qty": 1.25, "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": "rb-1-AAPL"}

    found = broker.get_order_by_client_id("rb-1-AAPL")
    assert found is not None and found.broker_order_id == order.broker_order_id
    assert [o.client_order_id for o in broker.list_open_orders()] == ["rb-1-AAPL"]

    broker.cancel_order(order.broker_order_id)
    assert fake_alpaca.orders[order.broker_order_id].status == "canceled"
    canceled = broker.get_order_by_client_id("rb-1-AAPL")
    assert canceled is not None and canceled.status is OrderStatus.CANCELED and canceled.status.is_final
    assert broker.list_open_orders() == []
    broker.cancel_order(order.broker_order_id)  # already final: nothing to cancel, no error
    assert fake_alpaca.count_requests("cancel_order") == 2

    # Alpaca never lets a client order id be reused, not even after a cancel.
    with pytest.raises(DuplicateClientOrderIdError) as excinfo:
        broker.submit_order(buy("rb-1-AAPL", qty=1.25))
    assert excinfo.value.client_order_id == "rb-1-AAPL"
    assert fake_alpaca.count_orders("rb-1-AAPL") == 1


def test_notional_order_fills_into_a_position(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    order = broker.submit_order(buy("rb-2-MSFT", "MSFT", notional=500.004))
    assert order.notional == 500.0 and order.qty is None  # sent with Alpaca's 2 decimals for USD
    fake_alpaca.fill("rb-2-MSFT", price=250.0)

    filled = broker.get_order_by_client_id("rb-2-MSFT")
    assert filled is not None and filled.status is OrderStatus.FILLED
    assert filled.filled_qty == pytest.approx(2.0) and filled.filled_avg_price == pytest.approx(250.0)
    positions = broker.get_positions()
    assert [(p.ticker, p.qty, p.avg_entry_price, p.market_value) for p in positions] == [("MSFT", 2.0, 250.0, 500.0)]
    assert broker.get_account().cash == pytest.approx(99_500.0)
    assert broker.latest_price("MSFT") == 250.0  # the held position's current price
    assert broker.latest_price("AAPL") is None  # not held, no price source given


def test_latest_price_falls_back_to_the_given_lookup(fake_alpaca: FakeAlpaca) -> None:
    broker = AlpacaPaperBroker(fake_alpaca.api_key, fake_alpaca.secret_key, fake_alpaca.base_url, timeout_s=TIMEOUT_S,
                               price_lookup={"AAPL": 99.5}.get)
    assert broker.latest_price("AAPL") == 99.5
    assert broker.latest_price("ZZZ") is None


def test_qty_is_rounded_to_alpacas_nine_decimals(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    order = broker.submit_order(buy("rb-3-AAPL", qty=1 / 3))  # 0.3333333333333333 would be refused (422)
    assert order.qty == 0.333333333
    assert fake_alpaca.order_by_client_id("rb-3-AAPL") is not None


def test_list_open_orders_pages_through_full_pages(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alpaca_broker, "ORDERS_PAGE", 2)  # our page size, so 5 orders need several pages
    for i in range(5):
        broker.submit_order(buy(f"rb-page-{i}", qty=1))
        time.sleep(0.002)  # distinct submission times, as at the real broker
    fake_alpaca.fill("rb-page-2")
    listed = broker.list_open_orders()
    assert sorted(o.client_order_id for o in listed) == ["rb-page-0", "rb-page-1", "rb-page-3", "rb-page-4"]
    assert fake_alpaca.count_requests("list_orders") > 1


# ---------------------------------------------------------------------------------- paper only, keys


@pytest.mark.parametrize(
    "url",
    [
        "https://api.alpaca.markets",  # live money
        "https://api.alpaca.markets/v2",
        "https://broker-api.alpaca.markets",
        "http://paper-api.alpaca.markets",  # not TLS
        "https://example.com",
        "http://10.0.0.5:8080",
        "https://paper-api.alpaca.markets/some/path",
        "https://user:pw@paper-api.alpaca.markets",
    ],
)
def test_only_the_paper_endpoint_or_loopback_is_accepted(url: str) -> None:
    with pytest.raises(OperationalBrokerError) as excinfo:
        AlpacaPaperBroker("key-id", "secret-value", url)
    assert "paper" in str(excinfo.value)


def test_live_url_message_says_no_live_trading() -> None:
    with pytest.raises(OperationalBrokerError, match="paper trading only, never live trading"):
        check_paper_url("https://api.alpaca.markets")


def test_paper_and_loopback_urls_are_normalised() -> None:
    assert check_paper_url("https://paper-api.alpaca.markets/") == ALPACA_PAPER_URL
    assert check_paper_url("https://paper-api.alpaca.markets/v2") == ALPACA_PAPER_URL
    assert check_paper_url("http://localhost:8123/") == "http://localhost:8123"
    assert check_paper_url("http://127.0.0.1:8123") == "http://127.0.0.1:8123"


def test_bad_keys_stop_the_bot_and_never_leak(fake_alpaca: FakeAlpaca, caplog: pytest.LogCaptureFixture) -> None:
    secret = "super-secret-value-42"
    key = "PKWRONGKEY123"
    broker = AlpacaPaperBroker(key, secret, fake_alpaca.base_url, timeout_s=TIMEOUT_S, sleep=lambda s: None)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OperationalBrokerError) as read_error:
        broker.get_account()
    assert "401" in str(read_error.value)
    assert fake_alpaca.count_requests("get_account") == 1  # auth errors are not retried
    assert fake_alpaca.requests_for("get_account")[0].authorized is False
    with pytest.raises(OperationalBrokerError) as submit_error:
        broker.submit_order(buy("rb-key-1", qty=1))
    assert fake_alpaca.count_orders() == 0

    fake_alpaca.fail("get_clock", 503, times=1)  # a logged retry must not carry the keys either
    with pytest.raises(OperationalBrokerError):
        broker.get_clock()
    for text in (str(read_error.value), repr(read_error.value), str(submit_error.value), repr(broker), caplog.text):
        assert secret not in text and key not in text
    assert read_error.value.__cause__ is None and read_error.value.__suppress_context__
    assert "retrying" in caplog.text


def test_forbidden_read_is_operational_and_not_retried(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca, fake_alpaca_sleeps: list[float]) -> None:
    fake_alpaca.fail("list_positions", 403, message="forbidden.", times=None)
    with pytest.raises(OperationalBrokerError, match="403"):
        broker.get_positions()
    assert fake_alpaca.count_requests("list_positions") == 1 and fake_alpaca_sleeps == []


def test_blocked_account_is_operational(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.account_overrides["trading_blocked"] = True
    with pytest.raises(OperationalBrokerError, match="blocked"):
        broker.get_account()


def test_from_settings_reads_keys_from_the_environment(fake_alpaca: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = BrokerSettings(kind="alpaca", alpaca_base_url=fake_alpaca.base_url)
    with pytest.raises(ConfigError, match="ADVISOR_ALPACA_API_KEY"):
        AlpacaPaperBroker.from_settings(settings)
    monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", fake_alpaca.api_key)
    monkeypatch.setenv("ADVISOR_ALPACA_SECRET_KEY", fake_alpaca.secret_key)
    broker = AlpacaPaperBroker.from_settings(settings, timeout_s=TIMEOUT_S)
    assert broker.get_account().cash == 100_000.0
    with pytest.raises(OperationalBrokerError, match="paper"):
        AlpacaPaperBroker.from_settings(BrokerSettings(kind="alpaca", alpaca_base_url="https://api.alpaca.markets"))


# ---------------------------------------------------------------------------------- order creation faults


@pytest.mark.parametrize("status", [429, 500, 503, 504])
def test_submit_is_sent_exactly_once_on_retryable_answers(
    broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca, fake_alpaca_sleeps: list[float], status: int
) -> None:
    fake_alpaca.fail("submit_order", status, times=None)
    with pytest.raises(TemporaryBrokerError, match=str(status)):
        broker.submit_order(buy("rb-once", qty=1))
    # alpaca-py alone would have sent 4 POSTs on 429/504 (3 retries, 3 s apart).
    assert fake_alpaca.count_requests("submit_order") == 1
    assert fake_alpaca.count_orders() == 0
    assert fake_alpaca_sleeps == []


def test_gateway_504_after_the_order_was_placed_is_resolved_by_lookup(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.fail("submit_order", 504, process=True)
    with pytest.raises(TemporaryBrokerError, match="look it up by its client order id"):
        broker.submit_order(buy("rb-504", qty=2))
    assert fake_alpaca.count_requests("submit_order") == 1
    assert fake_alpaca.count_orders("rb-504") == 1
    found = broker.get_order_by_client_id("rb-504")
    assert found is not None and found.qty == 2.0 and found.status is OrderStatus.NEW


def test_timeout_after_the_order_was_accepted(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.accept_then_hang(seconds=5.0)
    started = time.monotonic()
    with pytest.raises(TemporaryBrokerError, match="no answer within"):
        broker.submit_order(buy("rb-hang", notional=150.0))
    assert time.monotonic() - started < TIMEOUT_S + 1.0  # bounded by the timeout, not by the server
    assert fake_alpaca.count_requests("submit_order") == 1
    found = broker.get_order_by_client_id("rb-hang")
    assert found is not None and found.notional == 150.0
    assert fake_alpaca.count_orders("rb-hang") == 1 and fake_alpaca.count_orders() == 1


def test_connection_dropped_mid_answer_on_submit(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.drop_connection("submit_order")
    with pytest.raises(TemporaryBrokerError):
        broker.submit_order(buy("rb-drop", qty=1))
    assert fake_alpaca.count_requests("submit_order") == 1
    assert broker.get_order_by_client_id("rb-drop") is not None
    assert fake_alpaca.count_orders() == 1


def test_duplicate_client_order_id(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    first = broker.submit_order(buy("rb-dup", qty=1))
    with pytest.raises(DuplicateClientOrderIdError) as excinfo:
        broker.submit_order(buy("rb-dup", qty=1))
    assert excinfo.value.client_order_id == "rb-dup" and "must be unique" in str(excinfo.value)
    assert fake_alpaca.count_requests("submit_order") == 2
    assert fake_alpaca.count_orders("rb-dup") == 1
    assert broker.get_order_by_client_id("rb-dup").broker_order_id == first.broker_order_id  # type: ignore[union-attr]


def test_rejected_orders(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    with pytest.raises(OrderRejectedError, match="insufficient buying power"):
        broker.submit_order(buy("rb-big", notional=1_000_000.0))
    with pytest.raises(OrderRejectedError, match="insufficient qty available"):
        broker.submit_order(OrderRequest("rb-short", "AAPL", Side.SELL, qty=3))
    with pytest.raises(OrderRejectedError, match="not found"):
        broker.submit_order(buy("rb-unknown", "NOPE", qty=1))
    fake_alpaca.reject_orders(422, "asset AAPL is not fractionable")
    with pytest.raises(OrderRejectedError, match="not fractionable"):
        broker.submit_order(buy("rb-frac", qty=0.5))
    assert fake_alpaca.count_orders() == 0
    assert not isinstance(OrderRejectedError("x"), TemporaryBrokerError)


# ---------------------------------------------------------------------------------- read faults


@pytest.mark.parametrize(("endpoint", "status"), [("get_account", 500), ("list_orders", 429), ("get_clock", 504)])
def test_reads_retry_with_backoff_and_succeed(
    broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca, fake_alpaca_sleeps: list[float], endpoint: str, status: int
) -> None:
    fake_alpaca.fail(endpoint, status, times=2)
    call = {"get_account": broker.get_account, "list_orders": broker.list_open_orders, "get_clock": broker.get_clock}[endpoint]
    assert call() is not None
    assert fake_alpaca.count_requests(endpoint) == 3
    assert fake_alpaca_sleeps == [BACKOFF_S, 2 * BACKOFF_S]


def test_reads_give_up_after_the_retries(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca, fake_alpaca_sleeps: list[float]) -> None:
    fake_alpaca.fail("list_positions", 500, times=None)
    with pytest.raises(TemporaryBrokerError, match="gave up after 4 attempts"):
        broker.get_positions()
    assert fake_alpaca.count_requests("list_positions") == 4
    assert fake_alpaca_sleeps == [BACKOFF_S, 2 * BACKOFF_S, 4 * BACKOFF_S]


def test_read_timeout_is_retried(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.delay("get_account", 3.0)
    assert broker.get_account().cash == 100_000.0
    assert fake_alpaca.count_requests("get_account") == 2


def test_a_server_that_never_answers_is_bounded_by_the_timeout(fake_alpaca: FakeAlpaca) -> None:
    broker = AlpacaPaperBroker(fake_alpaca.api_key, fake_alpaca.secret_key, fake_alpaca.base_url, timeout_s=0.3, read_retries=1,
                               sleep=lambda s: None)
    fake_alpaca.hang_after_processing("get_clock", 10.0, times=None)
    started = time.monotonic()
    with pytest.raises(TemporaryBrokerError, match="no answer within 0.3 s"):
        broker.get_clock()
    assert time.monotonic() - started < 2.0
    assert fake_alpaca.count_requests("get_clock") == 2


def test_connection_dropped_mid_answer_on_reads_is_retried(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    broker.submit_order(buy("rb-read", qty=1))
    fake_alpaca.drop_connection("get_order_by_client_id")
    fake_alpaca.reset_connection("list_positions")
    found = broker.get_order_by_client_id("rb-read")
    assert found is not None and found.client_order_id == "rb-read"
    assert [r.fault for r in fake_alpaca.requests_for("get_order_by_client_id")] == ["drop", None]
    assert broker.get_positions() == []
    assert [r.fault for r in fake_alpaca.requests_for("list_positions")] == ["reset", None]


def test_partial_fill_is_visible(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.partial_fill_next(0.4)
    order = broker.submit_order(buy("rb-part", qty=10))
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.filled_qty == 4.0

    fake_alpaca.fill("rb-part", qty=2, price=110.0)
    partial = broker.get_order_by_client_id("rb-part")
    assert partial is not None and partial.status is OrderStatus.PARTIALLY_FILLED and not partial.status.is_final
    assert partial.filled_qty == 6.0 and partial.filled_avg_price == pytest.approx((4 * 100 + 2 * 110) / 6)
    assert [o.client_order_id for o in broker.list_open_orders()] == ["rb-part"]

    fake_alpaca.expire_open_orders()  # end of the day: the rest of a day order expires
    expired = broker.get_order_by_client_id("rb-part")
    assert expired is not None and expired.status is OrderStatus.EXPIRED and expired.filled_qty == 6.0
    assert [(p.ticker, p.qty) for p in broker.get_positions()] == [("AAPL", 6.0)]


def test_unknown_order_is_none_but_a_non_alpaca_404_is_not(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    assert broker.get_order_by_client_id("never-sent") is None
    broker.submit_order(buy("rb-404", qty=1))
    fake_alpaca.not_found("get_order_by_client_id")
    assert broker.get_order_by_client_id("rb-404") is None  # Alpaca said "order not found"
    # An HTML 404 (a proxy, a wrong path) must not look like "never placed": the caller would resend.
    fake_alpaca.add_fault("get_order_by_client_id", "status", status=404, body="<html><h1>404</h1></html>")
    with pytest.raises(OperationalBrokerError, match="404"):
        broker.get_order_by_client_id("rb-404")
    assert broker.get_order_by_client_id("rb-404") is not None


def test_cancel_unknown_order_is_quiet_and_a_bad_id_is_refused(broker: AlpacaPaperBroker, fake_alpaca: FakeAlpaca) -> None:
    broker.cancel_order("00000000-0000-4000-8000-000000000000")
    assert [r.endpoint for r in fake_alpaca.requests] == ["cancel_order"]
    with pytest.raises(OperationalBrokerError, match="not an Alpaca order id"):
        broker.cancel_order("local-1234")
    assert fake_alpaca.count_requests("cancel_order") == 1
