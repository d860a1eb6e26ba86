"""The one way a user's paper broker and rebalance bot are put together from the runtime settings:
the CLI, the dashboard and the demo all call these (which broker, which clock, the base model's
fingerprint that picks the user's serving version, and view generation for missing weeks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from advisor import market_calendar
from advisor.data.store import PreloadedMarketStore
from advisor.forecaster.modelstore import fingerprint, resolve_model_path
from advisor.forecaster.service import Personalisation, generate_missing_views
from advisor.forecaster.versions import load_serving_model
from advisor.portfolio import RiskParams
from advisor.trading.bot import RebalanceBot
from advisor.trading.broker import Broker
from advisor.trading.factory import make_broker
from advisor.trading.local_broker import SimulatedClock

if TYPE_CHECKING:
    from advisor.runtime import Runtime


def trading_clock(as_of: date | None) -> Callable[[], datetime]:
    """The real clock, or for a historical week a simulated one just after that session's close."""
    if as_of is None:
        return market_calendar.utcnow

    day = market_calendar.session_on_or_before(as_of)
    return SimulatedClock(market_calendar.session_close(day) + timedelta(minutes=5))


def user_broker(rt: Runtime, user_id: int, max_weight: float, *, kind: str | None = None, as_of: date | None = None) -> Broker:
    """The user's guarded paper broker of ``kind`` (default: the configured one)."""
    return make_broker(kind or rt.settings.broker.kind, rt.settings.broker, rt.session_factory, user_id, max_weight, clock=trading_clock(as_of))


def view_generator(rt: Runtime, user_id: int) -> Callable[[date, tuple[str, ...]], None]:
    """Forecast missing weekly views with the user's active model (loaded once, on first use)."""

    def generate(week: date, tickers: tuple[str, ...]) -> None:
        handle, _ = load_serving_model(rt.session_factory, rt.settings.base_model, rt.settings.resolved_model_dir, user_id)
        with rt.session() as session:
            generate_missing_views(session, PreloadedMarketStore(session), handle, tickers, [week], who=Personalisation(user_id=user_id))

    return generate


def user_bot(rt: Runtime, user_id: int, params: RiskParams, broker: Broker, *, generate_missing_views: bool = False) -> RebalanceBot:
    """The rebalance bot for one user on ``broker``, reading the views of the user's serving model version."""
    model_dir = rt.settings.resolved_model_dir
    base_fp = fingerprint(resolve_model_path(rt.settings.base_model, model_dir), cache_dir=model_dir)
    generator = view_generator(rt, user_id) if generate_missing_views else None
    return RebalanceBot(rt.session_factory, broker, user_id, params, base_fingerprint=base_fp, generate_views=generator)
