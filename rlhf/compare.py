"""Did personal tuning make two users' advisors different, in the direction of their profiles?

``advisor rlhf compare --users A,B`` takes each user's latest tuned adapter and its parent and, on the
same held-out windows (greedy views; stored ones are reused), measures:

* **the views** of each model: share of Down calls, mean predicted move (signed and absolute),
  concerns and positives named — each with a 95% bootstrap interval, and each tuned adapter's paired
  difference from its parent; plus how often the two tuned adapters predict different bins;
* **the portfolio** those views give through the same portfolio code and one common profile (the
  moderate archetype, so only the views differ): mean gross exposure over the held-out weeks, and a
  Backtrader backtest's total return and max drawdown;
* **each user's own outcome**: the tuned adapter against its parent on the user's held-out utility
  (:mod:`rlhf.utility`, paired difference with a 95% interval), the held-out preference accuracy the
  tuning run measured, and whether the activation rule (beat the parent on held-out utility) let it in.

Reports go to ``reports/rlhf-compare-*.{json,md}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.store import PreloadedMarketStore
from advisor.data.windows import ForecastWindow
from advisor.errors import AdvisorError, DataUnavailableError
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.service import Personalisation, forecast_windows
from advisor.forecaster.views import View
from advisor.portfolio import RiskParams, exposures, target_weights, trailing_daily_volatility
from db.models import ModelActivation, ModelVersion, Preference, RiskProfile, TrainingRun, User
from db.types import utcnow
from rlhf.datasets import SOURCE_PRIORITY
from rlhf.evaluate import format_ci, mean_ci, write_report
from rlhf.profiles import ARCHETYPES, get_user, score_answers, user_utility
from rlhf.utility import outcome_week, view_utility

TUNED_KINDS = ("dpo", "kto")
COMMON_PROFILE = "moderate"


class CompareError(AdvisorError):
    """A comparison that cannot be made (a user without a tuned adapter, too few windows...)."""


@dataclass(frozen=True)
class TunedModel:
    user: str
    user_id: int
    version_id: int
    parent_id: int
    adapter_path: str
    parent_adapter_path: str | None
    profile_id: int
    profile_label: str
    activated: bool
    preference_accuracy: dict[str, Any]


@dataclass
class CompareReport:
    users: list[str]
    period: tuple[date, date]
    windows: int
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> view statistics
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> tuned - parent (paired)
    portfolio: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> exposure / backtest
    outcome: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> utility, preference accuracy, activation
    bins_differ: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"users": self.users, "period": [str(self.period[0]), str(self.period[1])], "windows": self.windows,
                "models": self.models, "differences": self.differences, "portfolio": self.portfolio, "outcome": self.outcome,
                "bins_differ": self.bins_differ, "notes": self.notes}

    def markdown(self) -> str:
        def ci(stat: dict[str, Any] | None, pct: bool = False) -> str:
            return format_ci(stat, pct, digits=2)

        names = list(self.models)
        lines = [f"# Two users' tuned advisors compared: {', '.join(self.users)}", "",
                 f"{self.windows} held-out windows, {self.period[0]} .. {self.period[1]}; greedy views; 95% bootstrap intervals.", "",
                 "## What the views say", "", "| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key, label, pct in (("down_share", "share of Down calls", True), ("mean_abs_move", "mean size of predicted move (%)", False),
                                ("mean_move", "mean predicted move (%)", False), ("concerns", "concerns named", False),
                                ("positives", "positives named", False)):
            lines.append(f"| {label} | " + " | ".join(ci(self.models[n].get(key), pct) for n in names) + " |")
        lines += ["", "Tuned minus parent, paired over the same windows:", "", "| user | Down share | mean move (%) | concerns named |", "|---|---|---|---|"]
        for user, d in self.differences.items():
            lines.append(f"| {user} | {ci(d.get('down_share'), True)} | {ci(d.get('mean_move'))} | {ci(d.get('concerns'))} |")
        if self.bins_differ:
            lines += ["", f"The two tuned adapters predict different bins on {ci(self.bins_differ, True)} of the windows."]
        lines += ["", f"## The portfolio they give (same portfolio code, one common profile: {COMMON_PROFILE})", "",
                  "| measure | " + " | ".join(self.portfolio) + " |", "|---|" + "---|" * len(self.portfolio)]
        lines.append("| mean gross exposure | " + " | ".join(ci(p.get("gross_exposure"), True) for p in self.portfolio.values()) + " |")
        for key in ("total_return", "max_drawdown"):
            lines.append(f"| backtest {key.replace('_', ' ')} | "
                         + " | ".join("—" if p.get(key) is None else f"{100 * p[key]:.2f}%" for p in self.portfolio.values()) + " |")
        lines += ["", "## Each user's own outcome (their profile's utility, held-out)", "",
                  "| user | utility tuned − parent (per view, bp of equity) | preference accuracy tuned | parent | activated |", "|---|---|---|---|---|"]
        for user, o in self.outcome.items():
            diff = o.get("utility_difference") or {}
            bp = {k: (None if v is None else v * 1e4) for k, v in diff.items() if k in ("value", "low", "high")}
            pa = o.get("preference_accuracy") or {}
            lines.append(f"| {user} | {ci(bp)} | {ci(pa.get('tuned'), True)} | {ci(pa.get('parent'), True)} | {'yes' if o.get('activated') else 'no'} |")
        lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def latest_tuned(session: Session, user: User) -> TunedModel:
    """The user's newest tuned (DPO/KTO) adapter, its parent and the run that made it."""
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.user_id == user.id, ModelVersion.kind.in_(TUNED_KINDS)).order_by(ModelVersion.id.desc())
    )
    if version is None or version.parent_id is None or version.adapter_path is None:
        raise CompareError(f"user '{user.name}' has no tuned adapter yet: run 'advisor rlhf run --user {user.name}' first")
    parent = session.get(ModelVersion, version.parent_id)
    run = session.scalar(select(TrainingRun).where(TrainingRun.output_model_version_id == version.id).order_by(TrainingRun.id.desc()))
    profile = session.get(RiskProfile, version.profile_id) if version.profile_id else None
    if profile is None:
        raise CompareError(f"model version {version.id} records no profile: it was not made by the tuning loop")
    activated = session.scalar(select(ModelActivation.id).where(ModelActivation.user_id == user.id, ModelActivation.model_version_id == version.id)) is not None
    evaluation = (run.metrics or {}).get("evaluation", {}) if run else {}
    return TunedModel(user.name, user.id, version.id, version.parent_id, version.adapter_path, parent.adapter_path if parent else None,
                      profile.id, f"{profile.label} v{profile.version}", activated, evaluation.get("preference_accuracy") or {})


def view_statistics(views: list[View]) -> dict[str, dict[str, Any]]:
    parsed = [v for v in views if v.is_signal]
    moves = [float(v.expected_return_pct or 0.0) for v in parsed]
    return {
        "parsed": mean_ci([1.0 if v.is_signal else 0.0 for v in views]),
        "down_share": mean_ci([1.0 if m < 0 else 0.0 for m in moves]),
        "mean_move": mean_ci(moves), "mean_abs_move": mean_ci([abs(m) for m in moves]),
        "concerns": mean_ci([float(len(v.concerns)) for v in parsed]), "positives": mean_ci([float(len(v.positives)) for v in parsed]),
    }


def _paired(a: list[View], b: list[View]) -> dict[str, dict[str, Any]]:
    both = [(x, y) for x, y in zip(a, b, strict=True) if x.is_signal and y.is_signal]
    def move(v: View) -> float:
        return float(v.expected_return_pct or 0.0)
    return {
        "down_share": mean_ci([(move(x) < 0) - (move(y) < 0) for x, y in both]),
        "mean_move": mean_ci([move(x) - move(y) for x, y in both]),
        "concerns": mean_ci([float(len(x.concerns) - len(y.concerns)) for x, y in both]),
    }


def weekly_gross_exposure(store: PreloadedMarketStore, windows: list[ForecastWindow], views: list[View], params: RiskParams) -> dict[str, Any]:
    """Mean gross exposure the portfolio code takes each held-out week from these views (interval over weeks)."""
    by_week: dict[date, tuple[dict[str, float | None], dict[str, float | None]]] = {}
    for window, view in zip(windows, views, strict=True):
        mus, vols = by_week.setdefault(window.decision_date, ({}, {}))
        closes = store.bars(window.ticker, window.as_of)["adj_close"]
        mus[window.ticker] = view.expected_return_pct
        vols[window.ticker] = trailing_daily_volatility(closes) if len(closes) else None
    gross = [exposures(target_weights(mus, vols, params))[2] for mus, vols in by_week.values()]
    return mean_ci(gross)


def compare_users(
    factory: sessionmaker[Session], model_dir: Path, base_model: str, users: list[str], windows: list[ForecastWindow],
    period: tuple[date, date], data_dir: Path, console: Console | None = None,
) -> tuple[CompareReport, dict[str, str]]:
    from backtest.runner import BacktestInputError, BacktestRequest, run_backtest

    console = console or Console(quiet=True)
    if len(users) != 2 or users[0] == users[1]:
        raise CompareError("compare needs two different users, e.g. --users demo-cautious,demo-bold")
    if not windows:
        raise CompareError(f"no held-out windows with a realised week in {period[0]} .. {period[1]}")
    started = time.monotonic()
    with factory() as session:
        tuned = [latest_tuned(session, get_user(session, name)) for name in users]
    report = CompareReport(users, period, len(windows))
    greedy = Decoding()
    views: dict[str, list[View]] = {}
    owners: dict[str, tuple[int, int | None]] = {}  # model name -> (version id, owning user id)
    for t in tuned:
        parent_name = f"parent v{t.parent_id}"
        for name, adapter, who, version_id in ((f"{t.user} (tuned v{t.version_id})", t.adapter_path, Personalisation(t.user_id, t.profile_id), t.version_id),
                                               (parent_name, t.parent_adapter_path, Personalisation(), t.parent_id)):
            if name in views:
                continue
            console.print(f"[dim]{time.monotonic() - started:6.0f}s[/dim] greedy views of {escape(name)} on {len(windows)} windows", soft_wrap=True)
            handle = load_model(ModelSpec(base=base_model, adapter=Path(adapter) if adapter else None), model_dir)
            with factory() as session:
                outcomes = forecast_windows(session, handle, windows, greedy, PromptConfig(), who)
                session.commit()
            views[name] = [g[0].view for g in outcomes]
            owners[name] = (version_id, who.user_id)
    for name, vs in views.items():
        report.models[name] = view_statistics(vs)
    names = {t.user: (f"{t.user} (tuned v{t.version_id})", f"parent v{t.parent_id}") for t in tuned}
    for user, (tuned_name, parent_name) in names.items():
        report.differences[user] = _paired(views[tuned_name], views[parent_name])
    a, b = (views[names[u][0]] for u in users)
    report.bins_differ = mean_ci([1.0 if x.prediction_text != y.prediction_text else 0.0 for x, y in zip(a, b, strict=True)])

    common = score_answers(ARCHETYPES[COMMON_PROFILE]).params
    tickers = tuple(sorted({w.ticker for w in windows}))
    with factory() as session:
        store = PreloadedMarketStore(session)
        for name, vs in views.items():
            report.portfolio[name] = {"gross_exposure": weekly_gross_exposure(store, windows, vs, common)}
        for t in tuned:
            profile = session.get_one(RiskProfile, t.profile_id)
            utility = user_utility(profile)
            diffs = []
            for window, tv, pv in zip(windows, views[names[t.user][0]], views[names[t.user][1]], strict=True):
                try:
                    week = outcome_week(store, window.ticker, window.decision_date)
                except DataUnavailableError:
                    continue
                diffs.append(view_utility(tv.expected_return_pct, week, utility).utility - view_utility(pv.expected_return_pct, week, utility).utility)
            report.outcome[t.user] = {"profile": t.profile_label, "utility_difference": mean_ci(diffs),
                                      "preference_accuracy": t.preference_accuracy, "activated": t.activated}
    for name, (version_id, owner) in owners.items():
        request = BacktestRequest(start=period[0], end=period[1], params=common, profile_label=f"{COMMON_PROFILE} archetype (comparison)",
                                  model_version_id=version_id, tickers=tickers, user_id=owner, references=False)
        try:
            outcome = run_backtest(factory, request, data_dir / "charts")
            metrics = outcome.by_strategy()["views"].metrics
            report.portfolio[name] |= {"total_return": metrics.get("total_return"), "max_drawdown": metrics.get("max_drawdown")}
        except BacktestInputError as exc:
            report.notes.append(f"backtest of {name}: {exc}")
    report.notes.append("utility per view is in fractions of equity (shown in basis points); a tuned adapter serves its user only "
                        "when its utility gain over the parent has a 95% interval above 0, it ranks the user's held-out pairs no "
                        "worse, and it neither gives one answer nor calls one direction almost everywhere")
    paths = write_report(report, data_dir / "reports", f"rlhf-compare-{'-'.join(users)}-{utcnow().strftime('%Y%m%dT%H%M%S')}")
    return report, paths



@dataclass(frozen=True)
class PairOverlap:
    """How two users' preference data differ on the same candidate views."""

    only_a: int
    only_b: int
    same_choice: int
    opposite_choice: int
    names: tuple[str, str]

    @property
    def shared(self) -> int:
        return self.same_choice + self.opposite_choice

    def describe(self) -> str:
        a, b = self.names
        opposite = f" ({self.opposite_choice / self.shared:.0%})" if self.shared else ""
        return (f"{self.shared} pairs of views labelled by both users, chosen the opposite way in {self.opposite_choice}{opposite}; "
                f"{self.only_a} pairs only {a} labelled, {self.only_b} only {b} (a tie for the other)")


def pair_overlap(session: Session, a: User, b: User) -> PairOverlap:
    """Compare the two users' labelled pairs (any source) view pair by view pair."""
    def choices(user: User) -> dict[frozenset[int], int]:
        """The label each pair exports with (a person's choice over the simulated user's over the outcome)."""
        rows = session.execute(select(Preference.chosen_forecast_id, Preference.rejected_forecast_id, Preference.source, Preference.id).where(
            Preference.user_id == user.id, Preference.kind == "pair", Preference.both_bad.is_(False))).all()
        ordered = sorted(rows, key=lambda r: (-SOURCE_PRIORITY.get(r[2], 9), r[3]))  # the exported label is written last
        return {frozenset((c, r)): c for c, r, _, _ in ordered if c is not None and r is not None}

    ca, cb = choices(a), choices(b)
    shared = ca.keys() & cb.keys()
    same = sum(1 for k in shared if ca[k] == cb[k])
    return PairOverlap(len(ca.keys() - cb.keys()), len(cb.keys() - ca.keys()), same, len(shared) - same, (a.name, b.name))
