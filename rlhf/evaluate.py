"""Does the tuned adapter serve its user better than its parent? Measured on held-out weeks only.

One report, each figure with a 95% bootstrap interval where it is an average over windows or pairs:
  * **preference accuracy** on held-out pairs: the share of pairs where the model gives the chosen
    view a higher log-likelihood than the rejected one (tuned vs parent);
  * **reward-model win rate**: on held-out prompts, how often the reward model scores the tuned
    model's greedy view above the parent's (ties count half);
  * **mean realised utility** of following each model's greedy view under the user's profile
    (:func:`rlhf.utility.view_utility`), and the paired difference tuned - parent;
  * **binary accuracy and MCC** of the greedy views (the forecaster's metrics);
  * a **backtest** of each model's views with the user's profile over the held-out period.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from advisor.data.labels import Direction, label_text
from advisor.data.store import MarketStore
from advisor.data.windows import ForecastWindow
from advisor.errors import DataUnavailableError
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.metrics import Scored, summarize
from advisor.forecaster.views import parse_view
from db.models import Forecast, RiskProfile
from rlhf.profiles import user_utility
from rlhf.reward import RewardScorer
from rlhf.utility import outcome_week, view_utility

BOOTSTRAP = 1000
ONE_ANSWER_SHARE = 0.95  # one prediction on this share of the views: an advisor that ignores its window


def mean_ci(values: list[float], seed: int = 0) -> dict[str, float | None]:
    if not values:
        return {"value": None, "low": None, "high": None, "n": 0}
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boot = data[rng.integers(0, len(data), size=(BOOTSTRAP, len(data)))].mean(axis=1)
    return {"value": float(data.mean()), "low": float(np.percentile(boot, 2.5)), "high": float(np.percentile(boot, 97.5)), "n": len(data)}


def format_ci(stat: dict[str, Any] | None, pct: bool = False, digits: int = 5) -> str:
    """``value [low, high]`` of a :func:`mean_ci` result, as a percentage or with ``digits`` decimals; "—" when absent."""
    if not stat or stat.get("value") is None:
        return "—"
    fmt = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.{digits}f}")
    low, high = stat.get("low"), stat.get("high")
    return fmt(stat["value"]) + (f" [{fmt(low)}, {fmt(high)}]" if low is not None else "")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, non-finite floats as null (reports and stored run metrics)."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.loads(json.dumps(value, default=str), parse_float=lambda s: clean(float(s)))


def write_report(report: Any, directory: Path, stem: str) -> dict[str, str]:
    """A report (anything with ``to_json()`` and ``markdown()``) as ``stem.json`` and ``stem.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(jsonable(report.to_json()), indent=2))
    md_path.write_text(report.markdown())
    return {"json": str(json_path), "markdown": str(md_path)}


def completion_logprob(handle: ModelHandle, prompt: list[dict[str, str]] | str, completion: str) -> float:
    """Sum of log-probabilities of the completion tokens given the prompt (with the handle's adapter)."""
    import torch

    tokenizer = handle.tokenizer
    prompt_text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = prompt_text + completion + "<|im_end|>"
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"].to(handle.base.device)
    with handle.activate() as model, torch.inference_mode():
        logits = model(input_ids=ids).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    start = len(prompt_ids) - 1
    return float(logprobs[start:].gather(1, targets[start:, None]).sum())


def pair_logprob_margins(handle: ModelHandle, rows: list[dict[str, Any]], progress: str | None = None) -> list[float]:
    """log p(chosen) - log p(rejected) under the handle's adapter, for each preference row.

    Both views of a pair share their prompt (and often their first lines), and tokens they share add
    the same log-probability to both sides, so only the tokens after the common prefix are scored: the
    prefix runs once per pair (:func:`rlhf.shared_prompt.paired_hidden_states`) and the margin equals
    the difference of two full :func:`completion_logprob` calls up to float rounding (tested). About half
    the compute of scoring both views in full, which is most of the loop's evaluation time on a CPU.
    ``progress`` names a progress bar (minutes for a few hundred pairs on a CPU); None shows none.
    """
    import torch
    from tqdm.auto import tqdm

    from rlhf.shared_prompt import paired_hidden_states

    tokenizer = handle.tokenizer
    margins: list[float] = []
    with handle.activate() as model, torch.inference_mode():
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        backbone = getattr(lm, lm.base_model_prefix)
        device = handle.base.device
        for row in tqdm(rows, desc=progress, unit="pair", disable=progress is None):
            prompt = row["prompt"]
            prompt_text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            seqs = [tokenizer(prompt_text + row[side][0]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"] for side in ("chosen", "rejected")]
            common = 0
            for a, b in zip(*seqs, strict=False):
                if a != b:
                    break
                common += 1
            if common == len(seqs[0]) == len(seqs[1]):
                margins.append(0.0)  # the same text
                continue
            split = max(1, common - 1)  # position split predicts the first token that differs
            length = max(map(len, seqs))
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            ids = torch.tensor([s + [pad] * (length - len(s)) for s in seqs], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in seqs], device=device)
            hidden = paired_hidden_states(backbone, ids, mask, split)  # positions [split, length)
            logits = lm.get_output_embeddings()(hidden[:, :-1]).float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, split + 1 :, None]).squeeze(-1)
            sums = (logprobs * mask[:, split + 1 :]).sum(dim=1)
            margins.append(float(sums[0] - sums[1]))
    return margins


def preference_wins(handle: ModelHandle, rows: list[dict[str, Any]], progress: str | None = None) -> list[float]:
    """1 where the model gives the chosen view the higher likelihood, else 0, per pair."""
    return [1.0 if m > 0 else 0.0 for m in pair_logprob_margins(handle, rows, progress)]


def preference_accuracy(handle: ModelHandle, rows: list[dict[str, Any]]) -> dict[str, float | None]:
    return mean_ci(preference_wins(handle, rows))


@dataclass
class ComparisonReport:
    user: str
    profile: str
    period: tuple[date, date]
    models: dict[str, int]
    preference_accuracy: dict[str, dict[str, float | None]] = field(default_factory=dict)
    reward_win_rate: dict[str, float | None] | None = None
    utility: dict[str, dict[str, float | None]] = field(default_factory=dict)
    forecast_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    backtest: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    prediction_spread: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def tuned_beats_parent(self) -> bool:
        """The paired utility difference's 95% interval lies above 0 (a point estimate above 0 is not enough)."""
        low = self.utility.get("difference", {}).get("low")
        return low is not None and low > 0

    def activation_blockers(self) -> list[str]:
        """Why the tuned adapter must not serve its user; empty when it may.

        The tuned adapter must beat its parent on the user's held-out utility with the paired 95%
        interval above 0: at user sizes the aggressive user's adapter beat its parent by +4.5 bp per
        view [-14.6, +24.2] (README, "Personal tuning: the measured effect"), which is no evidence of
        a gain. That is necessary, not enough: a real loop produced an adapter that says "Down by 1-2%"
        on every window, which beat its parent on utility only because staying out of a falling
        half-year costs nothing, while it ranked the user's own held-out pairs worse than the parent.
        So an adapter is also refused when it ranks those pairs significantly worse (the paired
        interval lies below 0), gives one answer almost everywhere (one prediction on >= 95% of its
        views where the parent was not), or calls one direction almost everywhere (Up or Down on >= 95%
        of its views in whatever sizes, where the parent did not): an advisor that ignores its window.
        """
        blockers = []
        if not self.tuned_beats_parent:
            diff = self.utility.get("difference")
            blockers.append("it did not beat its parent on held-out utility"
                            + (f" (paired difference {format_ci(diff)}: the interval does not lie above 0)" if diff and diff.get("value") is not None else ""))
        diff = self.preference_accuracy.get("difference") or {}
        high = diff.get("high")
        if high is not None and high < 0:
            blockers.append(f"it ranks the user's held-out pairs worse than its parent ({format_ci(diff, True)} paired difference)")
        tuned, parent = self.prediction_spread.get("tuned") or {}, self.prediction_spread.get("parent") or {}
        if tuned.get("top_share", 0) >= ONE_ANSWER_SHARE and parent.get("top_share", 1) < ONE_ANSWER_SHARE:
            blockers.append(f"it gives one answer almost everywhere ('{tuned['top']}' on {100 * tuned['top_share']:.0f}% of its views, "
                            f"the parent's most common on {100 * parent['top_share']:.0f}%)")
        elif "down_share" in tuned and "down_share" in parent:
            one_way = max(tuned["down_share"], 1 - tuned["down_share"])
            parent_one_way = max(parent["down_share"], 1 - parent["down_share"])
            if one_way >= ONE_ANSWER_SHARE and parent_one_way < ONE_ANSWER_SHARE:
                side = "Down" if tuned["down_share"] >= 0.5 else "Up"
                blockers.append(f"it calls {side} almost everywhere ({100 * one_way:.0f}% of its views, the parent "
                                f"{100 * (parent['down_share'] if side == 'Down' else 1 - parent['down_share']):.0f}%)")
        return blockers

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user, "profile": self.profile, "period": [str(self.period[0]), str(self.period[1])], "models": self.models,
            "preference_accuracy": self.preference_accuracy, "reward_win_rate": self.reward_win_rate, "utility": self.utility,
            "forecast_metrics": self.forecast_metrics, "prediction_spread": self.prediction_spread, "backtest": self.backtest,
            "notes": self.notes,
        }

    def markdown(self) -> str:
        def ci(stat: dict[str, Any] | None, pct: bool = False, digits: int = 5) -> str:
            return format_ci(stat, pct, digits)

        lines = [
            f"# Tuned vs parent for {self.user} ({self.profile})", "",
            f"Held-out weeks {self.period[0]} .. {self.period[1]}; model versions: "
            + ", ".join(f"{k} = {v}" for k, v in self.models.items()), "",
        ]
        if "tuned" not in self.models:  # no tuned adapter came out of the run: only the notes say why
            return "\n".join(lines + [f"- {n}" for n in self.notes]) + "\n"
        lines += [
            "| measure | tuned | parent |", "|---|---|---|",
            f"| preference accuracy (held-out pairs) | {ci(self.preference_accuracy.get('tuned'), True)} | {ci(self.preference_accuracy.get('parent'), True)} |",
            f"| mean realised utility per view | {ci(self.utility.get('tuned'))} | {ci(self.utility.get('parent'))} |",
        ]
        spread = {k: self.prediction_spread.get(k) or {} for k in ("tuned", "parent")}
        if spread["tuned"]:
            lines.append("| most common prediction (share of parsed views) | "
                         + " | ".join(f"{s.get('top')} ({100 * s.get('top_share', 0):.0f}%)" if s else "—" for s in spread.values()) + " |")
            lines.append("| share of Down calls | " + " | ".join(f"{100 * s.get('down_share', 0):.1f}%" if s else "—" for s in spread.values()) + " |")
        for key in ("binary_accuracy", "mcc", "parse_rate"):
            t = self.forecast_metrics.get("tuned", {}).get(key)
            p = self.forecast_metrics.get("parent", {}).get(key)
            lines.append(f"| {key} | {ci(t, key != 'mcc', 3)} | {ci(p, key != 'mcc', 3)} |")
        for key in ("total_return", "sharpe", "max_drawdown"):
            t = self.backtest.get("tuned", {}).get(key)
            p = self.backtest.get("parent", {}).get(key)
            lines.append(f"| backtest {key} | {'—' if t is None else f'{t:.4f}'} | {'—' if p is None else f'{p:.4f}'} |")
        lines += [
            "", f"Utility difference tuned - parent (paired): {ci(self.utility.get('difference'))}",
            f"Preference accuracy difference tuned - parent (paired): {ci(self.preference_accuracy.get('difference'), True)}",
            f"Reward-model win rate of tuned over parent: {ci(self.reward_win_rate, True)}", "",
        ]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def realised_utilities(
    store: MarketStore, profile: RiskProfile, windows: list[ForecastWindow], views: list[Forecast]
) -> tuple[list[float], list[Scored]]:
    utility = user_utility(profile)
    utilities, scored = [], []
    for window, row in zip(windows, views, strict=True):
        try:
            week = outcome_week(store, window.ticker, window.decision_date)
        except DataUnavailableError:
            continue
        view = parse_view(row.raw_text)
        utilities.append(view_utility(view.expected_return_pct, week, utility).utility)
        scored.append(Scored(window.ticker, window.decision_date, week.realised_pct, view.direction, view.magnitude))
    return utilities, scored


def prediction_spread(views: list[Forecast]) -> dict[str, Any]:
    """The most common prediction line and its share of the parsed views, and the share of Down calls."""
    from collections import Counter

    parsed = [v for v in (parse_view(row.raw_text) for row in views) if v.is_signal]
    if not parsed:
        return {"parsed": 0}
    counts = Counter(label_text(v.direction, v.magnitude) for v in parsed)  # type: ignore[arg-type]
    top, n = counts.most_common(1)[0]
    return {"parsed": len(parsed), "top": top, "top_share": n / len(parsed), "distinct": len(counts),
            "down_share": sum(v.direction is Direction.DOWN for v in parsed) / len(parsed)}


def compare(
    session: Session, store: MarketStore, profile: RiskProfile, windows: list[ForecastWindow],
    tuned_views: list[Forecast], parent_views: list[Forecast], eval_pairs: list[dict[str, Any]],
    tuned: ModelHandle, parent: ModelHandle, reward: RewardScorer | None, report: ComparisonReport, progress: bool = False,
) -> ComparisonReport:
    """Fill ``report`` with the tuned adapter against its parent on the same held-out windows and pairs."""
    def bar(name: str) -> str | None:
        return name if progress else None

    if eval_pairs:
        tuned_wins = preference_wins(tuned, eval_pairs, bar("preference accuracy, tuned"))
        parent_wins = preference_wins(parent, eval_pairs, bar("preference accuracy, parent"))
        report.preference_accuracy = {"tuned": mean_ci(tuned_wins), "parent": mean_ci(parent_wins),
                                      "difference": mean_ci([t - p for t, p in zip(tuned_wins, parent_wins, strict=True)])}
    else:
        report.notes.append("no held-out preference pairs: preference accuracy not measured")
    tuned_u, tuned_scored = realised_utilities(store, profile, windows, tuned_views)
    parent_u, parent_scored = realised_utilities(store, profile, windows, parent_views)
    report.utility = {
        "tuned": mean_ci(tuned_u), "parent": mean_ci(parent_u),
        "difference": mean_ci([a - b for a, b in zip(tuned_u, parent_u, strict=True)]),
    }
    report.forecast_metrics = {"tuned": summarize(tuned_scored), "parent": summarize(parent_scored)}
    report.prediction_spread = {"tuned": prediction_spread(tuned_views), "parent": prediction_spread(parent_views)}
    if reward is not None:
        rows = [{"prompt": t_row.prompt_messages or t_row.prompt_text, "chosen": [{"role": "assistant", "content": t_row.raw_text}],
                 "rejected": [{"role": "assistant", "content": p_row.raw_text}]} for t_row, p_row in zip(tuned_views, parent_views, strict=True)]
        report.reward_win_rate = mean_ci([1.0 if ts > ps else 0.5 if ts == ps else 0.0 for ts, ps in reward.score_pairs(rows, bar("reward model, tuned vs parent"))])
    return report
