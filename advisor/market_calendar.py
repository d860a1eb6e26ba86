"""The exchange calendar (NYSE, from the ``exchange_calendars`` library; no hand-written holidays).

Point-in-time rules live on top of it:
  * a daily bar becomes known at its session's close (early closes included);
  * a text item belongs to the first session whose close is strictly after its timestamp, so anything
    posted at or after a close counts for the next session.
"""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from advisor.errors import DataUnavailableError

EXCHANGE = "XNYS"
CALENDAR_START = "1990-01-01"


@lru_cache(maxsize=1)
def _calendar() -> xcals.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange_calendars 4.13 uses Series.values on tz-aware data, deprecated in pandas 3.1.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        return xcals.get_calendar(EXCHANGE, start=CALENDAR_START)


@lru_cache(maxsize=1)
def _session_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Sessions (datetime64[D]) and their closes (int64 ns UTC), sorted."""
    schedule = _calendar().schedule
    sessions = schedule.index.values.astype("datetime64[D]")
    closes = schedule["close"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    return sessions, closes


def utcnow() -> datetime:
    """Now, UTC. Tests monkeypatch this to freeze time."""
    return datetime.now(UTC)


def _check_range(day: date) -> None:
    sessions, _ = _session_arrays()
    first = sessions[0].astype(date)
    last = sessions[-1].astype(date)
    if not (first <= day <= last):
        raise DataUnavailableError(f"{day} is outside the {EXCHANGE} calendar ({first} .. {last})")


def is_session(day: date) -> bool:
    _check_range(day)
    sessions, _ = _session_arrays()
    i = np.searchsorted(sessions, np.datetime64(day, "D"))
    return bool(i < len(sessions) and sessions[i] == np.datetime64(day, "D"))


def session_on_or_before(day: date) -> date:
    """The last trading session on or before ``day``."""
    _check_range(day)
    sessions, _ = _session_arrays()
    i = np.searchsorted(sessions, np.datetime64(day, "D"), side="right") - 1
    if i < 0:
        raise DataUnavailableError(f"no {EXCHANGE} session on or before {day}")
    return sessions[i].astype(date)


def next_session_after(day: date) -> date:
    _check_range(day)
    sessions, _ = _session_arrays()
    i = np.searchsorted(sessions, np.datetime64(day, "D"), side="right")
    if i >= len(sessions):
        raise DataUnavailableError(f"no {EXCHANGE} session after {day} in the calendar")
    return sessions[i].astype(date)


def sessions_between(start: date, end: date) -> list[date]:
    """Sessions with start <= session <= end."""
    sessions, _ = _session_arrays()
    lo = np.searchsorted(sessions, np.datetime64(start, "D"), side="left")
    hi = np.searchsorted(sessions, np.datetime64(end, "D"), side="right")
    return [d.astype(date) for d in sessions[lo:hi]]


def session_close(day: date) -> datetime:
    """UTC close of the session ``day`` (raises if ``day`` is not a session)."""
    if not is_session(day):
        raise DataUnavailableError(f"{day} is not a {EXCHANGE} trading session")
    sessions, closes = _session_arrays()
    i = np.searchsorted(sessions, np.datetime64(day, "D"))
    return datetime.fromtimestamp(closes[i] / 1e9, tz=UTC)


def session_open(day: date) -> datetime:
    if not is_session(day):
        raise DataUnavailableError(f"{day} is not a {EXCHANGE} trading session")
    opened = _calendar().schedule.loc[pd.Timestamp(day), "open"]
    return opened.tz_convert("UTC").to_pydatetime()


def closes_for_sessions(days: pd.Series) -> pd.Series:
    """Vectorised :func:`session_close` for many dates; raises on any non-session date."""
    sessions, closes = _session_arrays()
    values = pd.to_datetime(days).values.astype("datetime64[D]")
    idx = np.searchsorted(sessions, values)
    idx_clipped = np.minimum(idx, len(sessions) - 1)
    ok = sessions[idx_clipped] == values
    if not ok.all():
        bad = pd.Series(days).iloc[int(np.argmin(ok))]
        raise DataUnavailableError(f"{bad} is not a {EXCHANGE} trading session")
    return pd.Series(pd.to_datetime(closes[idx_clipped], utc=True), index=days.index)


def information_sessions(timestamps_utc: pd.Series) -> pd.Series:
    """For each UTC timestamp, the session whose information set it belongs to (vectorised)."""
    sessions, closes = _session_arrays()
    ns = pd.to_datetime(timestamps_utc, utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    idx = np.searchsorted(closes, ns, side="right")
    if (idx >= len(sessions)).any():
        raise DataUnavailableError("a timestamp lies beyond the end of the exchange calendar")
    return pd.Series(sessions[idx].astype("datetime64[D]"), index=timestamps_utc.index).dt.date


def information_session(ts: datetime) -> date:
    return information_sessions(pd.Series([ts])).iloc[0]


def is_market_open(ts: datetime) -> bool:
    """Whether the exchange is in its regular session at ``ts``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*values returning an ndarray")
        return bool(_calendar().is_open_on_minute(pd.Timestamp(ts).tz_convert("UTC").floor("min")))


def exchange_today(now: datetime | None = None) -> date:
    """Today's date in the exchange's time zone."""
    now = now or utcnow()
    return pd.Timestamp(now).tz_convert(_calendar().tz).date()


def add_days(day: date, days: int) -> date:
    return day + timedelta(days=days)
