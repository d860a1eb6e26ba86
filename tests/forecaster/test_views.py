"""The view parser: strict grammar, tolerant near-misses, and never a guess (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advisor.data.labels import ALL_BINS, Direction, MagnitudeBin, label_text
from advisor.forecaster.views import ParseStatus, answer_stop_reason, parse_view, render_view

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


# --------------------------------------------------------------------------------------------------
# Early stopping: the answer format says where an answer ends; a looping model is cut short.
# --------------------------------------------------------------------------------------------------


@settings(max_examples=150)
@given(directions, bins, items, items, item_text, st.text(max_size=80))
def test_generation_stops_right_after_a_complete_answer_and_keeps_its_parse(direction, magnitude, positives, concerns, analysis, junk) -> None:
    answer = render_view(direction, magnitude, positives, concerns, analysis)
    lines = (answer + "\n" + junk).split("\n")
    # Replay generation line by line: the check sees the text up to each newline.
    for n in range(1, len(lines)):
        so_far = "\n".join(lines[:n]) + "\n"
        reason = answer_stop_reason(so_far)
        if reason is not None:
            break
    else:
        pytest.fail("a complete answer never stopped generation")
    assert reason == "answer_complete" and so_far == answer + "\n"
    assert parse_view(so_far) == parse_view(answer) and parse_view(so_far).status is ParseStatus.OK


def test_a_partial_line_never_stops_generation() -> None:
    answer = render_view(Direction.UP, MagnitudeBin(1, 2), ["Demand."], ["Costs."], "Balanced.")
    assert answer_stop_reason(answer) is None, "the analysis line may still be growing"
    assert answer_stop_reason(answer.split("Analysis")[0]) is None


def test_an_analysis_before_any_prediction_does_not_stop() -> None:
    text = "[Prediction & Analysis]\nAnalysis: demand is strong.\n"
    assert answer_stop_reason(text) is None
    assert answer_stop_reason(text + "Prediction: Up by 1-2%\nAnalysis: still strong.\n") == "answer_complete"


def test_a_model_repeating_one_line_is_stopped() -> None:
    loop = "Apple is a company.\n" * 2
    assert answer_stop_reason(loop) is None
    assert answer_stop_reason(loop + "Apple is a company.\n") == "repetition"
    assert answer_stop_reason("\n\n\n\n") is None, "blank lines are not repetition"


@pytest.mark.parametrize("line", [
    "Prediction: Up by 0-1%, 1-2%, 2-3%, 3-4%, 4-5% or more than 5%",
    "Prediction: Down by 1-2% or 2-3%",
    "Prediction: up 1.5%, maybe 3%",
])
def test_a_prediction_line_naming_several_moves_is_not_a_choice(line: str) -> None:
    text = f"[Positive Developments]\n1. ...\n[Potential Concerns]\n1. ...\n[Prediction & Analysis]\n{line}\nAnalysis: ..."
    view = parse_view(text)
    assert view.status is ParseStatus.UNPARSED and not view.is_signal
    assert "several moves" in (view.error or "")
