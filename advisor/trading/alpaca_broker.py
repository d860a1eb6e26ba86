"""Alpaca **paper** trading through alpaca-py, behind the :class:`~advisor.trading.broker.Broker` interface.

Why this module looks the way it does:

* **Paper only.** The product offers no live trading, so the base URL is checked before a client is
  built: Alpaca's paper endpoint and loopback test servers are accepted, everything else (above all
  the live ``https://api.alpaca.markets``) raises :class:`OperationalBrokerError`.
* **An order is sent exactly once.** alpaca-py's ``RESTClient._request`` retries any request, POST
  ``/orders`` included, up to 3 times on HTTP 429/504 (``DEFAULT_RETRY_ATTEMPTS`` /
  ``DEFAULT_RETRY_EXCEPTION_CODES``). A 504 from a gateway does not mean the order was not placed,
  so a blind resend can place it twice. ``TradingClient.__init__`` does not pass the
  ``retry_attempts`` / ``retry_exception_codes`` arguments through to ``RESTClient`` (and ``0`` or
  ``[]`` would be ignored there anyway: ``if retry_attempts and retry_attempts > 0``), so
  :class:`_SingleShotTradingClient` sets the two attributes those arguments feed (``_retry = 0``,
  ``_retry_codes = []``) after construction and checks they exist, so a future alpaca-py that renames
  them fails loudly instead of silently resending orders. Retrying is done here instead: reads
  (and the idempotent cancel) with exponential backoff, order creation never — a failed submit raises
  :class:`TemporaryBrokerError` and the caller looks the order up by its client order id.
* **Every HTTP call has a timeout.** alpaca-py calls ``self._session.request(...)`` with no
  ``timeout``, and requests has no session-wide default, so a server that accepts the connection
  and never answers would block the bot forever. The client's session is replaced by
  :class:`_TimeoutSession`, which adds ``timeout=timeout_s`` (connect and read) to every request.
* **Typed errors** (:mod:`advisor.trading.errors`): 401/403 auth -> operational; 422 "client_order_id
  must be unique" -> duplicate; other order refusals (403 insufficient buying power, 422, 400) ->
  rejected; timeouts, dropped connections, malformed answers, 429 and 5xx -> temporary.
* **Keys never leak.** They are held by the alpaca-py client only; every message built here is scrubbed
  of them, translated errors are raised ``from None`` (the underlying requests exception carries the
  request and its headers), and ``repr`` shows the base URL only.
* Alpaca's order object carries cumulative ``filled_qty`` / ``filled_avg_price`` but no per-fill
  detail (that lives in the account activities API), so :attr:`BrokerOrder.fills` is empty here;
  executions are read from the cumulative fields.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.enums import OrderStatus as AlpacaStatus
from alpaca.trading.models import Clock, Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from pydantic import SecretStr
from pydantic import ValidationError as PydanticValidationError
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from advisor.config import ALPACA_PAPER_URL, BrokerSettings, alpaca_credentials
from advisor.trading.broker import (
    Account,
    Broker,
    BrokerOrder,
    BrokerPosition,
    MarketClock,
    OrderRequest,
    OrderStatus,
    Side,
)
from advisor.trading.errors import (
    DuplicateClientOrderIdError,
    OperationalBrokerError,
    OrderRejectedError,
    TemporaryBrokerError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

BROKER = "alpaca"
PAPER_HOST = urlsplit(ALPACA_PAPER_URL).hostname or "paper-api.alpaca.markets"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LIVE_HOST = "api.alpaca.markets"
DUPLICATE_MESSAGE = "client_order_id must be unique"
ORDERS_PAGE = 500  # Alpaca's maximum page size for GET /v2/orders
MAX_ORDER_PAGES = 50
_AUTH_WORDS = ("forbidden", "not authorized", "unauthorized", "authenticat", "access key", "api key", "credential")
_MAX_MESSAGE = 300

# Alpaca statuses that are ours by name; the rest are mapped in _map_status.
_DIRECT_STATUS = {
    AlpacaStatus.NEW: OrderStatus.NEW,
    AlpacaStatus.ACCEPTED: OrderStatus.ACCEPTED,
    AlpacaStatus.PENDING_NEW: OrderStatus.PENDING_NEW,
    AlpacaStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    AlpacaStatus.PENDING_CANCEL: OrderStatus.PENDING_CANCEL,
    AlpacaStatus.FILLED: OrderStatus.FILLED,
    AlpacaStatus.CANCELED: OrderStatus.CANCELED,
    AlpacaStatus.REJECTED: OrderStatus.REJECTED,
    AlpacaStatus.EXPIRED: OrderStatus.EXPIRED,
    AlpacaStatus.PENDING_REVIEW: OrderStatus.PENDING_NEW,
    AlpacaStatus.ACCEPTED_FOR_BIDDING: OrderStatus.ACCEPTED,
    # The bot never replaces orders; an order replaced by hand no longer works: final.
    AlpacaStatus.REPLACED: OrderStatus.CANCELED,
}


def check_paper_url(base_url: str) -> str:
    """The normalised base URL (no trailing slash or ``/v2``) if it is Alpaca paper or a loopback test
    server; :class:`OperationalBrokerError` otherwise."""
    try:
        parts = urlsplit(base_url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise OperationalBrokerError(f"Alpaca base URL {base_url!r} is not a valid URL: {exc}") from None
    if parts.username or parts.password or parts.query or parts.fragment:
        raise OperationalBrokerError(
            f"the Alpaca base URL must not contain credentials, a query or a fragment; use {ALPACA_PAPER_URL} (paper trading)"
        )
    path = parts.path.rstrip("/")
    if path in ("/v2",):
        path = ""
    if path:
        raise OperationalBrokerError(f"Alpaca base URL {base_url!r} has a path; give the host only, e.g. {ALPACA_PAPER_URL}")
    if host == LIVE_HOST or (host.endswith(".alpaca.markets") and host != PAPER_HOST):
        raise OperationalBrokerError(
            f"{parts.scheme}://{host} is not Alpaca's paper endpoint: this product offers paper trading only, "
            f"never live trading. Use {ALPACA_PAPER_URL}."
        )
    if host == PAPER_HOST and parts.scheme == "https" and port in (None, 443):
        return f"https://{PAPER_HOST}"
    if host in LOOPBACK_HOSTS and parts.scheme in ("http", "https") and port is not None:
        shown = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{shown}:{port}"
    raise OperationalBrokerError(
        f"Alpaca base URL {base_url!r} refused: only {ALPACA_PAPER_URL} (paper trading) or a loopback test server "
        "(http://127.0.0.1:PORT) is allowed; this product offers no live trading"
    )


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout.

    alpaca-py sends every call as ``self._session.request(method, url, headers=..., params=/json=...,
    allow_redirects=False)`` without ``timeout``; requests has no session-level default, so without
    this a silent server would hang the bot. ``timeout_s`` bounds the connect and each read.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().request(method.decode() if isinstance(method, bytes) else method, url.decode() if isinstance(url, bytes) else url, *args, **kwargs)


class _SingleShotTradingClient(TradingClient):
    """alpaca-py's TradingClient with its own retries off and a timeout on every request (module doc)."""

    def __init__(self, api_key: str, secret_key: str, base_url: str, timeout_s: float) -> None:
        super().__init__(api_key=api_key, secret_key=secret_key, paper=True, url_override=base_url)
        missing = [name for name in ("_retry", "_retry_codes", "_session") if not hasattr(self, name)]
        if missing:  # alpaca-py changed: refuse rather than risk resending orders or hanging
            raise OperationalBrokerError(
                f"this alpaca-py version has no {', '.join(missing)}; cannot disable its request retries safely"
            )
        self._retry = 0  # RESTClient._request loops `while retry >= 0`: exactly one attempt
        self._retry_codes = []  # and _one_request never raises RetryException
        self._session.close()
        self._session = _TimeoutSession(timeout_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r})"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _map_status(order: Order) -> OrderStatus:
    status = AlpacaStatus(order.status)
    if status in _DIRECT_STATUS:
        return _DIRECT_STATUS[status]
    # done_for_day, stopped, suspended, calculated, held, pending_replace: still working (not final)
    # from the bot's point of view; partially filled when something already executed.
    return OrderStatus.PARTIALLY_FILLED if (_float(order.filled_qty) or 0.0) > 0 else OrderStatus.ACCEPTED


def _to_broker_order(order: Order) -> BrokerOrder:
    if order.side is None or not order.symbol:
        raise OperationalBrokerError(f"Alpaca order {order.id} is a multi-leg order; this product never places those")
    status = _map_status(order)
    filled_qty = _float(order.filled_qty) or 0.0
    avg_price = _float(order.filled_avg_price)
    return BrokerOrder(
        broker_order_id=str(order.id),
        client_order_id=order.client_order_id,
        ticker=order.symbol or "",
        side=Side(OrderSide(order.side).value),
        qty=_float(order.qty),
        notional=_float(order.notional),
        status=status,
        filled_qty=filled_qty,
        filled_avg_price=avg_price if filled_qty > 0 and avg_price else None,
        submitted_at=_utc(order.submitted_at),
        updated_at=_utc(order.updated_at),
        reject_reason="rejected by Alpaca" if status is OrderStatus.REJECTED else None,
    )


def _to_position(position: Position) -> BrokerPosition:
    return BrokerPosition(
        ticker=position.symbol,
        qty=float(position.qty),
        avg_entry_price=float(position.avg_entry_price),
        market_value=_float(position.market_value),
    )


class AlpacaPaperBroker(Broker):
    """Alpaca paper trading (module doc). ``sleep`` is injectable so tests do not wait out backoffs;
    ``price_lookup`` (e.g. the store's last close) backs :meth:`latest_price` for names not held."""

    name = BROKER
    supports_fractional = True

    def __init__(
        self,
        api_key: str | SecretStr,
        secret_key: str | SecretStr,
        base_url: str = ALPACA_PAPER_URL,
        *,
        timeout_s: float = 10,
        read_retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        price_lookup: Callable[[str], float | None] | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
        if not key or not secret:
            raise OperationalBrokerError("Alpaca paper keys are empty: set ADVISOR_ALPACA_API_KEY and ADVISOR_ALPACA_SECRET_KEY")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if read_retries < 0 or backoff_s < 0:
            raise ValueError("read_retries and backoff_s must not be negative")
        self.base_url = check_paper_url(base_url)
        self.timeout_s = float(timeout_s)
        self.read_retries = int(read_retries)
        self.backoff_s = float(backoff_s)
        self._sleep = sleep
        self._price_lookup = price_lookup
        self._secrets = (SecretStr(key), SecretStr(secret))
        self._client = _SingleShotTradingClient(key, secret, self.base_url, self.timeout_s)

    @classmethod
    def from_settings(cls, settings: BrokerSettings, **options: Any) -> AlpacaPaperBroker:
        """A broker for ``settings.alpaca_base_url`` with keys from the environment only."""
        credentials = alpaca_credentials()
        return cls(credentials.api_key, credentials.secret_key, settings.alpaca_base_url, **options)

    def __repr__(self) -> str:
        return f"AlpacaPaperBroker(base_url={self.base_url!r}, timeout_s={self.timeout_s}, read_retries={self.read_retries})"

    # ------------------------------------------------------------------ error handling

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            value = secret.get_secret_value()
            if value:
                text = text.replace(value, "***")
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "..."
        return text

    @staticmethod
    def _body(exc: APIError) -> tuple[int | None, str]:
        """Alpaca's error ``code`` and ``message`` (or the raw body, e.g. a gateway's HTML page)."""
        raw = str(exc)
        try:
            body = json.loads(raw)
        except ValueError:
            return None, " ".join(re.sub(r"<[^>]*>", " ", raw).split())
        if not isinstance(body, dict):
            return None, raw
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("message") or raw)

    def _translate(self, exc: Exception, what: str, *, submitting: bool) -> Exception:
        """The typed broker error for an exception raised by alpaca-py or requests."""
        maybe_placed = " The order may or may not have been placed: look it up by its client order id." if submitting else ""
        if isinstance(exc, APIError):
            status = exc.status_code
            code, message = self._body(exc)
            message = self._scrub(message)
            detail = f"Alpaca {what}: HTTP {status}: {message}"
            lowered = message.lower()
            if status == 429 or (status is not None and status >= 500):
                return TemporaryBrokerError(f"{detail}.{maybe_placed}")
            if status == 401:
                return OperationalBrokerError(f"{detail} (check the Alpaca paper keys)")
            if status == 403:
                if submitting and not any(word in lowered for word in _AUTH_WORDS):
                    return OrderRejectedError(detail)
                return OperationalBrokerError(f"{detail} (keys refused or account not allowed to trade)")
            if submitting and status in (400, 404, 422):
                if DUPLICATE_MESSAGE in lowered:
                    return _DuplicateMarker(detail)
                return OrderRejectedError(detail)
            return OperationalBrokerError(detail)
        if isinstance(exc, requests.Timeout):
            return TemporaryBrokerError(f"Alpaca {what}: no answer within {self.timeout_s:g} s ({type(exc).__name__}).{maybe_placed}")
        if isinstance(exc, requests.RequestException):
            return TemporaryBrokerError(f"Alpaca {what}: {type(exc).__name__}: {self._scrub(str(exc))}.{maybe_placed}")
        if isinstance(exc, PydanticValidationError):
            return TemporaryBrokerError(f"Alpaca {what}: malformed answer ({exc.error_count()} field errors).{maybe_placed}")
        return exc

    def _call(self, what: str, call: Callable[[], T], *, submitting: bool = False) -> T:
        """One HTTP call; library exceptions become typed broker errors (raised from None: see module doc)."""
        try:
            return call()
        except (APIError, requests.RequestException, PydanticValidationError) as exc:
            mapped = self._translate(exc, what, submitting=submitting)
        raise mapped from None

    def _read(self, what: str, call: Callable[[], T]) -> T:
        """A call that is safe to repeat: retried on TemporaryBrokerError with exponential backoff (tenacity;
        ``read_retries`` more attempts after the first, waits ``backoff_s`` x 1, 2, 4, ...)."""
        attempts = self.read_retries + 1

        def say(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("Alpaca %s failed (attempt %d/%d), retrying in %.2f s: %s", what, state.attempt_number, attempts, delay, error)

        retrying = Retrying(
            retry=retry_if_exception_type(TemporaryBrokerError), stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=self.backoff_s, min=0), sleep=self._sleep, before_sleep=say,
        )
        try:
            return retrying(self._call, what, call)
        except RetryError as exc:
            raise TemporaryBrokerError(f"{exc.last_attempt.exception()} (gave up after {attempts} attempts)") from None

    # ------------------------------------------------------------------ orders

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        """Send one market order, once. A TemporaryBrokerError means the outcome is unknown."""
        qty = round(request.qty, 9) if request.qty is not None else None  # Alpaca: at most 9 decimals
        notional = round(request.notional, 2) if request.notional is not None else None  # and 2 for USD
        if (qty is not None and qty <= 0) or (notional is not None and notional <= 0):
            raise OrderRejectedError(f"{request.ticker}: order size rounds to zero (qty {request.qty}, notional {request.notional})")
        try:
            alpaca_request = MarketOrderRequest(
                symbol=request.ticker,
                qty=qty,
                notional=notional,
                side=OrderSide(request.side.value),
                time_in_force=TimeInForce(request.time_in_force),
                client_order_id=request.client_order_id,
            )
        except (ValueError, PydanticValidationError) as exc:
            raise OrderRejectedError(f"{request.ticker}: not a valid Alpaca market order: {exc}") from None
        what = f"submit order {request.client_order_id} ({request.side.value} {request.ticker})"
        try:
            order = cast(Order, self._call(what, lambda: self._client.submit_order(alpaca_request), submitting=True))
        except _DuplicateMarker as exc:
            raise DuplicateClientOrderIdError(request.client_order_id, str(exc)) from None
        return _to_broker_order(order)

    def cancel_order(self, broker_order_id: str) -> None:
        """Cancel a working order. Idempotent (so retried like a read); an order that is already final
        (422) or unknown (404) has nothing to cancel and is logged, like the local broker ignores it."""

        def cancel() -> None:
            try:
                self._client.cancel_order_by_id(broker_order_id)
            except APIError as exc:
                if exc.status_code in (404, 422):
                    log.info("Alpaca order %s not canceled: %s", broker_order_id, self._scrub(self._body(exc)[1]))
                    return
                raise

        try:
            self._read(f"cancel order {broker_order_id}", cancel)
        except ValueError:
            raise OperationalBrokerError(f"{broker_order_id!r} is not an Alpaca order id (a UUID)") from None

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        def fetch() -> Order | None:
            try:
                return cast(Order, self._client.get_order_by_client_id(client_order_id))
            except APIError as exc:
                # Only Alpaca's own JSON "not found" counts: a proxy's HTML 404 must not make the
                # caller believe the order was never placed (it would send it again).
                code, message = self._body(exc)
                if exc.status_code == 404 and (code is not None or "not found" in message.lower()):
                    return None
                raise

        order = self._read(f"get order {client_order_id}", fetch)
        return None if order is None else _to_broker_order(order)

    def list_open_orders(self) -> list[BrokerOrder]:
        """All working orders, newest first; pages through with ``until`` when a page is full."""
        seen: dict[str, Order] = {}
        until: datetime | None = None
        for _ in range(MAX_ORDER_PAGES):
            query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=ORDERS_PAGE, nested=False, until=until)
            page = cast(list[Order], self._read("list open orders", lambda q=query: self._client.get_orders(filter=q)))  # type: ignore[misc]
            fresh = [o for o in page if str(o.id) not in seen]
            for order in fresh:
                seen[str(order.id)] = order
            if len(page) < ORDERS_PAGE or not fresh:
                break
            # ``until`` is exclusive: step back to the oldest order seen, plus 1 µs so an order sharing
            # its timestamp is not skipped (repeats are dropped above).
            until = min(o.submitted_at for o in page) + timedelta(microseconds=1)
        else:
            raise OperationalBrokerError(f"more than {MAX_ORDER_PAGES * ORDERS_PAGE} open orders at Alpaca; cancel them by hand")
        foreign = [o for o in seen.values() if o.side is None or not o.symbol]
        if foreign:
            log.warning("ignoring %d multi-leg Alpaca orders this product did not place", len(foreign))
        return [_to_broker_order(o) for o in seen.values() if o.side is not None and o.symbol]

    # ------------------------------------------------------------------ account

    def get_positions(self) -> list[BrokerPosition]:
        positions: list[Position] = self._read("list positions", self._client.get_all_positions)  # type: ignore[arg-type]
        return [_to_position(p) for p in positions]

    def get_account(self) -> Account:
        account = cast(TradeAccount, self._read("get account", self._client.get_account))
        if account.account_blocked or account.trading_blocked or account.trade_suspended_by_user:
            raise OperationalBrokerError(
                f"the Alpaca paper account {account.account_number} is blocked from trading (status {account.status.value}); "
                "see the Alpaca dashboard"
            )
        cash = _float(account.cash) or 0.0
        equity = _float(account.equity)
        if equity is None:
            equity = _float(account.portfolio_value) or cash
        buying_power = _float(account.buying_power)
        return Account(
            cash=cash,
            equity=equity,
            buying_power=cash if buying_power is None else buying_power,
            currency=account.currency or "USD",
        )

    def get_clock(self) -> MarketClock:
        clock = cast(Clock, self._read("get clock", self._client.get_clock))
        timestamp = _utc(clock.timestamp)
        assert timestamp is not None
        return MarketClock(timestamp=timestamp, is_open=clock.is_open, next_open=_utc(clock.next_open), next_close=_utc(clock.next_close))

    def latest_price(self, ticker: str) -> float | None:
        """The position's current price when the name is held, else ``price_lookup`` (if given), else None.
        Alpaca market data (a separate API and subscription) is deliberately not used."""

        def fetch() -> Position | None:
            try:
                return cast(Position, self._client.get_open_position(ticker))
            except APIError as exc:
                if exc.status_code == 404:
                    return None
                raise

        position = self._read(f"get position {ticker}", fetch)
        price = _float(position.current_price) if position is not None else None
        if price:
            return price
        return self._price_lookup(ticker) if self._price_lookup is not None else None


class _DuplicateMarker(Exception):
    """Internal: a 422 "client_order_id must be unique", turned into DuplicateClientOrderIdError by
    submit_order (which knows the client order id)."""
