"""Forecast metrics with bootstrap 95% intervals.

For a list of (prediction, realised move) pairs over the same windows:
  * ``parse_rate``: share of windows with a usable prediction;
  * ``binary_accuracy``: direction right, among parsed predictions;
  * ``binary_accuracy_all``: direction right over *all* windows (an unparsed view counts as wrong —
    the honest number for a product that must act every week);
  * ``mcc``: Matthews correlation of predicted vs realised direction (up = positive), among parsed;
  * ``bin_accuracy``: direction and magnitude bin both right, among parsed;
  * ``mse``: mean squared error of the signed magnitude, FinGPT's convention (sign × (lower bound +
    0.5), "more than 5%" = 5.5) on both sides, among parsed.
Intervals: percentile bootstrap over windows (resampled with replacement, fixed seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from advisor.data.labels import Direction, MagnitudeBin, bin_for_return, signed_value

METRICS = ("parse_rate", "binary_accuracy", "binary_accuracy_all", "mcc", "bin_accuracy", "mse")
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class Scored:
    """One window, one predictor."""

    ticker: str
    decision_date: date
    actual_pct: float
    direction: Direction | None
    magnitude: MagnitudeBin | None

    @property
    def parsed(self) -> bool:
        return self.direction is not None and self.magnitude is not None


def _arrays(items: Sequence[Scored]) -> dict[str, np.ndarray]:
    parsed = np.array([i.parsed for i in items], dtype=bool)
    actual_up = np.array([i.actual_pct >= 0 for i in items], dtype=bool)
    pred_up = np.array([i.direction is Direction.UP for i in items], dtype=bool)
    same_bin = np.zeros(len(items), dtype=bool)
    sq_err = np.zeros(len(items))
    for k, item in enumerate(items):
        if item.parsed:
            actual_dir, actual_bin = bin_for_return(item.actual_pct)
            same_bin[k] = item.direction is actual_dir and item.magnitude == actual_bin
            sq_err[k] = (signed_value(item.direction, item.magnitude) - signed_value(actual_dir, actual_bin)) ** 2  # type: ignore[arg-type]
    return {"parsed": parsed, "actual_up": actual_up, "pred_up": pred_up, "same_bin": same_bin, "sq_err": sq_err}


def _metrics_from(a: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics for many resamples at once: ``idx`` has shape (samples, n)."""
    parsed = a["parsed"][idx]
    n = idx.shape[1]
    n_parsed = parsed.sum(axis=1)
    correct = (a["pred_up"][idx] == a["actual_up"][idx]) & parsed
    pred_up = a["pred_up"][idx] & parsed
    pred_down = ~a["pred_up"][idx] & parsed
    actual_up = a["actual_up"][idx]
    tp = (pred_up & actual_up).sum(axis=1).astype(float)
    tn = (pred_down & ~actual_up).sum(axis=1).astype(float)
    fp = (pred_up & ~actual_up).sum(axis=1).astype(float)
    fn = (pred_down & actual_up).sum(axis=1).astype(float)
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(n_parsed > 0, n_parsed, np.nan)
        return {
            "parse_rate": n_parsed / n,
            "binary_accuracy": correct.sum(axis=1) / safe,
            "binary_accuracy_all": correct.sum(axis=1) / n,
            "mcc": np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0) * np.where(n_parsed > 0, 1, np.nan),
            "bin_accuracy": (a["same_bin"][idx] & parsed).sum(axis=1) / safe,
            "mse": (a["sq_err"][idx] * parsed).sum(axis=1) / safe,
        }


def summarize(items: Sequence[Scored], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, dict[str, float | None]]:
    """``{metric: {"value", "low", "high"}}`` with percentile-bootstrap 95% intervals."""
    if not items:
        return {name: {"value": None, "low": None, "high": None} for name in ("n", *METRICS)}
    arrays = _arrays(items)
    n = len(items)
    point = _metrics_from(arrays, np.arange(n)[None, :])
    rng = np.random.default_rng(seed)
    boot = _metrics_from(arrays, rng.integers(0, n, size=(samples, n)))
    result: dict[str, dict[str, float | None]] = {"n": {"value": float(n), "low": None, "high": None}}
    for name in METRICS:
        value = float(point[name][0])
        finite = boot[name][np.isfinite(boot[name])]
        result[name] = {
            "value": None if np.isnan(value) else value,
            "low": float(np.percentile(finite, 2.5)) if finite.size else None,
            "high": float(np.percentile(finite, 97.5)) if finite.size else None,
        }
    return result
