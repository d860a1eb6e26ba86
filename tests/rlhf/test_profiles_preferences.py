"""Profiles, feedback, outcome-grounded utility, the simulated user, datasets and the registry."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from advisor.errors import InputValidationError
from advisor.portfolio import RiskParams
from db.engine import session_scope
from db.models import ModelVersion, Preference, RiskProfile, User
from rlhf.datasets import pair_examples, rating_examples, time_split
from rlhf.preferences import FeedbackError, record_choice, record_rating, simulated_choice
from rlhf.profiles import ARCHETYPES, QUESTION_KEYS, loss_aversion_for, profile_history, save_profile, score_answers
from rlhf.registry import RegistryError, activate, active_version, rollback
from rlhf.utility import OutcomeWeek, UserUtility, view_utility
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
    """Same prompt, two views, one realised week that ends up after a bad Tuesday: ranked differently by profile."""
    cautious, bold = score_answers(ARCHETYPES["conservative"]).utility, score_answers(ARCHETYPES["aggressive"]).utility
    week = OutcomeWeek("X", date(2015, 6, 5), (100.0, 101.0, 97.0, 98.5, 100.0, 101.0), daily_vol=0.015)  # +1% over the week
    down_small, up_small = -0.5, 0.5  # "Down by 0-1%" vs "Up by 0-1%"
    c = {v: view_utility(v, week, cautious).utility for v in (down_small, up_small)}
    b = {v: view_utility(v, week, bold).utility for v in (down_small, up_small)}
    assert c[down_small] > c[up_small], "the cautious investor would rather have stayed out of that week"
    assert b[up_small] > b[down_small], "the bold investor is better off with the long position"


def test_utility_formula() -> None:
    params = RiskParams(risk_aversion=10, max_weight=1, max_gross=2)
    week = OutcomeWeek("X", date(2015, 6, 5), (100.0, 99.0, 102.0), daily_vol=0.02)  # -1%, then +3% of the start price
    w = 0.015 / (10 * 0.02**2 * 5)
    penalty = 5 * w**2 * 0.02**2 * 5
    plain = view_utility(1.5, week, UserUtility(params))
    assert plain.weight == pytest.approx(w) and plain.utility == pytest.approx(w * 0.02 - penalty)  # kappa 1: mean-variance
    averse = view_utility(1.5, week, UserUtility(params, loss_aversion=2.5))
    assert averse.utility == pytest.approx(w * 0.03 - 2.5 * w * 0.01 - penalty)
    assert view_utility(None, week, UserUtility(params)).utility == 0.0
    with pytest.raises(ValueError, match="loss aversion"):
        UserUtility(params, loss_aversion=0.5)


def test_loss_aversion_table() -> None:
    assert [loss_aversion_for({"drop_reaction": t // 2, "loss_tolerance": t - t // 2}) for t in range(7)] == [3.0, 2.6667, 2.3333, 2.0, 1.6667, 1.3333, 1.0]
    assert score_answers(ARCHETYPES["conservative"]).loss_aversion == 3.0 and score_answers(ARCHETYPES["aggressive"]).loss_aversion == 1.0


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
        assert both.both_bad and both.id == pref.id, "a changed answer on the same pair replaces the earlier one"
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
        assert len(session.scalars(select(Preference)).all()) == 2


def test_repeated_and_changed_feedback_replaces_the_earlier_answer(rlhf_db) -> None:
    """Three thumbs on one view export once (the last); an A/B choice changed from A to B exports as B."""
    from rlhf.profiles import get_user, require_profile

    ids = add_candidates(rlhf_db, ["Up by 1-2%", "Down by 2-3%"])
    with session_scope(rlhf_db) as session:
        save_profile(session, "ann", ARCHETYPES["moderate"])
    with session_scope(rlhf_db) as session:
        user = get_user(session, "ann")
        profile = require_profile(session, user)
        for rating in (1, 1, -1):
            record_rating(session, user, profile, ids[0], rating)
        record_choice(session, user, profile, ids[0], ids[1], "a")
        record_choice(session, user, profile, ids[1], ids[0], "a")  # same pair, shown the other way round: now prefers ids[1]
    with rlhf_db() as session:
        user = get_user(session, "ann")
        assert len(session.scalars(select(Preference)).all()) == 2
        ratings = rating_examples(session, user)
        assert [e.row["label"] for e in ratings] == [False]
        pairs = pair_examples(session, user)
        assert len(pairs) == 1 and "Down by 2-3%" in pairs[0].row["chosen"][0]["content"]


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
        record_choice(session, user, profile, groups[1][0], groups[1][1], "both_bad")  # a changed answer: replaces that week's "a"
    with rlhf_db() as session:
        user = get_user(session, "ann")
        pairs = time_split(pair_examples(session, user), eval_fraction=0.25)
        thumbs = rating_examples(session, user)
    assert pairs.split_date == date(2014, 3, 28) and len(pairs.train) == 2 and len(pairs.eval) == 1
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


def test_sampled_candidates_never_replace_the_greedy_view(rlhf_db) -> None:
    """A user's unparsed candidate 0 (made for an A/B pair) must not hide the shared greedy view that trades."""
    from advisor import market_calendar
    from advisor.forecaster.service import load_views

    with session_scope(rlhf_db) as session:
        save_profile(session, "ann", ARCHETYPES["moderate"])
    ids = add_candidates(rlhf_db, ["not a prediction", "Up by 1-2%"], owner="ann")
    day = date(2014, 3, 7)
    with session_scope(rlhf_db) as session:
        from db.models import Forecast

        candidate = session.get(Forecast, ids[0])
        candidate.parse_status = "unparsed"
        greedy = Forecast(
            forecast_key="greedy-AAA", ticker="AAA", forecast_date=day, as_of=market_calendar.session_close(day),
            target_start=market_calendar.next_session_after(day), target_end=market_calendar.session_on_or_before(day + timedelta(days=7)),
            model_version_id=candidate.model_version_id,
            user_id=None, prompt_hash="hash-greedy", prompt_text="prompt", raw_text=VIEW_TEXT.format(prediction="Down by 0-1%"),
            parse_status="ok", direction="down", bin_low=0, bin_high=1, decoding={"mode": "greedy"}, seed=0, candidate_index=0,
            group_key="greedy",
        )
        session.add(greedy)
        session.flush()
        greedy_id, version_id, user_id = greedy.id, candidate.model_version_id, candidate.user_id
    with rlhf_db() as session:
        views = load_views(session, version_id, user_id, day, day, include_shared=True)
        assert views[day]["AAA"].id == greedy_id
        assert load_views(session, version_id, user_id, day, day) == {}, "the user's own rows are all candidates: no view"
