"""Evaluating forecasts on held-out weeks against simple baselines, on exactly the same windows.

Predictors compared:
  * ``model``: the model under test (default: the newest SFT adapter), greedy decoding;
  * ``base_model``: the untuned base model on the same prompts;
  * ``always_up``: "Up by 0-1%" every week;
  * ``momentum``: last week's move repeated (its direction and bin);
  * ``logistic``: a logistic regression on the window's numbers (:mod:`advisor.forecaster.baseline`),
    trained on every window of the training period before the evaluated one.
Views are also judged as text (``view_quality``): the share the checker passes, stated facts found,
contradictions, and pairs of tickers of one week given the same text. ``calibration`` asks whether a
larger predicted move comes with a larger realised one: per predicted magnitude bin, the mean realised
absolute move and the mean move in the predicted direction, with intervals.
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
from advisor.forecaster.baseline import LogisticBaseline, train_logistic_baseline
from advisor.forecaster.checker import ViewCheck
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.metrics import METRICS, Scored, summarize
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.sentiment import SentimentScorer
from advisor.forecaster.service import WindowConfig, forecast_windows
from advisor.forecaster.sft import labelled_windows
from db.engine import session_scope

BASELINES = ("always_up", "momentum")
BASELINE_TRAIN_START = date(2014, 1, 1)  # the bundle's posts start here


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
    view_quality: dict[str, dict[str, float | None]] = field(default_factory=dict)
    calibration: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
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
            "view_quality": self.view_quality,
            "calibration": self.calibration,
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


@dataclass(frozen=True)
class ViewText:
    """What view quality is judged on: the raw text and the checker's verdict (None when unparsed)."""

    ticker: str
    decision_date: date
    text: str
    check: ViewCheck | None


def score_model(
    factory: sessionmaker[Session], handle: ModelHandle, windows: list[EvalWindow], decoding: Decoding,
    prompt_config: PromptConfig, *, progress: bool,
) -> tuple[list[Scored], list[ViewText]]:
    """The model's prediction per window (as parsed) and its text with the checker's verdict."""
    with session_scope(factory) as session:
        outcomes = forecast_windows(session, handle, [w.window for w in windows], decoding, prompt_config, progress=progress)
        scored, texts = [], []
        for ew, group in zip(windows, outcomes, strict=True):
            outcome = group[0]
            view = outcome.view
            scored.append(Scored(ew.window.ticker, ew.window.decision_date, ew.actual_pct, view.direction, view.magnitude))
            texts.append(ViewText(ew.window.ticker, ew.window.decision_date, outcome.forecast.raw_text, outcome.check))
    return scored, texts


def view_quality(texts: list[ViewText]) -> dict[str, float | None]:
    """Checker pass rate, facts found, contradictions, and same-text pairs within a week."""
    checked = [t.check for t in texts if t.check is not None]
    stated = sum(c.stated for c in checked)
    by_week: dict[date, list[str]] = defaultdict(list)
    for t in texts:
        by_week[t.decision_date].append(t.text.strip())
    pairs = same = 0
    for week_texts in by_week.values():
        for i in range(len(week_texts)):
            for j in range(i + 1, len(week_texts)):
                pairs += 1
                same += week_texts[i] == week_texts[j]
    n = len(texts)
    return {
        "views": float(n),
        "parsed": len(checked) / n if n else None,
        "check_passed": sum(c.passed for c in checked) / n if n else None,
        "facts_found": sum(c.found for c in checked) / stated if stated else None,
        "views_all_facts_found": sum(c.found == c.stated for c in checked) / len(checked) if checked else None,
        "contradictions": sum(bool(c.contradictions) for c in checked) / len(checked) if checked else None,
        "same_text_pairs": same / pairs if pairs else None,
        "week_pairs": float(pairs),
    }


def calibration(items: list[Scored], *, seed: int = 0, samples: int = 1000) -> list[dict[str, Any]]:
    """Per predicted magnitude bin: n, mean realised |move| and mean move in the predicted direction (95% CIs)."""
    import numpy as np

    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    order: dict[str, float] = {}
    for item in items:
        if not item.parsed:
            continue
        assert item.magnitude is not None and item.direction is not None
        name = item.magnitude.text
        order[name] = item.magnitude.fingpt_value
        groups[name].append((abs(item.actual_pct), item.direction.sign * item.actual_pct))
    rng = np.random.default_rng(seed)
    rows = []
    for name in sorted(groups, key=order.__getitem__):
        values = np.array(groups[name])
        row: dict[str, Any] = {"predicted": name, "predicted_abs_pct": order[name], "n": len(values)}
        for column, key in ((0, "realised_abs_pct"), (1, "realised_in_predicted_direction_pct")):
            data = values[:, column]
            boot = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
            row[key] = {"value": float(data.mean()), "low": float(np.percentile(boot, 2.5)), "high": float(np.percentile(boot, 97.5))}
        rows.append(row)
    return rows


def fit_baseline(
    factory: sessionmaker[Session], scorer: SentimentScorer, train_start: date, before: date, *, tickers: Sequence[str] | None,
    window_config: WindowConfig, seed: int,
) -> LogisticBaseline:
    """The logistic baseline trained on every window whose label ends before ``before``."""
    from datetime import timedelta

    with factory() as session:
        store = PreloadedMarketStore(session)
        names = list(tickers) if tickers else store.tickers()
        pairs = labelled_windows(store, names, train_start, before - timedelta(days=1), window_config, seed, None)
    return train_logistic_baseline(pairs, scorer, seed)


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
    scorer: SentimentScorer | None = None,
    baseline_train_start: date = BASELINE_TRAIN_START,
) -> EvalReport:
    """Score each model in ``models`` (name -> handle) and the baselines on the same held-out windows.

    With a sentiment ``scorer`` the logistic baseline is trained on [``baseline_train_start``, ``start``)
    and scored too.
    """
    windows = collect_windows(factory, start, end, tickers=tickers, max_windows=max_windows, seed=seed, window_config=window_config)
    scored: dict[str, list[Scored]] = {}
    texts: dict[str, list[ViewText]] = {}
    for name, handle in models.items():
        scored[name], texts[name] = score_model(factory, handle, windows, decoding, prompt_config, progress=progress)
    for name in BASELINES:
        scored[name] = [
            Scored(w.window.ticker, w.window.decision_date, w.actual_pct, *baseline_prediction(name, w.window)) for w in windows
        ]
    notes = []
    if scorer is not None:
        baseline = fit_baseline(factory, scorer, baseline_train_start, start, tickers=tickers, window_config=window_config, seed=seed)
        predictions = baseline.predict([w.window for w in windows], scorer)
        scored["logistic"] = [Scored(w.window.ticker, w.window.decision_date, w.actual_pct, *p) for w, p in zip(windows, predictions, strict=True)]
        notes.append(
            f"logistic: trained on {baseline.training_windows} windows from {baseline_train_start} to before {start} "
            f"({baseline.training_share_up:.1%} up); magnitude fixed at {baseline.magnitude}."
        )
    report = build_report(title, (start, end), windows, scored, {name: h.version_key for name, h in models.items()}, seed)
    report.view_quality = {name: view_quality(items) for name, items in texts.items()}
    report.calibration = {name: calibration(items, seed=seed) for name, items in scored.items() if name in models or name == "momentum"}
    report.notes += notes
    return report


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
    return EvalReport(title, period, len(windows), share_up, model_keys, overall, dict(per_ticker), notes=notes)


def _cell(stat: dict[str, float | None], percent: bool) -> str:
    value = stat.get("value")
    if value is None:
        return "—"
    fmt = (lambda v: f"{100 * v:.1f}%") if percent else (lambda v: f"{v:.3f}")
    if stat.get("low") is None:
        return fmt(value)
    return f"{fmt(value)} [{fmt(stat['low'])}, {fmt(stat['high'])}]"


PERCENT = {"parse_rate", "binary_accuracy", "binary_accuracy_all", "bin_accuracy"}


def to_markdown(report: EvalReport) -> str:
    lines = [f"# {report.title}", "", f"Period {report.period[0]} .. {report.period[1]}; {report.windows} windows.", ""]
    for name, key in report.models.items():
        lines.append(f"- `{name}`: model version `{key}`")
    lines += ["", "## Overall", "", "| predictor | n | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, stats in report.overall.items():
        lines.append(f"| {name} | {int(stats['n']['value'] or 0)} | " + " | ".join(_cell(stats[m], m in PERCENT) for m in METRICS) + " |")
    if report.view_quality:
        lines += ["", "## Views as text (the checker's verdicts)", "",
                  "| model | views | parsed | passed checker | facts found | views with all facts found | contradictions | same text, same week |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, q in report.view_quality.items():
            cells = [_cell({"value": q.get(k)}, True) for k in ("parsed", "check_passed", "facts_found", "views_all_facts_found", "contradictions", "same_text_pairs")]
            lines.append(f"| {name} | {int(q['views'] or 0)} | " + " | ".join(cells) + f" (of {int(q['week_pairs'] or 0)} pairs) |")
    if report.calibration:
        lines += ["", "## Calibration: predicted move size against realised", "",
                  "| predictor | predicted | n | realised absolute move, % | realised move in the predicted direction, % |", "|---|---|---|---|---|"]
        for name, rows in report.calibration.items():
            for row in rows:
                lines.append(f"| {name} | {row['predicted']} | {row['n']} | {_cell(row['realised_abs_pct'], False)} | "
                             f"{_cell(row['realised_in_predicted_direction_pct'], False)} |")
    lines += ["", "## Per ticker (binary accuracy among parsed, parse rate)", ""]
    names = list(report.overall)
    lines += ["| ticker | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for ticker, per_model in report.per_ticker.items():
        n = int(next(iter(per_model.values()))["n"]["value"] or 0)
        cells = []
        for name in names:
            found = per_model.get(name)
            cells.append("—" if found is None else f"{_cell(found['binary_accuracy'], True)} (parsed {_cell({'value': found['parse_rate']['value']}, True)})")
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

