"""What every part of the rebalance bot shares: its options, plan and report types, the deterministic client
order id, and the bot's context (database, broker, user, clock, event log, kill switch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor.errors import AdvisorError
from advisor.portfolio import RiskParams
from advisor.trading.broker import Broker, Side
from db.engine import session_scope
from db.models import BotEvent, BotState

SLICE_HEADROOM = 0.98  # slices stay 2% under the per-order cap: the price may move between planning and the check
OPEN_STATUSES = ("intent", "new", "accepted", "pending_new", "partially_filled", "pending_cancel")


class BotKilledError(AdvisorError):
    """The kill switch is on for this user and broker."""


@dataclass(frozen=True)
class RebalanceOptions:
    tickers: tuple[str, ...] | None = None
    dry_run: bool = False
    min_notional: float = 50.0
    poll_timeout_s: float = 60.0
    poll_interval_s: float = 2.0


@dataclass
class PlannedTrade:
    ticker: str
    side: Side
    qty: float
    price: float
    target_weight: float
    current_qty: float
    sequence: int = 0

    @property
    def notional(self) -> float:
        return self.qty * self.price


@dataclass
class RunReport:
    user_id: int
    broker: str
    decision_week: date | None
    equity: float | None = None
    planned: list[PlannedTrade] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    reconciled: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    dry_run: bool = False


def client_order_id(user_id: int, week: date, ticker: str, side: Side, sequence: int) -> str:
    return f"rb-u{user_id}-{week:%Y%m%d}-{ticker}-{side.value}-{sequence}"


def user_prefix(user_id: int) -> str:
    return f"rb-u{user_id}-"


class BotContext:
    """The state the planner, the executor and the reconciler work with."""

    def __init__(
        self, factory: sessionmaker[Session], broker: Broker, user_id: int, params: RiskParams, *,
        base_fingerprint: str | None = None, clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        generate_views: Callable[[date, tuple[str, ...]], None] | None = None,
    ) -> None:
        self.factory = factory
        self.broker = broker
        self.user_id = user_id
        self.params = params
        self.base_fingerprint = base_fingerprint
        self.clock = clock or broker.clock
        self._sleep = sleep or broker.wait
        self.generate_views = generate_views  # forecasts missing views with the user's active model

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        with session_scope(self.factory) as session:
            session.add(BotEvent(user_id=self.user_id, broker=self.broker.name, level=level, message=message, data=data))

    def state(self, session: Session) -> BotState:
        row = session.scalar(select(BotState).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
        if row is None:
            row = BotState(user_id=self.user_id, broker=self.broker.name, status="stopped")
            session.add(row)
            session.flush()
        return row

    def check_not_backwards(self, week: date) -> None:
        """Refuse a decision week before the last one traded: its fills would be dated before fills already made."""
        with self.factory() as session:
            last = session.scalar(select(BotState.last_decision_week).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
        if last is not None and week < last:
            raise AdvisorError(f"week {week} is before the last week this account traded ({last}): the bot only moves forward; "
                               "use a later --as-of, or another user for a historical replay")

    def killed(self) -> bool:
        with self.factory() as session:  # read only: a bot that never ran has no state row and is not killed
            row = session.scalar(select(BotState).where(BotState.user_id == self.user_id, BotState.broker == self.broker.name))
            return bool(row is not None and row.kill_requested)

    def ensure_alive(self) -> None:
        if self.killed():
            raise BotKilledError(f"the kill switch is on for user {self.user_id} on {self.broker.name}: run 'advisor trade run --resume' to clear it")
