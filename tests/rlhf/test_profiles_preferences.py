"""Profiles, feedback, outcome-grounded utility, the simulated user, datasets and the registry."""

from __future__ import annotations

import random
from datetime import date

import pytest
from sqlalchemy import select

from advisor.errors import InputValidationError
from advisor.portfolio import RiskParams
from db.engine import session_scope
from db.models import ModelVersion, Preference, RiskProfile, User
from rlhf.datasets import pair_examples, rating_examples, time_split
from rlhf.preferences import FeedbackError, record_choice, record_rating, simulated_choice, view_utility
from rlhf.profiles import ARCHETYPES, QUESTION_KEYS, profile_history, save_profile, score_answers
from rlhf.registry import RegistryError, activate, active_version, rollback
from tests.rlhf.conftest import VIEW_TEXT, add_candidates


def test_questionnaire_scores_into_profile_limits() -> None:
    cautious, bold = score_answers(ARCHETYPES["conservative"]), score_answers(ARCHETYPES["aggressive"])
    assert cautious.label == "conservative" and bold.label == "aggressive"
    assert cautious.params.risk_aversion > 4 * bold.params.risk_aversion
    assert cautious.params.max_weight < bold.params.max_weight and cautious.params.max_gross < bold.params.max_gross
    assert not cautious.params.allow_shorts and bold.params.allow_shorts
    assert cautious.params.cash_buffer > bold.params.cash_buffer == 0


@pytest.mark.parametrize(
    ("answers", "field", "fragment"),
    [
        ({k: 1 for k in QUESTION_KEYS if k != "age"}, "age", "missing age"),
        ({k: 1 for k in QUESTION_KEYS} | {"goal": 4}, "goal", "out of range"),
        ({k: 1 for k in QUESTION_KEYS} | {"goal": -1}, "goal", "out of range"),
        ({k: 1 for k in QUESTION_KEYS} | {"goal": "lots"}, "goal", "option number"),
        ({k: 1 for k in QUESTION_KEYS} | {"favourite_colour": 1}, "favourite_colour", "unknown question"),
    ],
)
def test_bad_questionnaires_are_refused(answers, field: str, fragment: str, rlhf_db) -> None:
    with pytest.raises(InputValidationError, match=fragment) as info:
        score_answers(answers)
    assert info.value.field == field
    with pytest.raises(InputValidationError):
        with session_scope(rlhf_db) as session:
            save_profile(session, "someone", answers)
    with rlhf_db() as session:
        assert session.scalars(select(RiskProfile)).all() == [] and session.scalars(select(User)).all() == []  # nothing half-written


def test_profiles_are_versioned(rlhf_db) -> None:
    with session_scope(rlhf_db) as session:
        first, created = save_profile(session, "ann", ARCHETYPES["moderate"])
        same, created_again = save_profile(session, "ann", ARCHETYPES["moderate"])
        second, _ = save_profile(session, "ann", ARCHETYPES["aggressive"])
        assert created and not created_again and same.id == first.id
        assert [p.version for p in profile_history(session, second.user)] == [1, 2]


def test_conservative_and_aggressive_profiles_prefer_different_views() -> None:
    """Same prompt, two views, one realised week: the utilities rank them differently by profile."""
    cautious = score_answers(ARCHETYPES["conservative"]).params
    bold = score_answers(ARCHETYPES["aggressive"]).params
    down_small, up_large = -0.5, 2.5  # "Down by 0-1%" vs "Up by 2-3%"
    realised, daily_vol = 0.2, 0.03  # the stock rose 0.2% in a volatile week
    c = {v: view_utility(v, realised, daily_vol, cautious).utility for v in (down_small, up_large)}
    b = {v: view_utility(v, realised, daily_vol, bold).utility for v in (down_small, up_large)}
    assert c[down_small] > c[up_large], "the cautious investor is better off staying out"
    assert b[up_large] > b[down_small], "the bold investor is better off with the long position"


def test_utility_formula() -> None:
    params = RiskParams(risk_aversion=10, max_weight=1, max_gross=2)
    u = view_utility(1.5, 2.0, 0.02, params)
    w = 0.015 / (10 * 0.02**2 * 5)
    assert u.weight == pytest.approx(w) and u.utility == pytest.approx(w * 0.02 - 5 * w**2 * 0.02**2 * 5)
    assert view_utility(None, 2.0, 0.02, params).utility == 0.0


def test_human_feedback_is_validated_and_stored(rlhf_db) -> None:
    ids = add_candidates(rlhf_db, ["Up by 1-2%", "Down by 2-3%", "Up by 1-2%"])
    with session_scope(rlhf_db) as session:
        ann, _ = save_profile(session, "ann", ARCHETYPES["moderate"])
        bob, _ = save_profile(session, "bob", ARCHETYPES["aggressive"])
    with session_scope(rlhf_db) as session:
        from rlhf.profiles import get_user, require_profile

        user = get_user(session, "ann")
        profile = require_profile(session, user)
        pref = record_choice(session, user, profile, ids[0], ids[1], "b", "too optimistic")
        assert (pref.chosen_forecast_id, pref.rejected_forecast_id, pref.source, pref.profile_id) == (ids[1], ids[0], "human", profile.id)
        both = record_choice(session, user, profile, ids[0], ids[1], "both_bad")
        assert both.both_bad
        assert record_rating(session, user, profile, ids[0], -1).rating == -1
        for bad, message in [
            (lambda: record_choice(session, user, profile, ids[0], 999_999, "a"), "does not exist"),
            (lambda: record_choice(session, user, profile, ids[0], ids[2], "a"), "identical"),
            (lambda: record_choice(session, user, profile, ids[0], ids[0], "a"), "two different"),
            (lambda: record_choice(session, user, profile, ids[0], ids[1], "maybe"), "choice must be"),
            (lambda: record_rating(session, user, profile, ids[0], 5), "thumbs"),
        ]:
            with pytest.raises(FeedbackError, match=message):
                bad()
    other = add_candidates(rlhf_db, ["Up by 0-1%", "Down by 0-1%"], owner="bob", ticker="BBB")
    with session_scope(rlhf_db) as session:
        user = get_user(session, "ann")
        with pytest.raises(FeedbackError, match="belongs to another user"):
            record_choice(session, user, require_profile(session, user), other[0], other[1], "a")
    with rlhf_db() as session:
        assert len(session.scalars(select(Preference)).all()) == 3


def test_simulated_user_follows_its_profile() -> None:
    cautious = type("P", (), {"score": 0.0})()
    bold = type("P", (), {"score": 1.0})()
    small, large = VIEW_TEXT.format(prediction="Up by 0-1%"), VIEW_TEXT.format(prediction="Up by more than 5%")
    rng = random.Random(0)
    picks_cautious = [simulated_choice(small, large, cautious, rng) for _ in range(200)]
    picks_bold = [simulated_choice(small, large, bold, rng) for _ in range(200)]
    assert picks_cautious.count("a") > 170 and picks_bold.count("b") > 170
    assert simulated_choice("garbage", "more garbage", cautious, rng) == "both_bad"


def test_datasets_are_trl_shaped_and_split_by_time(rlhf_db) -> None:
    from rlhf.profiles import get_user, require_profile

    weeks = [date(2014, 3, 7), date(2014, 3, 14), date(2014, 3, 21), date(2014, 3, 28)]
    groups = [add_candidates(rlhf_db, ["Up by 1-2%", "Down by 0-1%"], day=d) for d in weeks]
    with session_scope(rlhf_db) as session:
        save_profile(session, "ann", ARCHETYPES["moderate"])
    with session_scope(rlhf_db) as session:
        user = get_user(session, "ann")
        profile = require_profile(session, user)
        for a, b in groups:
            record_choice(session, user, profile, a, b, "a")
        record_rating(session, user, profile, groups[0][0], 1)
        record_choice(session, user, profile, groups[1][0], groups[1][1], "both_bad")
    with rlhf_db() as session:
        user = get_user(session, "ann")
        pairs = time_split(pair_examples(session, user), eval_fraction=0.25)
        thumbs = rating_examples(session, user)
    assert pairs.split_date == date(2014, 3, 28) and len(pairs.train) == 3 and len(pairs.eval) == 1
    row = pairs.train[0]
    assert row["prompt"][0]["role"] == "system" and row["chosen"][0]["role"] == "assistant" and "Up by 1-2%" in row["chosen"][0]["content"]
    assert {e.row["label"] for e in thumbs} == {True, False} and len(thumbs) == 3
    assert all("completion" in e.row for e in thumbs)


def test_registry_activates_and_rolls_back(rlhf_db) -> None:
    from rlhf.profiles import get_user

    with session_scope(rlhf_db) as session:
        save_profile(session, "ann", ARCHETYPES["moderate"])
        save_profile(session, "bob", ARCHETYPES["moderate"])
        versions = [ModelVersion(key=f"k{i}", name=f"v{i}", kind="sft", base_model_id="b", base_fingerprint="f") for i in range(2)]
        bobs = ModelVersion(key="kb", name="bob's", kind="dpo", base_model_id="b", base_fingerprint="f", user_id=get_user(session, "bob").id)
        session.add_all([*versions, bobs])
    with session_scope(rlhf_db) as session:
        ann = get_user(session, "ann")
        with pytest.raises(RegistryError, match="nothing to roll back"):
            rollback(session, ann)
        activate(session, ann, versions[0].id, "first")
        activate(session, ann, versions[1].id, "second")
        assert active_version(session, ann).id == versions[1].id
        assert rollback(session, ann).id == versions[0].id
        assert active_version(session, ann).id == versions[0].id
        with pytest.raises(RegistryError, match="belongs to another user"):
            activate(session, ann, bobs.id, "steal")
        with pytest.raises(RegistryError, match="does not exist"):
            activate(session, ann, 99_999, "nope")
