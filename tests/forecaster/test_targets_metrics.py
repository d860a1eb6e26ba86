"""SFT targets from facts and labels; sentiment scorer; metrics and bootstrap intervals."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from advisor.data.labels import Direction, MagnitudeBin
from advisor.data.store import SqlMarketStore
from advisor.data.windows import build_window, weekly_label
from advisor.forecaster.metrics import Scored, summarize
from advisor.forecaster.sentiment import SentimentScorer, find_tfns, load_scorer, train_naive_bayes
from advisor.forecaster.targets import sft_target
from advisor.forecaster.views import ParseStatus, parse_view


def test_targets_parse_strictly_and_carry_the_realised_label(market) -> None:
    scorer = SentimentScorer(None)
    with market() as session:
        store = SqlMarketStore(session)
        for ticker in ("AAA", "BBB", "CCC"):
            window = build_window(store, ticker, date(2014, 5, 9))
            label = weekly_label(store, ticker, window.decision_date)
            view = parse_view(sft_target(window, label, scorer))
            assert view.status is ParseStatus.OK
            assert (view.direction, view.magnitude) == (label.direction, label.magnitude)
            assert 1 <= len(view.positives) <= 2 and 1 <= len(view.concerns) <= 2
            facts = {f"Week ending {w.end}: the stock {'rose' if w.return_pct >= 0 else 'fell'} {abs(w.return_pct):.2f}%." for w in window.weeks}
            cited = [p for p in view.positives + view.concerns if p.startswith("Week ending")]
            assert all(p in facts for p in cited), "price facts are the window's weeks, as the prompt prints them"


def test_lexicon_and_naive_bayes_scorers() -> None:
    lexicon = SentimentScorer(None)
    assert lexicon.score("Company beats estimates and raises guidance") == 1
    assert lexicon.score("Regulators open an investigation; shares drop") == -1
    assert lexicon.score("The company held its annual meeting") == 0
    model = train_naive_bayes(["great gains rally", "terrible losses crash", "meeting today"] * 5, [1, 0, 2] * 5)
    scorer = SentimentScorer(model)
    assert scorer.score("a great rally") == 1 and scorer.score("losses crash hard") == -1


def test_tfns_scorer_is_better_than_chance(real_bundle: Path) -> None:
    from advisor.forecaster.sentiment import evaluate_on_valid

    tfns = find_tfns(real_bundle)
    if tfns is None:
        pytest.skip("TFNS not next to the bundle")
    result = evaluate_on_valid(tfns)
    assert result["weighted_f1"] > 0.6 and result["n"] == 2388
    assert load_scorer(tfns).kind.startswith("naive-bayes")


def _item(actual: float, direction: Direction | None, bin_: MagnitudeBin | None) -> Scored:
    return Scored("AAA", date(2014, 1, 3), actual, direction, bin_)


def test_metric_values_on_a_known_case() -> None:
    up, down = Direction.UP, Direction.DOWN
    items = [
        _item(1.5, up, MagnitudeBin(1, 2)),    # right direction, right bin
        _item(-0.5, up, MagnitudeBin(0, 1)),   # wrong direction
        _item(-2.5, down, MagnitudeBin(1, 2)), # right direction, wrong bin
        _item(0.7, None, None),                # unparsed
    ]
    stats = summarize(items, samples=200)
    assert stats["n"]["value"] == 4
    assert stats["parse_rate"]["value"] == pytest.approx(0.75)
    assert stats["binary_accuracy"]["value"] == pytest.approx(2 / 3)
    assert stats["binary_accuracy_all"]["value"] == pytest.approx(0.5)
    assert stats["bin_accuracy"]["value"] == pytest.approx(1 / 3)
    # squared errors: 0, (0.5 - -0.5)^2 = 1, (-1.5 - -2.5)^2 = 1
    assert stats["mse"]["value"] == pytest.approx(2 / 3)
    # tp=1 (up,up), fp=1 (up,down), tn=1 (down,down), fn=0 -> mcc = (1*1 - 1*0)/sqrt(2*1*2*1) = 0.5
    assert stats["mcc"]["value"] == pytest.approx(0.5)


def test_bootstrap_intervals_bracket_the_estimate_and_shrink_with_n() -> None:
    rng = np.random.default_rng(1)
    def sample(n: int) -> list[Scored]:
        actual = rng.normal(0, 2, n)
        return [_item(a, Direction.UP if a + rng.normal(0, 2) >= 0 else Direction.DOWN, MagnitudeBin(0, 1)) for a in actual]
    small, large = summarize(sample(40)), summarize(sample(800))
    for stats in (small, large):
        acc = stats["binary_accuracy"]
        assert acc["low"] <= acc["value"] <= acc["high"]
    width = lambda s: s["binary_accuracy"]["high"] - s["binary_accuracy"]["low"]  # noqa: E731
    assert width(large) < width(small) / 2


def test_no_parsed_predictions_gives_empty_metrics_not_errors() -> None:
    stats = summarize([_item(1.0, None, None), _item(-1.0, None, None)])
    assert stats["parse_rate"]["value"] == 0.0
    assert stats["binary_accuracy"]["value"] is None and stats["mcc"]["value"] is None
    assert stats["binary_accuracy_all"]["value"] == 0.0


def test_the_analysis_reads_as_english() -> None:
    from advisor.data.windows import Horizon
    from advisor.forecaster.targets import Factor, describe

    upbeat, worried, fall = Factor("post", 'Upbeat post: "x"'), Factor("post", 'Worried post: "y"'), Factor("move", "fell")
    assert describe([upbeat], Horizon.WEEK, rising=True) == "an upbeat post"
    assert describe([fall, worried], Horizon.WEEK, rising=False) == "a weekly fall and a worried post"
    assert describe([upbeat, upbeat], Horizon.WEEK, rising=True) == "two upbeat posts"
