"""Weekly windows: what the forecaster sees for a ticker on a forecast date, and the label it is judged by.

Definitions (all on the NYSE calendar):
  * The **decision session** for a requested date D is the last session on or before D. The
    information cut-off ``as_of`` is that session's close: bars and texts known by then, nothing else.
  * Past **week k** (k = 1 is the latest) spans the calendar days (d - 7k, d - 7(k-1)] where d is the
    decision session. Its move is the adjusted-close return from the last session on or before its
    start bound to the last session on or before its end; holidays simply make a week shorter.
  * A week's texts are those whose information session falls in the week (posted after a close counts
    for the next session) and were published by ``as_of``; selection rules are in
    :mod:`advisor.data.textselect`.
  * The **target week** is (d, d + 7]; its label (:func:`weekly_label`) is the adjusted-close return from
    d to the last session on or before d + 7. It is computed from later data only and only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

import pandas as pd

from advisor import market_calendar
from advisor.data.labels import Direction, MagnitudeBin, bin_for_return, label_text
from advisor.data.store import CompanyInfo, MarketStore
from advisor.data.textselect import SelectionStats, clean_for_prompt, records_from_frame, select_texts
from advisor.errors import DataUnavailableError, FutureDateError

DEFAULT_WEEKS = 3  # FinGPT-Forecaster's default look-back; each week costs ~100 prompt tokens
DEFAULT_TEXTS_PER_WEEK = 3
MAX_STALENESS_DAYS = 7  # the newest visible bar must lie within the decision week


class Horizon(StrEnum):
    """What a window forecasts: the next calendar week (FinGPT) or the next session (stocknet daily)."""

    WEEK = "week"
    DAY = "day"


@dataclass(frozen=True)
class TextSnippet:
    id: int
    published_at: datetime
    session_date: date
    source: str
    text: str


@dataclass(frozen=True)
class WeekMove:
    start: date  # first calendar day of the week (exclusive bound + 1)
    end: date  # last calendar day of the week
    first_session: date | None
    last_session: date
    start_price: float  # adjusted close before the week
    end_price: float  # adjusted close at the week's last session
    texts: tuple[TextSnippet, ...]
    text_stats: SelectionStats

    @property
    def return_pct(self) -> float:
        return (self.end_price / self.start_price - 1.0) * 100.0


@dataclass(frozen=True)
class ForecastWindow:
    ticker: str
    company: CompanyInfo
    requested_date: date
    decision_date: date
    as_of: datetime
    weeks: tuple[WeekMove, ...]  # oldest first
    fundamentals: dict[str, float]
    target_start: date
    target_end: date
    last_price: float
    notes: tuple[str, ...] = field(default=())
    horizon: Horizon = Horizon.WEEK

    @property
    def text_count(self) -> int:
        return sum(len(w.texts) for w in self.weeks)

    @property
    def has_text(self) -> bool:
        return self.text_count > 0

    @property
    def text_item_ids(self) -> list[int]:
        return [t.id for w in self.weeks for t in w.texts]


@dataclass(frozen=True)
class WeeklyLabel:
    ticker: str
    decision_date: date
    target_end: date
    start_price: float
    end_price: float
    return_pct: float
    direction: Direction
    magnitude: MagnitudeBin
    closes: tuple[float, ...] = ()  # the start price, then each session's close through target_end (the week's path)

    @property
    def text(self) -> str:
        return label_text(self.direction, self.magnitude)


def decision_point(requested: date, now: datetime | None = None) -> tuple[date, datetime]:
    """The decision session and its close for a requested date; refuses dates whose close is not past."""
    now = now or market_calendar.utcnow()
    today = market_calendar.exchange_today(now)
    if requested > today:
        raise FutureDateError(f"forecast date {requested} is in the future (today is {today})")
    decision = market_calendar.session_on_or_before(requested)
    as_of = market_calendar.session_close(decision)
    if as_of > now:
        # Today's session has not closed yet: the latest complete information is the previous close.
        decision = market_calendar.session_on_or_before(decision - timedelta(days=1))
        as_of = market_calendar.session_close(decision)
    return decision, as_of


def build_window(
    store: MarketStore,
    ticker: str,
    requested: date,
    *,
    n_weeks: int = DEFAULT_WEEKS,
    texts_per_week: int = DEFAULT_TEXTS_PER_WEEK,
    now: datetime | None = None,
) -> ForecastWindow:
    """The point-in-time window for ``ticker`` on ``requested`` (see module docstring)."""
    if n_weeks < 1:
        raise ValueError("n_weeks must be at least 1")
    company = store.company(ticker)
    span = store.date_range(ticker)
    if span is None:
        raise DataUnavailableError(f"no prices stored for {ticker}: import or sync data first")
    decision, as_of = decision_point(requested, now)
    first_needed = decision - timedelta(days=7 * n_weeks)
    earliest = _earliest_forecast_date(span[0], n_weeks)
    if decision < span[0] or first_needed < span[0]:
        raise DataUnavailableError(
            f"{requested} is before the data for {ticker} allows: prices start {span[0]} and a window needs "
            f"{n_weeks} week(s) of history; the earliest forecast date is {earliest}"
        )
    bars = store.bars(ticker, as_of, start=first_needed - timedelta(days=10))
    if bars.empty or bars.index[-1] < decision - timedelta(days=MAX_STALENESS_DAYS):
        last = bars.index[-1] if not bars.empty else None
        raise DataUnavailableError(
            f"no prices for {ticker} in the week before {decision} (stored prices end {span[1]}, "
            f"latest visible {last})"
        )
    prices = bars["adj_close"]
    texts = records_from_frame(store.texts(ticker, as_of, start_session=first_needed + timedelta(days=1)))

    weeks: list[WeekMove] = []
    notes: list[str] = []
    for k in range(n_weeks, 0, -1):
        week_end = decision - timedelta(days=7 * (k - 1))
        week_start_bound = decision - timedelta(days=7 * k)
        before = prices[prices.index <= week_start_bound]
        through = prices[prices.index <= week_end]
        if before.empty:
            raise DataUnavailableError(
                f"{requested} is before the data for {ticker} allows; the earliest forecast date is {earliest}"
            )
        in_week = prices[(prices.index > week_start_bound) & (prices.index <= week_end)]
        if in_week.empty:
            notes.append(f"no trading data in the week ending {week_end} (halt or gap)")
        week_texts = [t for t in texts if week_start_bound < t.session_date <= week_end]
        chosen, stats = select_texts(week_texts, ticker, company.name, texts_per_week)
        snippets = tuple(
            TextSnippet(int(r.id), pd.Timestamp(r.published_at).to_pydatetime(), r.session_date, r.source, clean_for_prompt(r.text))
            for r in chosen
        )
        weeks.append(
            WeekMove(
                start=week_start_bound + timedelta(days=1),
                end=week_end,
                first_session=in_week.index[0] if not in_week.empty else None,
                last_session=through.index[-1],
                start_price=float(before.iloc[-1]),
                end_price=float(through.iloc[-1]),
                texts=snippets,
                text_stats=stats,
            )
        )
    if not any(w.texts for w in weeks):
        notes.append("no usable text items in the window: the view rests on prices alone")
    target_end = market_calendar.session_on_or_before(decision + timedelta(days=7))
    return ForecastWindow(
        ticker=ticker,
        company=company,
        requested_date=requested,
        decision_date=decision,
        as_of=as_of,
        weeks=tuple(weeks),
        fundamentals=store.fundamentals(ticker, as_of),
        target_start=market_calendar.next_session_after(decision),
        target_end=target_end,
        last_price=float(prices.iloc[-1]),
        notes=tuple(notes),
    )


def weekly_label(store: MarketStore, ticker: str, decision_date: date) -> WeeklyLabel:
    """The realised move of the week after ``decision_date`` (uses future data by design)."""
    target_end = market_calendar.session_on_or_before(decision_date + timedelta(days=7))
    bars = store.outcome_bars(ticker, decision_date - timedelta(days=MAX_STALENESS_DAYS), target_end)
    start = bars[bars.index <= decision_date]
    span = store.date_range(ticker)
    if start.empty or span is None or span[1] < target_end:
        stored_end = span[1] if span else None
        raise DataUnavailableError(
            f"label for {ticker} after {decision_date} needs prices through {target_end}; stored prices end {stored_end}"
        )
    end = bars[bars.index <= target_end]
    start_price = float(start["adj_close"].iloc[-1])
    end_price = float(end["adj_close"].iloc[-1])
    return_pct = (end_price / start_price - 1.0) * 100.0
    direction, magnitude = bin_for_return(return_pct)
    path = (start_price, *(float(v) for v in end[end.index > decision_date]["adj_close"]))
    return WeeklyLabel(ticker, decision_date, target_end, start_price, end_price, return_pct, direction, magnitude, path)


def build_daily_window(
    store: MarketStore,
    ticker: str,
    requested: date,
    *,
    n_days: int = 5,
    texts_per_day: int = 2,
    now: datetime | None = None,
) -> ForecastWindow:
    """The stocknet-style window: the previous ``n_days`` sessions' moves and posts, as of the close.

    Each "period" is one session: its move is the adjusted-close return from the previous session,
    its posts are those whose information session is that day. The target is the next session.
    """
    company = store.company(ticker)
    span = store.date_range(ticker)
    if span is None:
        raise DataUnavailableError(f"no prices stored for {ticker}: import or sync data first")
    decision, as_of = decision_point(requested, now)
    bars = store.bars(ticker, as_of, start=decision - timedelta(days=3 * n_days + 14))
    if len(bars) < n_days + 1 or bars.index[-1] < decision - timedelta(days=MAX_STALENESS_DAYS):
        raise DataUnavailableError(
            f"{requested}: {ticker} needs {n_days + 1} sessions of prices up to {decision} "
            f"(stored prices {span[0]} .. {span[1]})"
        )
    prices = bars["adj_close"]
    days = list(prices.index[-n_days:])
    texts = records_from_frame(store.texts(ticker, as_of, start_session=days[0]))
    periods = []
    for position, day in enumerate(days):
        previous_close = float(prices.iloc[len(prices) - n_days - 1 + position])
        chosen, stats = select_texts([t for t in texts if t.session_date == day], ticker, company.name, texts_per_day)
        snippets = tuple(
            TextSnippet(int(r.id), pd.Timestamp(r.published_at).to_pydatetime(), r.session_date, r.source, clean_for_prompt(r.text))
            for r in chosen
        )
        periods.append(WeekMove(day, day, day, day, previous_close, float(prices.loc[day]), snippets, stats))
    notes = () if any(p.texts for p in periods) else ("no usable text items in the window: the view rests on prices alone",)
    target = market_calendar.next_session_after(decision)
    return ForecastWindow(
        ticker=ticker,
        company=company,
        requested_date=requested,
        decision_date=decision,
        as_of=as_of,
        weeks=tuple(periods),
        fundamentals=store.fundamentals(ticker, as_of),
        target_start=target,
        target_end=target,
        last_price=float(prices.iloc[-1]),
        notes=notes,
        horizon=Horizon.DAY,
    )


def daily_label(store: MarketStore, ticker: str, decision_date: date) -> WeeklyLabel:
    """The realised next-session move after ``decision_date`` (future data, by design)."""
    target = market_calendar.next_session_after(decision_date)
    bars = store.outcome_bars(ticker, decision_date - timedelta(days=MAX_STALENESS_DAYS), target)
    start = bars[bars.index <= decision_date]
    end = bars[bars.index == target]
    if start.empty or end.empty:
        raise DataUnavailableError(f"next-day label for {ticker} after {decision_date} needs prices on {target}")
    start_price, end_price = float(start["adj_close"].iloc[-1]), float(end["adj_close"].iloc[-1])
    return_pct = (end_price / start_price - 1.0) * 100.0
    direction, magnitude = bin_for_return(return_pct)
    return WeeklyLabel(ticker, decision_date, target, start_price, end_price, return_pct, direction, magnitude, (start_price, end_price))


def build_window_for(
    store: MarketStore, ticker: str, requested: date, horizon: Horizon, *, n_periods: int, texts_per_period: int
) -> ForecastWindow:
    if horizon is Horizon.DAY:
        return build_daily_window(store, ticker, requested, n_days=n_periods, texts_per_day=texts_per_period)
    return build_window(store, ticker, requested, n_weeks=n_periods, texts_per_week=texts_per_period)


def label_for(store: MarketStore, window: ForecastWindow) -> WeeklyLabel:
    if window.horizon is Horizon.DAY:
        return daily_label(store, window.ticker, window.decision_date)
    return weekly_label(store, window.ticker, window.decision_date)


def decision_dates(start: date, end: date, horizon: Horizon) -> list[date]:
    if horizon is Horizon.DAY:
        return market_calendar.sessions_between(start, end)
    return weekly_decision_dates(start, end)


def weekly_decision_dates(start: date, end: date, weekday: int = 4) -> list[date]:
    """One decision session per calendar week in [start, end]: the last session on or before the given
    weekday (Friday by default), so holiday Fridays fall back to Thursday."""
    dates: list[date] = []
    day = start + timedelta(days=(weekday - start.weekday()) % 7)
    while day <= end:
        session = market_calendar.session_on_or_before(day)
        if session >= start and (not dates or session > dates[-1]):
            dates.append(session)
        day += timedelta(days=7)
    return dates


def _earliest_forecast_date(first_bar: date, n_weeks: int) -> date:
    return market_calendar.next_session_after(first_bar + timedelta(days=7 * n_weeks - 1))


def format_window(window: ForecastWindow, *, include_notes: bool = True) -> str:
    """The window as plain text, in the order the forecaster's prompt presents it.

    Posts are quoted data (inside quotation marks, introduced as posts), never instructions.
    """
    c = window.company
    lines = [f"[Company] {c.name} ({window.ticker})" + (f", sector: {c.sector}" if c.sector else "") + "."]
    if c.description:
        lines.append(c.description.strip())
    for week in window.weeks:
        move = week.return_pct
        verb = "rose" if move >= 0 else "fell"
        # Weeks are consecutive 7-day spans, so the end date says it all (dates cost ~10 tokens each).
        period = f"[Day {week.end}]" if window.horizon is Horizon.DAY else f"[Week ending {week.end}]"
        lines.append(f"{period} Stock {verb} {abs(move):.2f}%.")
        if week.texts:
            lines.append("Posts:")
            lines.extend(f'- "{snippet.text}"' for snippet in week.texts)
        else:
            lines.append("Posts: none.")
    if len(window.weeks) > 1:
        # The window's whole move, stated so a view can cite it rather than compute it.
        first, last = window.weeks[0], window.weeks[-1]
        unit = "sessions" if window.horizon is Horizon.DAY else "weeks"
        lines.append(f"Over {len(window.weeks)} {unit} the stock moved {(last.end_price / first.start_price - 1.0) * 100.0:+.2f}%.")
    if window.fundamentals:
        lines.append("[Basic financials, latest known] " + "; ".join(
            f"{name}: {value:,.4g}" for name, value in sorted(window.fundamentals.items())
        ))
    if include_notes and window.notes:
        lines.extend(f"(note: {note})" for note in window.notes)
    return "\n".join(lines)


def bars_to_frame(window: ForecastWindow) -> pd.DataFrame:
    """The window's weekly moves as a small table (for the CLI and the dashboard)."""
    return pd.DataFrame(
        [
            {
                "week_start": w.start,
                "week_end": w.end,
                "return_pct": round(w.return_pct, 3),
                "texts": len(w.texts),
                "texts_seen": w.text_stats.seen,
            }
            for w in window.weeks
        ]
    )
