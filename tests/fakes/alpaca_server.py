"""A fake Alpaca paper trading API on 127.0.0.1, in the JSON shapes alpaca-py 0.44 parses, with a book and faults.

Why: the Alpaca adapter must be tested through alpaca-py's real code path (its request building, its
own retry loop, its pydantic models) without the internet, and the interesting cases are the ones a
real server produces only by bad luck: a 504 after the order was placed, a timeout after acceptance,
a connection dropped halfway through an answer.

Endpoints (all require the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers, else 401); the name
in brackets is the *endpoint name* used by the fault API and the request log:

* ``GET /v2/account`` [get_account], ``GET /v2/clock`` [get_clock]
* ``GET /v2/positions`` [list_positions], ``GET /v2/positions/{symbol}`` [get_position] (404 if flat)
* ``GET /v2/orders?status=open|closed|all&limit=&direction=&until=&after=&symbols=`` [list_orders]
* ``POST /v2/orders`` [submit_order]: market orders, ``qty`` (fractional, <= 9 decimals) or
  ``notional`` (>= 1, <= 2 decimals), ``client_order_id`` unique forever — a reuse gets
  ``422 {"code": 40010001, "message": "client_order_id must be unique"}`` even after a cancel; buys
  beyond buying power and sells beyond the position get ``403 {"code": 40310000, ...}``
* ``GET /v2/orders/{id}`` [get_order], ``GET /v2/orders:by_client_order_id?client_order_id=``
  [get_order_by_client_id], ``DELETE /v2/orders/{id}`` [cancel_order] (204; 422 when final; 404)

The book: orders (server-made UUIDs, status, cumulative filled qty and average price), positions
(average entry price) and cash; prices per ticker (``prices``). A new order is ``new`` (market open)
or ``accepted`` (closed) and fills when the test calls :meth:`FakeAlpaca.fill` (full or partial) or
:meth:`FakeAlpaca.advance`, or at once with ``fill_on_submit=True``.

Faults (:meth:`FakeAlpaca.add_fault` and the helpers after it) are per endpoint name (or ``"*"``), used
``times`` times (None: forever), first added first used:

* ``status``: answer ``status`` with an Alpaca-like JSON body; the request is *not* processed, unless
  ``process=True`` (a gateway 504 after the backend placed the order)
* ``delay``: wait ``delay_s``, then process and answer (a slow server; with POST the order appears late)
* ``hang``: process (the order is in the book), then wait ``delay_s`` before answering — the client
  times out although the server acted (``accept_then_hang``)
* ``drop``: process, send the headers and half the body, close the connection
* ``reset``: close the connection without processing or answering
* ``partial_fill`` (submit_order): accept and fill ``fraction`` of the order at once

Every request is recorded (:attr:`FakeAlpaca.requests`, :meth:`requests_for`, :meth:`count_requests`).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
ENDPOINTS = frozenset(
    {
        "get_account",
        "get_clock",
        "list_positions",
        "get_position",
        "list_orders",
        "submit_order",
        "get_order",
        "get_order_by_client_id",
        "cancel_order",
    }
)
FAULT_KINDS = frozenset({"status", "delay", "hang", "drop", "reset", "partial_fill"})
FINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
DUPLICATE = {"code": 40010001, "message": "client_order_id must be unique"}
NOT_AUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
_DEFAULT_BODIES: dict[int, Any] = {
    400: {"code": 40010000, "message": "bad request"},
    401: NOT_AUTHORIZED,
    403: {"code": 40310000, "message": "insufficient buying power"},
    404: {"code": 40410000, "message": "order not found"},
    422: {"code": 40010001, "message": "invalid order"},
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error occurred"},
    # What a gateway answers: not JSON.
    502: "<html><body><h1>502 Bad Gateway</h1></body></html>",
    503: {"code": 50310000, "message": "service unavailable"},
    504: "<html><body><h1>504 Gateway Time-out</h1></body></html>",
}


def _num(value: float | None) -> str | None:
    """Alpaca sends decimals as strings: "1.5", "0"."""
    if value is None:
        return None
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _decimals(value: Any) -> int:
    try:
        exponent = Decimal(str(value)).normalize().as_tuple().exponent
    except InvalidOperation:
        return 99
    return max(0, -exponent) if isinstance(exponent, int) else 99


class _Answer(Exception):
    """Raised inside request processing to answer an error."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    endpoint: str
    body: Any = None
    authorized: bool = True
    fault: str | None = None


@dataclass
class Fault:
    """See the module doc. ``status``/``body`` for ``status``; ``delay_s`` for ``delay``/``hang``;
    ``fraction`` for ``partial_fill``; ``used`` counts the requests it affected."""

    endpoint: str
    kind: str
    times: int | None = 1
    status: int = 500
    body: Any = None
    delay_s: float = 0.0
    fraction: float = 0.5
    process: bool = False
    used: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.used >= self.times


@dataclass
class FakeOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float | None
    notional: float | None
    time_in_force: str
    status: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime
    asset_id: str
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    target_qty: float | None = None  # shares to fill (notional orders: fixed at the first fill)

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _ts(self.created_at),
            "updated_at": _ts(self.updated_at),
            "submitted_at": _ts(self.submitted_at),
            "filled_at": _ts(self.filled_at),
            "expired_at": _ts(self.expired_at),
            "canceled_at": _ts(self.canceled_at),
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": _num(self.notional),
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": _num(self.filled_avg_price),
            "order_class": "",
            "order_type": "market",
            "type": "market",
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": None,
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
            "expires_at": None,
        }


@dataclass
class FakePosition:
    symbol: str
    qty: float
    avg_entry_price: float
    asset_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self, price: float) -> dict[str, Any]:
        market_value = self.qty * price
        cost_basis = self.qty * self.avg_entry_price
        pl = market_value - cost_basis
        return {
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "qty": _num(self.qty),
            "qty_available": _num(self.qty),
            "avg_entry_price": _num(self.avg_entry_price),
            "side": "long" if self.qty >= 0 else "short",
            "market_value": _num(market_value),
            "cost_basis": _num(cost_basis),
            "unrealized_pl": _num(pl),
            "unrealized_plpc": _num(pl / cost_basis if cost_basis else 0.0),
            "unrealized_intraday_pl": _num(pl),
            "unrealized_intraday_plpc": _num(pl / cost_basis if cost_basis else 0.0),
            "current_price": _num(price),
            "lastday_price": _num(price),
            "change_today": "0",
        }


class FakeAlpaca:
    """The fake's book, faults and request log; :meth:`start` (or ``with``) serves it on a free port."""

    def __init__(
        self,
        *,
        prices: dict[str, float] | None = None,
        cash: float = 100_000.0,
        api_key: str = "PKFAKETESTKEY0000001",
        secret_key: str = "fake-secret-0123456789abcdefghij",
        fill_on_submit: bool = False,
        market_open: bool = True,
        now: datetime | None = None,
    ) -> None:
        self.prices: dict[str, float] = dict(prices if prices is not None else {"AAPL": 100.0, "MSFT": 200.0})
        self.cash = cash
        self.api_key = api_key
        self.secret_key = secret_key
        self.fill_on_submit = fill_on_submit
        self.market_open = market_open
        self.now = now
        self.account_overrides: dict[str, Any] = {}
        self.clock_override: dict[str, Any] | None = None
        self.orders: dict[str, FakeOrder] = {}
        self.positions: dict[str, FakePosition] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.account_id = str(uuid.uuid4())
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeAlpaca:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a delay/hang fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give the broker (alpaca-py appends ``/v2/...``)."""
        return f"http://127.0.0.1:{self.port}"

    # ---- faults -----------------------------------------------------------------------------

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int | None = 1,
        status: int = 500,
        body: Any = None,
        delay_s: float = 0.0,
        fraction: float = 0.5,
        process: bool = False,
    ) -> Fault:
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ENDPOINTS)} or '*'")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind == "partial_fill" and endpoint != "submit_order":
            raise ValueError("partial_fill applies to submit_order only")
        fault = Fault(endpoint, kind, times=times, status=status, body=body, delay_s=delay_s, fraction=fraction, process=process)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail(
        self,
        endpoint: str,
        status: int,
        *,
        times: int | None = 1,
        message: str | None = None,
        code: int | None = None,
        process: bool = False,
    ) -> Fault:
        """Answer ``status`` (Alpaca's JSON error body; 502/504 a gateway's HTML page). The request is
        applied to the book first only with ``process=True``."""
        body: Any = _DEFAULT_BODIES.get(status, {"code": status * 100_000, "message": f"error {status}"})
        if message is not None or code is not None:
            base = body if isinstance(body, dict) else {"code": status * 100_000}
            body = {"code": code if code is not None else base["code"], "message": message if message is not None else base.get("message", "")}
        return self.add_fault(endpoint, "status", times=times, status=status, body=body, process=process)

    def delay(self, endpoint: str, seconds: float, *, times: int | None = 1) -> Fault:
        """Wait ``seconds`` before processing and answering."""
        return self.add_fault(endpoint, "delay", times=times, delay_s=seconds)

    def hang_after_processing(self, endpoint: str, seconds: float = 5.0, *, times: int | None = 1) -> Fault:
        """Process the request, then wait ``seconds`` before answering (the client times out)."""
        return self.add_fault(endpoint, "hang", times=times, delay_s=seconds)

    def accept_then_hang(self, seconds: float = 5.0, *, times: int | None = 1) -> Fault:
        """The order is placed in the book, but the answer comes too late for the client."""
        return self.hang_after_processing("submit_order", seconds, times=times)

    def drop_connection(self, endpoint: str, *, times: int | None = 1) -> Fault:
        """Process the request, send half the answer and close the connection."""
        return self.add_fault(endpoint, "drop", times=times)

    def reset_connection(self, endpoint: str, *, times: int | None = 1) -> Fault:
        """Close the connection without processing or answering."""
        return self.add_fault(endpoint, "reset", times=times)

    def reject_orders(self, status: int = 403, message: str = "insufficient buying power", *, times: int | None = 1) -> Fault:
        """Refuse the next order(s): 403 ``{"code": 40310000, ...}`` or 422 ``{"code": 40010001, ...}``."""
        return self.fail("submit_order", status, times=times, message=message, code=40310000 if status == 403 else 40010001)

    def partial_fill_next(self, fraction: float = 0.5, *, times: int | None = 1) -> Fault:
        """Accept the next order(s) and fill ``fraction`` of each at once (status partially_filled)."""
        return self.add_fault("submit_order", "partial_fill", times=times, fraction=fraction)

    def not_found(self, endpoint: str, *, times: int | None = 1) -> Fault:
        """Answer 404 ``order not found`` whatever the book holds."""
        return self.fail(endpoint, 404, times=times)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # ---- the book, for tests ---------------------------------------------------------------

    def set_position(self, symbol: str, qty: float, avg_entry_price: float) -> FakePosition:
        with self._lock:
            position = FakePosition(symbol, qty, avg_entry_price)
            self.positions[symbol] = position
            return position

    def set_clock(self, timestamp: datetime, is_open: bool, next_open: datetime, next_close: datetime) -> None:
        with self._lock:
            self.clock_override = {"timestamp": timestamp, "is_open": is_open, "next_open": next_open, "next_close": next_close}

    def order_by_client_id(self, client_order_id: str) -> FakeOrder | None:
        with self._lock:
            return next((o for o in self.orders.values() if o.client_order_id == client_order_id), None)

    def count_orders(self, client_order_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for o in self.orders.values() if client_order_id is None or o.client_order_id == client_order_id)

    def open_orders(self) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders.values() if o.is_open]

    def fill(self, order: str, qty: float | None = None, price: float | None = None) -> FakeOrder:
        """Fill an order (by id or client order id): ``qty`` shares (default: all that remain) at
        ``price`` (default: ``prices[symbol]``). Less than the remainder leaves it partially_filled."""
        with self._lock:
            found = self.orders.get(order) or self.order_by_client_id(order)
            if found is None:
                raise KeyError(f"no order {order!r}")
            self._fill(found, qty, price)
            return found

    def advance(self) -> list[FakeOrder]:
        """Fill every open order completely at the configured prices (the market moved on)."""
        with self._lock:
            filled = []
            for order in list(self.orders.values()):
                if order.is_open and order.status != "pending_cancel":
                    self._fill(order, None, None)
                    filled.append(order)
            return filled

    def expire_open_orders(self) -> list[FakeOrder]:
        """End of day for day orders: every open order becomes expired (fills so far stay)."""
        with self._lock:
            expired = []
            now = self._now()
            for order in self.orders.values():
                if order.is_open:
                    order.status, order.expired_at, order.updated_at = "expired", now, now
                    expired.append(order)
            return expired

    def equity(self) -> float:
        with self._lock:
            return self.cash + sum(p.qty * self.prices.get(p.symbol, p.avg_entry_price) for p in self.positions.values())

    def buying_power(self) -> float:
        """Cash less what open buy orders may still spend (a cash account: no margin)."""
        with self._lock:
            reserved = 0.0
            for order in self.orders.values():
                if order.is_open and order.side == "buy":
                    price = self.prices.get(order.symbol, 0.0)
                    if order.notional is not None:
                        reserved += order.notional - order.filled_qty * (order.filled_avg_price or 0.0)
                    else:
                        reserved += ((order.qty or 0.0) - order.filled_qty) * price
            return max(self.cash - reserved, 0.0)

    # ---- request log ------------------------------------------------------------------------

    def requests_for(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint and (method is None or r.method == method)]

    def count_requests(self, endpoint: str) -> int:
        return len(self.requests_for(endpoint))

    # ---- internals --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.endpoint in (endpoint, "*") and not fault.exhausted:
                    fault.used += 1
                    return fault
        return None

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _fill(self, order: FakeOrder, qty: float | None, price: float | None) -> None:
        if not order.is_open:
            raise ValueError(f"order {order.client_order_id} is {order.status}")
        price = price if price is not None else self.prices[order.symbol]
        if order.target_qty is None:
            order.target_qty = order.qty if order.qty is not None else round((order.notional or 0.0) / price, 9)
        remaining = round(order.target_qty - order.filled_qty, 9)
        qty = remaining if qty is None else min(round(qty, 9), remaining)
        if qty <= 0:
            return
        now = self._now()
        total = order.filled_qty + qty
        order.filled_avg_price = ((order.filled_avg_price or 0.0) * order.filled_qty + price * qty) / total
        order.filled_qty = round(total, 9)
        order.updated_at = now
        if order.filled_qty >= order.target_qty - 1e-9:
            order.status, order.filled_at = "filled", now
        else:
            order.status = "partially_filled"
        signed = qty if order.side == "buy" else -qty
        self.cash += -qty * price if order.side == "buy" else qty * price
        position = self.positions.get(order.symbol)
        if position is None:
            self.positions[order.symbol] = FakePosition(order.symbol, signed, price)
            return
        new_qty = position.qty + signed
        if (position.qty >= 0) == (signed >= 0):
            position.avg_entry_price = (position.qty * position.avg_entry_price + signed * price) / new_qty
        position.qty = round(new_qty, 9)
        if abs(position.qty) < 1e-9:
            del self.positions[order.symbol]

    # ---- endpoint logic (called by the handler under the lock) ------------------------------

    def _account_json(self) -> dict[str, Any]:
        long_value = sum(p.qty * self.prices.get(p.symbol, p.avg_entry_price) for p in self.positions.values() if p.qty > 0)
        short_value = sum(p.qty * self.prices.get(p.symbol, p.avg_entry_price) for p in self.positions.values() if p.qty < 0)
        equity = self.equity()
        buying_power = self.buying_power()
        body = {
            "id": self.account_id,
            "account_number": "PA3FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _num(buying_power),
            "regt_buying_power": _num(buying_power),
            "non_marginable_buying_power": _num(buying_power),
            "options_buying_power": _num(buying_power),
            "cash": _num(self.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": _num(equity),
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:00:00.000000Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": _num(equity),
            "last_equity": _num(equity),
            "long_market_value": _num(long_value),
            "short_market_value": _num(short_value),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "options_approved_level": 0,
            "options_trading_level": 0,
        }
        body.update(self.account_overrides)
        return body

    def _clock_json(self) -> dict[str, Any]:
        if self.clock_override is not None:
            c = self.clock_override
            return {
                "timestamp": c["timestamp"].isoformat(),
                "is_open": c["is_open"],
                "next_open": c["next_open"].isoformat(),
                "next_close": c["next_close"].isoformat(),
            }
        now = self._now().astimezone(NEW_YORK)
        close_today = datetime.combine(now.date(), time(16, 0), tzinfo=NEW_YORK)
        next_close = close_today if now < close_today else close_today + timedelta(days=1)
        next_open = datetime.combine(now.date() + timedelta(days=1), time(9, 30), tzinfo=NEW_YORK)
        return {"timestamp": now.isoformat(), "is_open": self.market_open, "next_open": next_open.isoformat(), "next_close": next_close.isoformat()}

    def _find(self, order_id: str) -> FakeOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise _Answer(404, {"code": 40410000, "message": "order not found"})
        return order

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        limit = min(int(query.get("limit", 50)), 500)
        symbols = set(query["symbols"].split(",")) if query.get("symbols") else None
        until = datetime.fromisoformat(query["until"].replace("Z", "+00:00")) if query.get("until") else None
        after = datetime.fromisoformat(query["after"].replace("Z", "+00:00")) if query.get("after") else None
        orders = [
            o
            for o in self.orders.values()
            if (status == "all" or (status == "open") == o.is_open)
            and (symbols is None or o.symbol in symbols)
            and (until is None or o.submitted_at < until)
            and (after is None or o.submitted_at > after)
        ]
        orders.sort(key=lambda o: o.submitted_at, reverse=query.get("direction", "desc") == "desc")
        return [o.to_json() for o in orders[:limit]]

    def _submit(self, body: Any) -> FakeOrder:
        if not isinstance(body, dict):
            raise _Answer(400, {"code": 40010000, "message": "request body format is invalid"})

        def refuse(message: str, status: int = 422, code: int = 40010001) -> _Answer:
            return _Answer(status, {"code": code, "message": message})

        symbol = body.get("symbol")
        side = body.get("side")
        qty, notional = body.get("qty"), body.get("notional")
        tif = body.get("time_in_force")
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if not symbol:
            raise refuse("symbol is required")
        if side not in ("buy", "sell"):
            raise refuse("side must be buy or sell")
        if body.get("type") != "market":
            raise refuse("this fake accepts market orders only")
        if (qty is None) == (notional is None):
            raise refuse("qty or notional is required, not both")
        if len(client_order_id) > 128:
            raise refuse("client_order_id must be no more than 128 characters")
        if any(o.client_order_id == client_order_id for o in self.orders.values()):
            raise _Answer(422, dict(DUPLICATE))
        try:
            qty_f = float(qty) if qty is not None else None
            notional_f = float(notional) if notional is not None else None
        except (TypeError, ValueError):
            raise refuse("qty and notional must be numbers") from None
        if qty_f is not None and (qty_f <= 0 or _decimals(qty) > 9):
            raise refuse("qty must be > 0 and limited to 9 decimal places")
        if notional_f is not None and _decimals(notional) > 2:
            raise refuse("notional must be limited to 2 decimal places")
        if notional_f is not None and notional_f < 1:
            raise refuse("cost basis must be >= 1", status=403, code=40310000)
        fractional = notional_f is not None or (qty_f is not None and qty_f != int(qty_f))
        if fractional and tif != "day":
            raise refuse("fractional orders must be DAY orders")
        if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            raise refuse("invalid time_in_force")
        price = self.prices.get(symbol)
        if price is None:
            raise refuse(f'asset "{symbol}" not found')
        if side == "buy":
            cost = notional_f if notional_f is not None else (qty_f or 0.0) * price
            if cost > self.buying_power() + 1e-9:
                raise refuse("insufficient buying power", status=403, code=40310000)
        else:
            want = qty_f if qty_f is not None else (notional_f or 0.0) / price
            held = self.positions[symbol].qty if symbol in self.positions else 0.0
            selling = sum((o.qty or (o.notional or 0) / price) - o.filled_qty for o in self.orders.values() if o.is_open and o.symbol == symbol and o.side == "sell")
            available = held - selling
            if want > available + 1e-9:
                raise refuse(f"insufficient qty available for order (requested: {_num(want)}, available: {_num(available)})", status=403, code=40310000)
        now = self._now()
        asset_id = self.positions[symbol].asset_id if symbol in self.positions else str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol))
        order = FakeOrder(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            qty=qty_f,
            notional=notional_f,
            time_in_force=tif,
            status="new" if self.market_open else "accepted",
            created_at=now,
            updated_at=now,
            submitted_at=now,
            asset_id=asset_id,
        )
        self.orders[order.id] = order
        if self.fill_on_submit:
            self._fill(order, None, None)
        return order

    def _cancel(self, order_id: str) -> None:
        order = self._find(order_id)
        if not order.is_open:
            raise _Answer(422, {"code": 42210000, "message": f'order is already in "{order.status}" state'})
        now = self._now()
        order.status, order.canceled_at, order.updated_at = "canceled", now, now

    def _process(self, method: str, endpoint: str, path_arg: str | None, query: dict[str, str], body: Any, fault: Fault | None) -> tuple[int, Any]:
        """Run one request against the book: (status, JSON body or None for an empty answer)."""
        with self._lock:
            try:
                if endpoint == "get_account":
                    return 200, self._account_json()
                if endpoint == "get_clock":
                    return 200, self._clock_json()
                if endpoint == "list_positions":
                    return 200, [p.to_json(self.prices.get(p.symbol, p.avg_entry_price)) for p in self.positions.values()]
                if endpoint == "get_position":
                    position = self.positions.get(path_arg or "")
                    if position is None:
                        return 404, {"code": 40410000, "message": "position does not exist"}
                    return 200, position.to_json(self.prices.get(position.symbol, position.avg_entry_price))
                if endpoint == "list_orders":
                    return 200, self._list_orders(query)
                if endpoint == "submit_order":
                    order = self._submit(body)
                    if fault is not None and fault.kind == "partial_fill":
                        self._fill(order, round((order.target_qty or order.qty or (order.notional or 0) / self.prices[order.symbol]) * fault.fraction, 9), None)
                    return 200, order.to_json()
                if endpoint == "get_order":
                    return 200, self._find(path_arg or "").to_json()
                if endpoint == "get_order_by_client_id":
                    order = self.order_by_client_id(query.get("client_order_id", ""))
                    if order is None:
                        return 404, {"code": 40410000, "message": "order not found"}
                    return 200, order.to_json()
                if endpoint == "cancel_order":
                    self._cancel(path_arg or "")
                    return 204, None
            except _Answer as answer:
                return answer.status, answer.body
        return 404, {"code": 40410000, "message": "endpoint not found"}


def _route(method: str, path: str) -> tuple[str, str | None]:
    """(endpoint name, path argument) for a request; ``unknown`` when no route matches."""
    if path == "/v2/account" and method == "GET":
        return "get_account", None
    if path == "/v2/clock" and method == "GET":
        return "get_clock", None
    if path == "/v2/positions" and method == "GET":
        return "list_positions", None
    if path.startswith("/v2/positions/") and method == "GET":
        return "get_position", unquote(path[len("/v2/positions/") :])
    if path == "/v2/orders" and method == "GET":
        return "list_orders", None
    if path == "/v2/orders" and method == "POST":
        return "submit_order", None
    if path == "/v2/orders:by_client_order_id" and method == "GET":
        return "get_order_by_client_id", None
    if path.startswith("/v2/orders/"):
        order_id = unquote(path[len("/v2/orders/") :])
        if method == "GET":
            return "get_order", order_id
        if method == "DELETE":
            return "cancel_order", order_id
    return "unknown", None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAlpaca
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        fake = self.fake
        self.close_connection = True  # one request per connection: no stale keep-alive sockets in tests
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        endpoint, path_arg = _route(method, parts.path)
        authorized = self.headers.get("APCA-API-KEY-ID") == fake.api_key and self.headers.get("APCA-API-SECRET-KEY") == fake.secret_key
        fault = fake._take_fault(endpoint) if endpoint != "unknown" else None
        fake._record(RecordedRequest(method, parts.path, query, endpoint, body, authorized, fault.kind if fault else None))

        if fault is not None and fault.kind == "status" and not fault.process:
            self._send(fault.status, fault.body)
            return
        if fault is not None and fault.kind == "reset":
            self._abort()
            return
        if fault is not None and fault.kind == "delay":
            fake._wait(fault.delay_s)
        if not authorized:
            self._send(401, NOT_AUTHORIZED)
            return
        status, payload = fake._process(method, endpoint, path_arg, query, body, fault)
        if fault is not None and fault.kind == "status":  # process=True: acted, then the error
            self._send(fault.status, fault.body)
            return
        if fault is not None and fault.kind == "hang":
            fake._wait(fault.delay_s)
        if fault is not None and fault.kind == "drop":
            self._send(status, payload, truncate=True)
            return
        self._send(status, payload)

    def _send(self, status: int, payload: Any, *, truncate: bool = False) -> None:
        if payload is None:
            data, content_type = b"", "application/json"
        elif isinstance(payload, str):
            data, content_type = payload.encode(), "text/html"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json; charset=UTF-8"
        if truncate and not data:
            self._abort()
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if truncate else data)
            self.wfile.flush()
            if truncate:
                self._abort()
        except OSError:  # the client gave up (timeout) and closed its end
            pass

    def _abort(self) -> None:
        """Close the connection now, without (the rest of) an answer."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
