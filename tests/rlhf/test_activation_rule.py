"""The activation rule refuses adapters that beat the parent on utility in a degenerate way, and the
loop's validation weeks are the last training weeks, never the held-out ones."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from types import SimpleNamespace

from rlhf.datasets import Example
from rlhf.evaluate import ComparisonReport, prediction_spread
from rlhf.loop import MAX_VALIDATION_PAIRS, MIN_VALIDATION_PAIRS, LoopOptions, validation_split


def report(utility_diff: float, pref_diff: tuple[float, float, float], tuned_views: list[str], parent_views: list[str]) -> ComparisonReport:
    r = ComparisonReport("ann", "conservative v1", (date(2015, 4, 1), date(2015, 9, 30)), {"tuned": 2, "parent": 1})
    r.utility = {"difference": {"value": utility_diff, "low": utility_diff - 1e-4, "high": utility_diff + 1e-4, "n": 10}}
    value, low, high = pref_diff
    r.preference_accuracy = {"difference": {"value": value, "low": low, "high": high, "n": 10}}
    def view(p):
        return SimpleNamespace(raw_text=f"Positive developments:\n1. x\n\nPotential concerns:\n1. y\n\nPrediction: {p}\nAnalysis: z")

    r.prediction_spread = {"tuned": prediction_spread([view(p) for p in tuned_views]), "parent": prediction_spread([view(p) for p in parent_views])}
    return r


VARIED = ["Up by 0-1%", "Down by 1-2%", "Up by 1-2%", "Down by 0-1%"] * 5


def test_a_varied_adapter_that_beats_its_parent_is_activated() -> None:
    assert report(0.001, (0.02, -0.05, 0.09), VARIED, VARIED[::-1]).activation_blockers() == []


def test_one_answer_everywhere_is_refused_even_when_it_beats_the_parent() -> None:
    blockers = report(0.0028, (0.0, -0.05, 0.05), ["Down by 1-2%"] * 20, VARIED).activation_blockers()
    assert len(blockers) == 1 and "one answer almost everywhere ('Down by 1-2%' on 100%" in blockers[0]


def test_ranking_the_users_pairs_worse_is_refused() -> None:
    blockers = report(0.001, (-0.11, -0.18, -0.04), VARIED, VARIED).activation_blockers()
    assert len(blockers) == 1 and "ranks the user's held-out pairs worse" in blockers[0]


def test_no_utility_gain_is_refused() -> None:
    blockers = report(-0.001, (0.0, -0.05, 0.05), VARIED, VARIED).activation_blockers()
    assert len(blockers) == 1 and blockers[0].startswith("it did not beat its parent on held-out utility")


def test_a_gain_whose_interval_includes_zero_is_refused() -> None:
    """+4.5 bp [-14.6, +24.2] (the aggressive user at real sizes) is no evidence of a gain."""
    r = report(0.00045, (0.24, 0.17, 0.32), VARIED, VARIED[::-1])
    r.utility["difference"] |= {"low": -0.00146, "high": 0.00242}
    blockers = r.activation_blockers()
    assert len(blockers) == 1 and "the interval does not lie above 0" in blockers[0]


def test_one_direction_everywhere_in_varied_sizes_is_refused() -> None:
    ups = ["Up by 1-2%", "Up by 2-3%", "Up by 3-4%", "Up by 0-1%"] * 5
    blockers = report(0.001, (0.2, 0.1, 0.3), ups, VARIED).activation_blockers()
    assert len(blockers) == 1 and "it calls Up almost everywhere (100% of its views, the parent 50%)" in blockers[0]
    assert report(0.001, (0.2, 0.1, 0.3), ups, ups[::-1]).activation_blockers() == []  # the parent did the same: not the tuning's doing


def test_prediction_spread_counts_bins_and_down_calls() -> None:
    views = [SimpleNamespace(raw_text=f"Prediction: {p}") for p in ["Up by 1-2%", "Up by 1-2%", "Down by 2-3%", "garbage"]]
    spread = prediction_spread(views)
    assert spread["top"] == "Up by 1-2%" and spread["distinct"] == 2
    assert spread["parsed"] in (3, 4) and 0 < spread["down_share"] < 0.5


def _examples(weeks: int, per_week: int) -> list[Example]:
    start = date(2014, 6, 6)
    return [Example(start + timedelta(weeks=w), {"prompt": f"w{w}", "i": i}, "outcome") for w in range(weeks) for i in range(per_week)]


def test_validation_weeks_are_the_last_training_weeks_and_disjoint() -> None:
    options = LoopOptions(train_period=(date(2014, 6, 1), date(2015, 3, 27)), eval_period=(date(2015, 4, 1), date(2015, 9, 30)))
    split = validation_split(_examples(40, 3), options)
    fit_weeks, val_weeks = {r["prompt"] for r in split.train}, {r["prompt"] for r in split.eval}
    assert not fit_weeks & val_weeks
    assert max(int(w[1:]) for w in fit_weeks) < min(int(w[1:]) for w in val_weeks)
    assert len(split.eval) == 24 and len(split.train) == 96  # the last 8 of 40 weeks
    many = validation_split(_examples(40, 30), options)
    assert len(many.eval) == MAX_VALIDATION_PAIRS and len(many.train) == 32 * 30
    few = validation_split(_examples(40, 2), options)  # 16 validation pairs cannot choose a step: fit on all
    assert few.eval == [] and len(few.train) == 80 and MIN_VALIDATION_PAIRS > 16
    off = validation_split(_examples(40, 3), dataclasses.replace(options, select_step=False))
    assert off.eval == [] and len(off.train) == 120
