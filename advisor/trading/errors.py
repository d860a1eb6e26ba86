"""Typed broker errors: what to retry, what to look up, what stops the bot.

* :class:`TemporaryBrokerError` — timeouts, dropped connections, 429 and 5xx answers. Reads are
  retried with backoff. Order *creation* is never retried blindly: the bot looks the order up by its
  client order id first, because the broker may have accepted it before the connection failed.
* :class:`OperationalBrokerError` — the bot must stop and tell the user (bad keys, forbidden, account
  blocked, a live endpoint, caps exceeded).
* :class:`OrderRejectedError` — the broker refused one order (e.g. insufficient buying power); it is
  recorded as rejected and the rebalance goes on.
* :class:`DuplicateClientOrderIdError` — the client order id is already used at the broker (Alpaca
  refuses reuse even after a cancel); the bot adopts the existing order instead.
"""

from __future__ import annotations

from advisor.errors import AdvisorError


class BrokerError(AdvisorError):
    """Base of every broker problem."""


class TemporaryBrokerError(BrokerError):
    """Worth retrying later (reads) or resolving by lookup (order creation)."""


class OperationalBrokerError(BrokerError):
    """Stop and tell the user."""


class OrderRejectedError(BrokerError):
    """The broker refused this order."""


class DuplicateClientOrderIdError(BrokerError):
    """The client order id already exists at the broker."""

    def __init__(self, client_order_id: str, message: str = "") -> None:
        self.client_order_id = client_order_id
        super().__init__(message or f"client order id {client_order_id} is already used at the broker")
