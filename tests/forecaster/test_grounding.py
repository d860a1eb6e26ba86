"""Grounded decoding: whatever the model chooses, a view lists only its window's facts and agrees with itself.

The decoding policy here is adversarial and random (no model): at free steps it tries to list as many
items as it can ("1.", "2.", ... "9.") and then writes a prediction; at constrained steps it picks any
allowed token at random. Every view must still parse, pass the checker, list nothing twice, and have
an analysis in its prediction's direction. The real model under the same constraint is in
``test_parity_real_model.py``.
"""

from __future__ import annotations

import random
from datetime import date

import pytest

from advisor.config import DEFAULT_BASE_MODEL
from advisor.data.labels import Direction
from advisor.data.store import PreloadedMarketStore
from advisor.forecaster.checker import check_view
from advisor.forecaster.grounding import GroundedState, codec_for, grounding_for
from advisor.forecaster.sentiment import find_tfns, load_scorer
from advisor.forecaster.service import WindowConfig
from advisor.forecaster.sft import labelled_windows
from advisor.forecaster.targets import factors, sft_target
from advisor.forecaster.views import CONCERNS_HEADER, POSITIVES_HEADER, PREDICTION_HEADER, ParseStatus, parse_view


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir / DEFAULT_BASE_MODEL)


@pytest.fixture(scope="module")
def windows(real_db, real_bundle):  # type: ignore[no-untyped-def]
    with real_db() as session:
        store = PreloadedMarketStore(session)
        pairs = labelled_windows(store, store.tickers(), date(2015, 4, 1), date(2015, 9, 30), WindowConfig(), 3, 60)
    return pairs, load_scorer(find_tfns(real_bundle))


def _decode(state: GroundedState, rng: random.Random, prediction: str, max_tokens: int = 400) -> str:
    """Drive ``state`` with the adversarial policy; returns the text decoded."""
    codec = state.codec
    pending: list[int] = []
    for _ in range(max_tokens):
        allowed = state.allowed()
        if allowed is not None:
            pending = []
            token = rng.choice(allowed)
        else:
            if not pending:
                pending = list(codec.encode(_next_piece(state.text, prediction)))
            token = pending.pop(0)
        state.advance(token)
        if state.finished:
            return state.text
    raise AssertionError(f"no end of answer within {max_tokens} tokens:\n{state.text}")


def _next_piece(text: str, prediction: str) -> str:
    """What the policy writes next at a free step: a header, the next item number, or the prediction."""
    if not text:
        return f"{POSITIVES_HEADER}\n"
    marks = [text.rfind(h) for h in (POSITIVES_HEADER, CONCERNS_HEADER, PREDICTION_HEADER)]
    section = max(range(3), key=lambda i: marks[i])
    tail = text[marks[section]:]
    if section == 2:
        if tail.endswith("Prediction:"):
            return f" {prediction}\nAnalysis:"
        return f"{'' if text.endswith(chr(10)) else chr(10)}Prediction: {prediction}\nAnalysis:"
    if not text.endswith("\n"):
        return "\n"
    items = tail.count("\n") - 1
    if items >= 9:
        return f"{CONCERNS_HEADER if section == 0 else PREDICTION_HEADER}\n"
    return f"{items + 1}."


@pytest.mark.parametrize("prediction", ["Up by 1-2%", "Down by more than 5%"])
def test_any_choice_under_the_constraint_gives_a_view_that_passes_the_checker(tokenizer, windows, prediction) -> None:  # type: ignore[no-untyped-def]
    pairs, scorer = windows
    codec = codec_for(tokenizer)
    rng = random.Random(7)
    listed = 0
    for window, _label in pairs:
        grounding = grounding_for(window, scorer)
        text = _decode(GroundedState(grounding, codec), rng, prediction)
        view = parse_view(text)
        assert view.status is ParseStatus.OK, text
        check = check_view(view, window)
        assert check.passed, f"{check.summary()}\n{text}"
        assert not set(view.positives) & set(view.concerns)
        assert len(view.positives) <= max(1, len(grounding.positives)) and len(view.concerns) <= max(1, len(grounding.concerns))
        expected = "Expect a rise" if view.direction is Direction.UP else "Expect a fall"
        assert view.analysis.startswith(expected), text
        listed += len(view.positives) + len(view.concerns)
    assert listed >= 2 * len(pairs)  # the policy did list facts, not only "Nothing clearly ..."


def test_the_constraint_follows_the_tokens_the_model_was_trained_on(tokenizer, windows) -> None:  # type: ignore[no-untyped-def]
    """Every item and analysis of a training target, tokenized alone, is a run of the target's own tokens."""
    pairs, scorer = windows
    codec = codec_for(tokenizer)
    for window, label in pairs[:30]:
        target = sft_target(window, label, scorer)
        ids = list(codec.encode(target))
        view = parse_view(target)
        for piece in [f" {item}\n" for item in (*view.positives, *view.concerns)] + [f" {view.analysis}"]:
            run = list(codec.encode(piece))
            assert any(ids[i : i + len(run)] == run for i in range(len(ids) - len(run) + 1)), piece


def test_targets_list_the_first_facts_the_constraint_allows(windows) -> None:  # type: ignore[no-untyped-def]
    pairs, scorer = windows
    for window, _label in pairs[:30]:
        grounding = grounding_for(window, scorer)
        positives, concerns = factors(window, scorer)
        assert list(grounding.positives[: len(positives)]) == positives and list(grounding.concerns[: len(concerns)]) == concerns


def test_only_posts_the_prompt_shows_may_be_quoted(windows) -> None:  # type: ignore[no-untyped-def]
    pairs, scorer = windows
    window = next(w for w, _ in pairs if sum(f.kind == "post" for f in grounding_for(w, scorer).positives + grounding_for(w, scorer).concerns))
    everything = grounding_for(window, scorer)
    nothing_shown = grounding_for(window, scorer, shown_ids=())
    assert any(f.kind == "post" for f in everything.positives + everything.concerns)
    assert all(f.kind == "move" for f in nothing_shown.positives + nothing_shown.concerns)
    assert [f for f in everything.positives if f.kind == "move"] == list(nothing_shown.positives)
