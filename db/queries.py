"""The product's shared read queries, in one place: the CLI, the dashboard, the demo, the bot and the
backtest call these instead of writing their own ``select``.

* a user by name, and their latest risk profile (the newest version is the one in force);
* what a user may see: their own forecasts and model versions plus the shared ones (``user_id`` NULL),
  never another user's;
* the last close known at a moment (point in time: ``available_at <= as_of``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from db.models import DailyBar, Forecast, ModelVersion, RiskProfile, User


def find_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def latest_profile(session: Session, user_id: int) -> RiskProfile | None:
    """The profile in force: the user's newest questionnaire version (None before the first)."""
    return session.scalar(select(RiskProfile).where(RiskProfile.user_id == user_id).order_by(RiskProfile.version.desc()).limit(1))


def forecasts_visible_to(user_id: int | None) -> ColumnElement[bool]:
    """Forecasts a user may see: their own and the shared ones. ``None``: shared ones only."""
    if user_id is None:
        return Forecast.user_id.is_(None)
    return or_(Forecast.user_id == user_id, Forecast.user_id.is_(None))


def versions_visible_to(user_id: int) -> ColumnElement[bool]:
    """Model versions a user may use: the shared ones (base, SFT) and their own tuned ones."""
    return or_(ModelVersion.user_id.is_(None), ModelVersion.user_id == user_id)


def last_close(session: Session, ticker: str, as_of: datetime) -> float | None:
    """The newest unadjusted close published by ``as_of`` (what a trader knew then)."""
    return session.scalar(
        select(DailyBar.close).where(DailyBar.ticker == ticker, DailyBar.available_at <= as_of).order_by(DailyBar.date.desc()).limit(1)
    )
