"""The view parser: strict grammar, tolerant near-misses, and never a guess (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.data.labels import ALL_BINS, Direction, MagnitudeBin, label_text
from advisor.forecaster.views import ParseStatus, parse_view, render_view

item_text = st.text(alphabet=st.characters(whitelist_categories=("L", "N", "Zs"), whitelist_characters=".,'$%()"), min_size=1, max_size=60).filter(lambda s: s.strip())
items = st.lists(item_text, min_size=1, max_size=5)
directions = st.sampled_from(list(Direction))
bins = st.sampled_from(ALL_BINS)


@settings(max_examples=200)
@given(directions, bins, items, items, item_text)
def test_rendered_views_parse_strictly_and_round_trip(direction, magnitude, positives, concerns, analysis) -> None:
    view = parse_view(render_view(direction, magnitude, positives, concerns, analysis))
    assert view.status is ParseStatus.OK
    assert (view.direction, view.magnitude) == (direction, magnitude)
    assert view.positives == tuple(" ".join(p.split()) for p in positives)
    assert view.concerns == tuple(" ".join(c.split()) for c in concerns)
    assert view.analysis == " ".join(analysis.split())


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes_and_unparsed_is_never_a_signal(text: str) -> None:
    view = parse_view(text)
    assert view.status in set(ParseStatus)
    if view.status is ParseStatus.UNPARSED:
        assert not view.is_signal and view.direction is None and view.error
    else:
        assert view.is_signal


NEAR_MISSES = [
    lambda t: t.replace("Prediction: ", "**Prediction:** "),
    lambda t: t.replace("[Positive Developments]", "Positive Developments:").replace("[Potential Concerns]", "## Potential Concerns"),
    lambda t: t.replace("Up by", "up by").replace("Down by", "down by"),
    lambda t: t.replace("Up by", "rise of").replace("Down by", "decline of"),
    lambda t: t.replace("-", " to ").replace("%", " percent"),
    lambda t: t + "\n\nI hope this helps!",
    lambda t: "Sure, here is my view.\n" + t,
    lambda t: t.replace("1. ", "- "),
]


@settings(max_examples=150)
@given(directions, bins, items, items, item_text, st.sampled_from(range(len(NEAR_MISSES))))
def test_near_misses_fall_back_to_the_same_prediction(direction, magnitude, positives, concerns, analysis, which) -> None:
    text = NEAR_MISSES[which](render_view(direction, magnitude, positives, concerns, analysis))
    view = parse_view(text)
    assert view.status in (ParseStatus.OK, ParseStatus.FALLBACK)
    assert (view.direction, view.magnitude) == (direction, magnitude)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Prediction: Up by 2.5%", "Up by 2-3%"),
        ("prediction - down 1 to 2 percent", "Down by 1-2%"),
        ("Prediction: the stock will rise", None),
        ("Prediction: Up by 2-4%", None),
        ("Prediction: Up by 1-2%\nPrediction: Down by 1-2%", None),
        ("Prediction: Up by 1-2%\nPrediction: Up by 1-2%", "Up by 1-2%"),
        ("Prediction: Down by more than 5%", "Down by more than 5%"),
        ("Prediction: Up by more than 7%", None),
        ("The stock went up by 3% last week.", None),
        ("", None),
        ("   \n", None),
    ],
)
def test_examples(text: str, expected: str | None) -> None:
    view = parse_view(text)
    assert view.prediction_text == expected
    if expected is None:
        assert view.status is ParseStatus.UNPARSED and view.error


def test_expected_return_uses_fingpt_midpoints() -> None:
    view = parse_view(render_view(Direction.DOWN, MagnitudeBin(5, None), ["a"], ["b"], "c"))
    assert view.expected_return_pct == -5.5
    assert label_text(Direction.UP, MagnitudeBin(0, 1)) == "Up by 0-1%"
