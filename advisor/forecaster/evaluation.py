"""Evaluating forecasts on held-out weeks against simple baselines, on exactly the same windows.

Predictors compared:
  * ``model``: the model under test (default: the newest SFT adapter), greedy decoding;
  * ``base_model``: the untuned base model on the same prompts;
  * ``always_up``: "Up by 0-1%" every week;
  * ``momentum``: last week's move repeated (its direction and bin).
Windows are (ticker, decision date) pairs with the decision date and the label week inside
[start, end], drawn in a fixed hash order when ``max_windows`` limits them. Generated views are
stored like any forecast (and reused on a re-run). The report (JSON and Markdown) has every metric
of :mod:`advisor.forecaster.metrics` overall and per ticker with bootstrap 95% intervals, the share
of up weeks, and how many windows each figure rests on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from advisor.data.labels import Direction, MagnitudeBin, bin_for_return
from advisor.data.store import PreloadedMarketStore
from advisor.data.windows import ForecastWindow
from advisor.errors import AdvisorError
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.metrics import METRICS, Scored, summarize
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.service import WindowConfig, forecast_windows
from advisor.forecaster.sft import labelled_windows
from db.engine import session_scope

BASELINES = ("always_up", "momentum")


@dataclass
class EvalWindow:
    window: ForecastWindow
    actual_pct: float


@dataclass
class EvalReport:
    title: str
    period: tuple[date, date]
    windows: int
    share_up: float
    models: dict[str, str]
    overall: dict[str, dict[str, dict[str, float | None]]]
    per_ticker: dict[str, dict[str, dict[str, dict[str, float | None]]]]
    notes: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "period": [str(self.period[0]), str(self.period[1])],
            "windows": self.windows,
            "share_up": self.share_up,
            "models": self.models,
            "overall": self.overall,
            "per_ticker": self.per_ticker,
            "notes": self.notes,
        }


def collect_windows(
    factory: sessionmaker[Session], start: date, end: date, *, tickers: Sequence[str] | None, max_windows: int | None,
    seed: int, window_config: WindowConfig,
) -> list[EvalWindow]:
    """Held-out windows with their realised move (labels are read only here, for scoring)."""
    with factory() as session:
        store = PreloadedMarketStore(session)
        names = list(tickers) if tickers else store.tickers()
        pairs = labelled_windows(store, names, start, end, window_config, seed, max_windows)
    out = [EvalWindow(window, label.return_pct) for window, label in pairs]
    if not out:
        raise AdvisorError(f"no evaluable windows between {start} and {end}: is there price data for that period?")
    return out


def baseline_prediction(name: str, window: ForecastWindow) -> tuple[Direction, MagnitudeBin]:
    if name == "always_up":
        return Direction.UP, MagnitudeBin(0, 1)
    if name == "momentum":
        return bin_for_return(window.weeks[-1].return_pct)
    raise ValueError(name)


def score_model(
    factory: sessionmaker[Session], handle: ModelHandle, windows: list[EvalWindow], decoding: Decoding,
    prompt_config: PromptConfig, *, progress: bool,
) -> list[Scored]:
    with session_scope(factory) as session:
        outcomes = forecast_windows(session, handle, [w.window for w in windows], decoding, prompt_config, progress=progress)
        scored = []
        for ew, group in zip(windows, outcomes, strict=True):
            view = group[0].view
            scored.append(Scored(ew.window.ticker, ew.window.decision_date, ew.actual_pct, view.direction, view.magnitude))
    return scored


def evaluate(
    factory: sessionmaker[Session],
    models: dict[str, ModelHandle],
    start: date,
    end: date,
    *,
    tickers: Sequence[str] | None = None,
    max_windows: int | None = None,
    seed: int = 0,
    decoding: Decoding = Decoding(),
    prompt_config: PromptConfig = PromptConfig(),
    window_config: WindowConfig = WindowConfig(),
    progress: bool = True,
    title: str = "Weekly forecast evaluation",
) -> EvalReport:
    """Score each model in ``models`` (name -> handle) and the baselines on the same held-out windows."""
    windows = collect_windows(factory, start, end, tickers=tickers, max_windows=max_windows, seed=seed, window_config=window_config)
    scored: dict[str, list[Scored]] = {}
    for name, handle in models.items():
        scored[name] = score_model(factory, handle, windows, decoding, prompt_config, progress=progress)
    for name in BASELINES:
        scored[name] = [
            Scored(w.window.ticker, w.window.decision_date, w.actual_pct, *baseline_prediction(name, w.window)) for w in windows
        ]
    return build_report(title, (start, end), windows, scored, {name: h.version_key for name, h in models.items()}, seed)


def build_report(
    title: str, period: tuple[date, date], windows: list[EvalWindow], scored: dict[str, list[Scored]],
    model_keys: dict[str, str], seed: int,
) -> EvalReport:
    overall = {name: summarize(items, seed=seed) for name, items in scored.items()}
    per_ticker: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, items in scored.items():
        by_ticker: dict[str, list[Scored]] = defaultdict(list)
        for item in items:
            by_ticker[item.ticker].append(item)
        for ticker, group in sorted(by_ticker.items()):
            per_ticker[ticker][name] = summarize(group, seed=seed)
    share_up = sum(w.actual_pct >= 0 for w in windows) / len(windows)
    notes = [
        f"{len(windows)} windows; {share_up:.1%} of realised weeks were up, so always-up scores that share by construction.",
        "Intervals are 95% percentile-bootstrap intervals over windows; windows of one ticker are correlated, so "
        "they are optimistic for per-ticker figures with few windows.",
    ]
    return EvalReport(title, period, len(windows), share_up, model_keys, overall, dict(per_ticker), notes)


def _cell(stat: dict[str, float | None], percent: bool) -> str:
    value = stat.get("value")
    if value is None:
        return "—"
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    if stat.get("low") is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(stat['low'])}, {fmt(stat['high'])}]"  # type: ignore[arg-type]


PERCENT = {"parse_rate", "binary_accuracy", "binary_accuracy_all", "bin_accuracy"}


def to_markdown(report: EvalReport) -> str:
    lines = [f"# {report.title}", "", f"Period {report.period[0]} .. {report.period[1]}; {report.windows} windows.", ""]
    for name, key in report.models.items():
        lines.append(f"- `{name}`: model version `{key}`")
    lines += ["", "## Overall", "", "| predictor | n | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, stats in report.overall.items():
        lines.append(f"| {name} | {int(stats['n']['value'] or 0)} | " + " | ".join(_cell(stats[m], m in PERCENT) for m in METRICS) + " |")
    lines += ["", "## Per ticker (binary accuracy among parsed, parse rate)", ""]
    names = list(report.overall)
    lines += ["| ticker | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for ticker, per_model in report.per_ticker.items():
        n = int(next(iter(per_model.values()))["n"]["value"] or 0)
        cells = []
        for name in names:
            stats = per_model.get(name)
            cells.append("—" if stats is None else f"{_cell(stats['binary_accuracy'], True)} (parsed {_cell({'value': stats['parse_rate']['value']}, True)})")
        lines.append(f"| {ticker} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, directory: Path, stem: str) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_json(), indent=2))
    md_path.write_text(to_markdown(report))
    report.paths = {"json": str(json_path), "markdown": str(md_path)}
    return report.paths

