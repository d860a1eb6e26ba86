"""A real non-LLM baseline on exactly the forecaster's windows: logistic regression on numeric features.

Whatever a language model claims to read in a window, a plain classifier on the same window's numbers
should be beaten before the model is trusted. Features (all from the window, so point-in-time by
construction — the window holds nothing after its decision close):

  * each past week's move in percent (oldest first) and the window's total move;
  * the volatility of the weekly moves (their standard deviation) and the largest absolute move;
  * post volume per week (every post seen that mentions the company, log1p) and posts kept;
  * mean sentiment of the week's kept posts (the sentiment scorer's -1/0/+1), 0 without posts.

Direction: ``LogisticRegression`` (scikit-learn, standardised features) trained on up/down of the
target week. Magnitude: the bin of the training period's median absolute weekly move (a constant, as
the honest default: weekly magnitudes are barely predictable from these features). It is trained on
the training period only, never on evaluated weeks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advisor.data.labels import Direction, MagnitudeBin, bin_for_return
from advisor.data.windows import ForecastWindow, WeeklyLabel
from advisor.errors import AdvisorError
from advisor.forecaster.sentiment import SentimentScorer

MIN_TRAINING_WINDOWS = 30  # twice the 15 features of 3-week windows: fewer cannot fit a logistic regression sensibly


def window_features(window: ForecastWindow, scorer: SentimentScorer) -> list[float]:
    """The window's numeric features, in a fixed order (see module docstring)."""
    moves = [week.return_pct for week in window.weeks]
    first, last = window.weeks[0], window.weeks[-1]
    trend = (last.end_price / first.start_price - 1.0) * 100.0
    features = [*moves, trend, float(np.std(moves)), max(abs(m) for m in moves)]
    for week in window.weeks:
        tones = [scorer.score(t.text) for t in week.texts]
        features += [math.log1p(week.text_stats.seen), float(len(week.texts)), float(np.mean(tones)) if tones else 0.0]
    return features


@dataclass
class LogisticBaseline:
    """A fitted direction classifier plus the constant magnitude bin."""

    pipeline: Any
    magnitude: MagnitudeBin
    training_windows: int
    training_share_up: float

    def predict(self, windows: Sequence[ForecastWindow], scorer: SentimentScorer) -> list[tuple[Direction, MagnitudeBin]]:
        if not windows:
            return []
        x = np.array([window_features(w, scorer) for w in windows])
        up = self.pipeline.predict(x)
        return [(Direction.UP if u else Direction.DOWN, self.magnitude) for u in up]


def train_logistic_baseline(pairs: Sequence[tuple[ForecastWindow, WeeklyLabel]], scorer: SentimentScorer, seed: int = 0) -> LogisticBaseline:
    """Fit on training-period (window, label) pairs; refuses fewer than ``MIN_TRAINING_WINDOWS``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(pairs) < MIN_TRAINING_WINDOWS:
        raise AdvisorError(
            f"the logistic baseline needs at least {MIN_TRAINING_WINDOWS} training windows, got {len(pairs)}: widen the training period"
        )
    lengths = {len(w.weeks) for w, _ in pairs}
    if len(lengths) != 1:
        raise AdvisorError(f"training windows have different numbers of periods ({sorted(lengths)}); the baseline needs one shape")
    x = np.array([window_features(w, scorer) for w, _ in pairs])
    y = np.array([label.return_pct >= 0 for _, label in pairs])
    if y.all() or not y.any():
        raise AdvisorError("every training week moved the same way; the baseline cannot learn a direction")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed))
    pipeline.fit(x, y)
    median_abs = float(np.median([abs(label.return_pct) for _, label in pairs]))
    return LogisticBaseline(pipeline, bin_for_return(median_abs)[1], len(pairs), float(y.mean()))
