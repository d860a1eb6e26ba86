"""Forecasting as one operation: windows -> prompts -> generation -> parsed views -> stored rows.

Every input is checked before the model runs (unknown tickers, dates without data, prompts that do
not fit), generation happens next, and the rows are written last, in the caller's transaction, so a
failure leaves nothing half-written. A forecast that already exists (same model version, prompt,
decoding settings, candidate and user) is reused instead of generated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.data.store import MarketStore
from advisor.data.textselect import readable_quote
from advisor.data.windows import DEFAULT_TEXTS_PER_WEEK, DEFAULT_WEEKS, ForecastWindow, Horizon, build_window_for
from advisor.errors import DataUnavailableError
from advisor.forecaster.backends import select_backend
from advisor.forecaster.checker import ViewCheck, check_view
from advisor.forecaster.generation import Decoding, generate
from advisor.forecaster.grounding import grounding_for
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.prompts import Prompt, PromptConfig, build_prompt
from advisor.forecaster.sentiment import PostScorer, default_scorer
from advisor.forecaster.versions import ensure_model_version
from advisor.forecaster.views import View, parse_view
from db.models import Forecast
from db.queries import forecasts_visible_to


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut: the horizon, how many past periods, how many posts per period."""

    horizon: Horizon = Horizon.WEEK
    periods: int = DEFAULT_WEEKS  # weeks, or sessions for the daily horizon
    texts_per_period: int = DEFAULT_TEXTS_PER_WEEK

    @classmethod
    def daily(cls) -> WindowConfig:
        """The stocknet protocol's input: the previous 5 trading days of prices and posts."""
        return cls(Horizon.DAY, 5, 2)

    def build(self, store: MarketStore, ticker: str, day: date) -> ForecastWindow:
        return build_window_for(store, ticker, day, self.horizon, n_periods=self.periods, texts_per_period=self.texts_per_period)


@dataclass(frozen=True)
class Personalisation:
    """Whose forecast this is: stored with it, and the risk context goes into the prompt."""

    user_id: int | None = None
    profile_id: int | None = None
    risk_context: str | None = None


@dataclass
class ForecastOutcome:
    forecast: Forecast
    view: View
    window: ForecastWindow
    reused: bool
    notes: list[str] = field(default_factory=list)

    @property
    def check(self) -> ViewCheck | None:
        """The checker's verdict stored with the view (None for unparsed or older, unchecked rows)."""
        return ViewCheck.from_json(self.forecast.check_result)

    @property
    def is_signal(self) -> bool:
        """Parsed and not failed by the checker: what the portfolio may act on."""
        return self.view.is_signal and self.forecast.check_passed is not False


def build_windows(store: MarketStore, tickers: Sequence[str], on: date, config: WindowConfig = WindowConfig()) -> list[ForecastWindow]:
    """All windows first: any unknown ticker or missing data raises before a model is touched."""
    return [config.build(store, t, on) for t in tickers]


def build_prompts(
    windows: Sequence[ForecastWindow], handle: ModelHandle, config: PromptConfig, decoding: Decoding, risk_context: str | None = None
) -> list[Prompt]:
    return [
        build_prompt(
            w, handle.tokenizer, config, risk_context=risk_context,
            context_length=handle.base.context_length, reserve_tokens=decoding.max_new_tokens,
        )
        for w in windows
    ]


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def forecast_windows(
    session: Session,
    handle: ModelHandle,
    windows: Sequence[ForecastWindow],
    decoding: Decoding = Decoding(),
    prompt_config: PromptConfig = PromptConfig(),
    who: Personalisation = Personalisation(),
    *,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    scorer: PostScorer | None = None,
) -> list[list[ForecastOutcome]]:
    """Generate (or reuse) ``decoding.num_candidates`` views per window and add them to ``session``.

    With ``decoding.grounded`` (the default) each view lists only its window's facts, the posts'
    tone read by ``scorer`` (default: :func:`advisor.forecaster.sentiment.default_scorer`, the one
    that wrote the training targets); see :mod:`advisor.forecaster.grounding`.
    """
    prompts = build_prompts(windows, handle, prompt_config, decoding, who.risk_context)
    backend = select_backend(handle)
    record = decoding.record(str(handle.base.dtype).replace("torch.", ""), backend.name)
    grounded = decoding.grounded and backend.grounds
    record["grounded"] = grounded
    if grounded:
        scorer = scorer or default_scorer()  # before this call writes anything: building it may register its version
        record["post_sentiment"] = scorer.kind
    version = ensure_model_version(session, handle)
    record_json = json.dumps(record, sort_keys=True)
    groups = [_key(version.key, p.hash, record_json, who.user_id) for p in prompts]

    existing: dict[str, list[Forecast]] = {}
    for group in set(groups):
        rows = list(session.scalars(select(Forecast).where(Forecast.group_key == group).order_by(Forecast.candidate_index)))
        if len(rows) == decoding.num_candidates:
            existing[group] = rows
    todo = [i for i, g in enumerate(groups) if g not in existing]
    if grounded and scorer is not None:
        scorer.prepare(shown_posts([windows[i] for i in todo], [prompts[i].text_item_ids for i in todo]))  # one batch for a model scorer
    groundings = (
        [grounding_for(windows[i], scorer, prompts[i].text_item_ids, prompt_config.max_text_chars) for i in todo]
        if grounded and scorer is not None else None
    )
    generated = generate(
        handle, [prompts[i].text for i in todo], [prompts[i].hash for i in todo], decoding,
        progress=progress, on_progress=on_progress, backend=backend, groundings=groundings,
    )

    outcomes: list[list[ForecastOutcome]] = [[] for _ in windows]
    for i, group in enumerate(groups):
        if group in existing:
            outcomes[i] = [
                ForecastOutcome(row, parse_view(row.raw_text), windows[i], reused=True, notes=list(windows[i].notes))
                for row in existing[group]
            ]
    for i, candidates in zip(todo, generated, strict=True):
        window, prompt = windows[i], prompts[i]
        for gen in candidates:
            view = parse_view(gen.text)
            tone = scorer.score if grounded and scorer is not None else None
            check = check_view(view, window, tone, prompt.text_item_ids) if view.is_signal else None
            notes = list(window.notes)
            if not gen.finished:
                notes.append(f"generation hit the {decoding.max_new_tokens}-token limit")
            elif gen.stop_reason == "repetition":
                notes.append("generation stopped early: the model was repeating itself")
            if prompt.dropped_texts:
                notes.append(f"{prompt.dropped_texts} post(s) trimmed to fit the prompt budget")
            row = Forecast(
                forecast_key=_key(groups[i], gen.candidate_index),
                ticker=window.ticker,
                forecast_date=window.decision_date,
                as_of=window.as_of,
                target_start=window.target_start,
                target_end=window.target_end,
                horizon_days=1 if window.horizon is Horizon.DAY else 7,
                model_version_id=version.id,
                user_id=who.user_id,
                profile_id=who.profile_id,
                prompt_hash=prompt.hash,
                prompt_text=prompt.text,
                prompt_messages=[dict(m) for m in prompt.messages],
                raw_text=gen.text,
                parse_status=view.status.value,
                parse_error=view.error,
                direction=view.direction.value if view.direction else None,
                bin_low=float(view.magnitude.low) if view.magnitude else None,
                bin_high=float(view.magnitude.high) if view.magnitude and view.magnitude.high is not None else None,
                positives="\n".join(view.positives) or None,
                concerns="\n".join(view.concerns) or None,
                analysis=view.analysis or None,
                check_result=check.to_json() if check is not None else None,
                check_passed=check.passed if check is not None else None,
                decoding={**record, "new_tokens": gen.new_tokens, "finished": gen.finished, "stop_reason": gen.stop_reason}
                | ({"batch_prompts": list(gen.batch_prompts)} if gen.batch_prompts else {}),
                seed=gen.seed,
                candidate_index=gen.candidate_index,
                group_key=groups[i],
                text_item_ids=list(prompt.text_item_ids),
            )
            session.add(row)
            outcomes[i].append(ForecastOutcome(row, view, window, reused=False, notes=notes))
    session.flush()
    return outcomes


def forecast_tickers(
    session: Session,
    store: MarketStore,
    handle: ModelHandle,
    tickers: Sequence[str],
    on: date,
    decoding: Decoding = Decoding(),
    prompt_config: PromptConfig = PromptConfig(),
    window_config: WindowConfig = WindowConfig(),
    who: Personalisation = Personalisation(),
    *,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[list[ForecastOutcome]]:
    windows = build_windows(store, tickers, on, window_config)
    return forecast_windows(session, handle, windows, decoding, prompt_config, who, progress=progress, on_progress=on_progress)


def generate_missing_views(
    session: Session,
    store: MarketStore,
    handle: ModelHandle,
    tickers: Sequence[str],
    decisions: Sequence[date],
    decoding: Decoding = Decoding(),
    prompt_config: PromptConfig = PromptConfig(),
    window_config: WindowConfig = WindowConfig(),
    who: Personalisation = Personalisation(),
    *,
    progress: bool = True,
) -> tuple[int, list[str]]:
    """Forecast every (ticker, decision) that has no view from this model yet; returns (generated, skipped).

    Pairs without enough data are skipped and reported rather than failing the whole batch.
    """
    version = ensure_model_version(session, handle)
    query = select(Forecast.ticker, Forecast.forecast_date).where(Forecast.model_version_id == version.id)
    query = query.where(Forecast.user_id.is_(None) if who.user_id is None else Forecast.user_id == who.user_id)
    have = set(session.execute(query).all())
    windows, skipped = [], []
    for day in decisions:
        for ticker in tickers:
            if (ticker, day) in have:
                continue
            try:
                windows.append(window_config.build(store, ticker, day))
            except DataUnavailableError as exc:
                skipped.append(f"{ticker} {day}: {exc}")
    if windows:
        forecast_windows(session, handle, windows, decoding, prompt_config, who, progress=progress)
    return len(windows), skipped


def load_views(
    session: Session, model_version_id: int, user_id: int | None, start: date, end: date, *, include_shared: bool = False
) -> dict[date, dict[str, Forecast]]:
    """Stored greedy views of a model version by decision date and ticker: what trades and backtests follow.

    Sampled candidates (made for feedback and tuning) are never signals: a user's unparsed candidate
    must not hide the greedy view it was sampled beside. With ``include_shared`` a user's own views are
    preferred and shared (user-less) ones fill the gaps.
    """
    query = select(Forecast).where(
        Forecast.model_version_id == model_version_id, Forecast.forecast_date >= start, Forecast.forecast_date <= end,
        Forecast.decoding["mode"].as_string() == "greedy",
    )
    if user_id is None or include_shared:
        query = query.where(forecasts_visible_to(user_id))
    else:
        query = query.where(Forecast.user_id == user_id)

    chosen: dict[date, dict[str, Forecast]] = {}
    for row in session.scalars(query.order_by(Forecast.id)):
        current = chosen.setdefault(row.forecast_date, {}).get(row.ticker)
        if current is None or (row.user_id == user_id and current.user_id != user_id):
            chosen[row.forecast_date][row.ticker] = row
    return chosen


def expected_return_pct(row: Forecast) -> float | None:
    """The view's signed bin midpoint in percent; None when it is not a signal (unparsed, or failed
    by the view checker: see :mod:`advisor.forecaster.checker`)."""
    if row.parse_status == "unparsed" or row.direction is None or row.bin_low is None or row.check_passed is False:
        return None
    return (1 if row.direction == "up" else -1) * (row.bin_low + 0.5)


def shown_posts(windows: Sequence[ForecastWindow], shown_ids: Sequence[Sequence[int]]) -> list[str]:
    """The texts of the posts each window's prompt shows (those a grounded view may quote)."""
    texts = []
    for window, ids in zip(windows, shown_ids, strict=True):
        shown = set(ids)
        texts += [t.text for week in window.weeks for t in week.texts if t.id in shown and readable_quote(t.text) is not None]
    return texts
