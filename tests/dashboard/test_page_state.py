"""Dashboard flows that could save wrong data or hide what was saved (issue 14's defects 1-4), with AppTest:
each page's widget state belongs to the user it was shown for, a saved answer is shown, and nothing is
chosen for the user by default."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select

from dashboard import background
from db.models import Forecast, Preference, RiskProfile, TextItem, User
from rlhf.profiles import ARCHETYPES
from tests.dashboard.test_pages import app, as_user, assert_clean, texts, wait_for_text, with_user
from tests.rlhf.conftest import add_candidates


def profile_rows(dash, name: str) -> list[RiskProfile]:
    with dash.factory() as session:
        user = session.scalar(select(User).where(User.name == name))
        return list(session.scalars(select(RiskProfile).where(RiskProfile.user_id == user.id))) if user else []


def test_switching_user_on_the_profile_page_shows_the_new_users_answers(dash) -> None:
    with_user(dash, "bold", "aggressive")
    with_user(dash, "careful", "conservative")
    at = as_user(app(), "bold")
    at.switch_page("app_pages/profile.py").run()
    assert_clean(at)
    horizon = next(r for r in at.radio if r.key and r.key.endswith("_horizon"))
    assert horizon.index == ARCHETYPES["aggressive"]["horizon"]
    as_user(at, "careful")
    assert_clean(at)
    horizon = next(r for r in at.radio if r.key and r.key.endswith("_horizon"))
    assert horizon.index == ARCHETYPES["conservative"]["horizon"], "the form shows the selected user's own answers"
    at.button(key="save_profile").click().run()
    assert_clean(at)
    assert len(profile_rows(dash, "careful")) == 1, "saving the unchanged form stores nothing new for careful"
    assert profile_rows(dash, "careful")[0].answers == ARCHETYPES["conservative"]


def test_a_new_users_form_is_empty_and_an_incomplete_form_is_refused(dash) -> None:
    with_user(dash, "newbie", None)
    at = as_user(app(), "newbie")
    at.switch_page("app_pages/profile.py").run()
    assert_clean(at)
    questions = [r for r in at.radio if r.key and r.key.startswith("q_")]
    assert questions and all(r.index is None for r in questions), "no answer is chosen for a new user"
    at.button(key="save_profile").click().run()
    assert_clean(at)
    assert "answer every question" in texts(at).lower()
    assert profile_rows(dash, "newbie") == []


def test_saving_a_profile_updates_the_banner(dash) -> None:
    with_user(dash, "newbie", None)
    at = as_user(app(), "newbie")
    at.switch_page("app_pages/profile.py").run()
    for radio in [r for r in at.radio if r.key and r.key.startswith("q_")]:
        key = radio.key.split("_", 2)[2]  # q_<user id>_<question key>
        radio.set_value(radio.options[ARCHETYPES["moderate"].get(key, 1)])
    at.button(key="save_profile").click().run()
    assert_clean(at)
    assert "No profile yet" not in texts(at) and "Current profile v1" in texts(at)
    assert "Saved as profile version 1" in texts(at)


def test_creating_a_user_selects_them_and_says_so(dash) -> None:
    with_user(dash, "ann")
    at = as_user(app(), "ann")
    at.sidebar.text_input(key="new_user_name").set_value("zoe")
    at.sidebar.button(key="create_user").click().run()
    assert_clean(at)
    assert at.sidebar.selectbox(key="user_select").value == "zoe"
    assert "Created user zoe" in texts(at) or any("Created user zoe" in str(t.value) for t in at.sidebar.success)


def test_creating_a_user_with_an_empty_name_is_an_error(dash) -> None:
    with_user(dash, "ann")
    at = as_user(app(), "ann")
    at.sidebar.text_input(key="new_user_name").set_value("   ")
    at.sidebar.button(key="create_user").click().run()
    assert_clean(at)
    assert any("name" in str(e.value).lower() for e in at.sidebar.error)
    with dash.factory() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_after_a_choice_the_next_pair_starts_unanswered(dash) -> None:
    with_user(dash)
    add_candidates(dash.factory, ["Up by 1-2%", "Down by 2-3%"], day=date(2014, 5, 9))
    add_candidates(dash.factory, ["Up by 0-1%", "Down by 0-1%"], day=date(2014, 5, 16))
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    choice = next(r for r in at.radio if r.key and r.key.startswith("choice_radio"))
    assert choice.index is None, "no choice is made for the user"
    at.button(key="save_choice").click().run()
    assert_clean(at)
    with dash.factory() as session:
        assert session.scalar(select(func.count()).select_from(Preference)) == 0, "an unanswered pair saves nothing"
    assert "choose" in texts(at).lower()
    choice = next(r for r in at.radio if r.key and r.key.startswith("choice_radio"))
    choice.set_value("B is better")
    next(t for t in at.text_input if t.key and t.key.startswith("choice_comment")).set_value("too optimistic")
    at.button(key="save_choice").click().run()
    assert_clean(at)
    with dash.factory() as session:
        assert session.scalar(select(func.count()).select_from(Preference)) == 1
    choice = next(r for r in at.radio if r.key and r.key.startswith("choice_radio"))
    comment = next(t for t in at.text_input if t.key and t.key.startswith("choice_comment"))
    assert choice.index is None and comment.value == "", "the next pair starts with no choice and no comment"


def test_a_saved_thumb_shows_when_the_page_is_opened_again(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    with dash.factory() as session:
        forecast_id = session.scalar(select(Forecast.id).where(Forecast.forecast_date == date(2014, 8, 29)).order_by(Forecast.ticker))
    at.session_state[f"thumb_{forecast_id}"] = 0
    at.run()
    assert_clean(at)
    fresh = as_user(app(), "ann")  # a new visit: a new browser session
    fresh.switch_page("app_pages/feedback.py").run()
    assert_clean(fresh)
    assert fresh.session_state[f"thumb_{forecast_id}"] == 0, "the thumbs show the stored rating"


def test_after_a_confirmed_rebalance_the_page_shows_the_new_account(dash, monkeypatch) -> None:
    monkeypatch.setenv("ADVISOR_BROKER__MAX_ORDER_NOTIONAL", "10000")  # large orders go out in slices
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/trading.py").run()
    at.date_input(key="as_of").set_value(date(2014, 5, 9))
    at.run()
    before = next(m.value for m in at.metric if m.label == "Positions")
    at.button(key="dry_run").click().run()
    assert_clean(at)
    plan = at.dataframe[-1].value if at.dataframe else None
    assert plan is not None and "Part" in plan.columns
    assert not plan.duplicated().any(), "each slice of one order is its own row, told apart by its part"
    at.button(key="confirm").click().run()
    assert_clean(at)
    assert "Sent" in texts(at)
    assert not [b for b in at.button if b.key == "confirm"], "nothing left to confirm"
    after = next(m.value for m in at.metric if m.label == "Positions")
    assert before == "0" and after != "0", "the account shows the orders sent, without a reload"


def test_the_backtest_page_says_which_stored_run_it_shows_and_keeps_users_apart(dash) -> None:
    with_user(dash, "ann")
    with_user(dash, "bob", "aggressive")
    at = as_user(app(), "ann")
    at.switch_page("app_pages/backtest.py").run()
    at.date_input(key="bt_start").set_value(date(2014, 5, 1))
    at.date_input(key="bt_end").set_value(date(2014, 8, 29))
    at.button(key="bt_run").click().run()
    assert_clean(at)
    as_user(at, "bob")
    assert_clean(at)
    assert "No backtests yet" in texts(at), "bob does not see ann's runs"
    fresh = as_user(app(), "ann")
    fresh.switch_page("app_pages/backtest.py").run()
    assert_clean(fresh)
    caption = texts(fresh)
    assert "latest stored run" in caption and "2014-05-01" in caption and "2014-08-29" in caption, caption


def test_model_text_on_the_views_page_is_shown_literally(dash) -> None:
    from sqlalchemy import update

    from db.engine import session_scope
    from tests.rlhf.conftest import VIEW_TEXT

    with_user(dash)
    hostile = VIEW_TEXT.format(prediction="Up by 1-2%").replace("Demand looks strong.", "<img src=x onerror=alert(1)> **bold** [link](http://x)")
    with session_scope(dash.factory) as session:
        session.execute(update(Forecast).values(raw_text=hostile))
    at = as_user(app(), "ann")
    at.switch_page("app_pages/views.py").run()
    assert_clean(at)
    shown = [m.value for m in at.markdown if "Positive developments" in m.value]
    assert shown and all("\\<img" in v and "\\*\\*bold\\*\\*" in v and "\\[link\\]" in v for v in shown), shown[:1]
    assert not any(getattr(m, "allow_html", False) for m in at.markdown), "no markdown element renders raw HTML"


def test_making_an_ab_pair_runs_off_the_page_and_says_how_long_it_took(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert "No pair waiting" in texts(at)
    at.selectbox(key="pair_ticker").set_value("AAA")
    at.date_input(key="pair_date").set_value(date(2014, 5, 9))
    at.button(key="make_pair").click().run()
    assert_clean(at)
    shown = wait_for_text(at, "Two new candidate views of AAA for 2014-05-09 are waiting above")
    assert "View A" in shown and "View B" in shown
    with dash.factory() as session:
        ann = session.scalar(select(User).where(User.name == "ann"))
        assert background.current(ann.id, "pair").expected_s is None  # the first pair had no estimate
        assert session.scalar(select(func.count()).select_from(Forecast).where(Forecast.user_id == ann.id)) == 2




def test_developer_details_sit_in_an_expander(dash) -> None:
    with_user(dash)
    at = as_user(app(), "ann")
    at.switch_page("app_pages/views.py").run()
    assert_clean(at)
    outside = [c.value for c in at.main.caption if "prompt " in c.value or "seed " in c.value]
    inside = [c.value for e in at.expander if e.label == "Details" for c in e.caption]
    assert any("prompt " in v and "seed " in v for v in inside) and not [v for v in outside if v not in inside]
    assert not [c.value for c in at.sidebar.caption if c.value.startswith("database:") and c.value not in inside]


def test_the_profile_is_explained_in_plain_words_with_leverage_flagged(dash) -> None:
    from advisor.portfolio import in_plain_words, params_from_profile

    with_user(dash, "bold", "aggressive")
    at = as_user(app(), "bold")
    at.switch_page("app_pages/profile.py").run()
    assert_clean(at)
    profile = profile_rows(dash, "bold")[0]
    params = params_from_profile(profile)
    lines = in_plain_words(params)
    shown = texts(at)
    assert all(line in shown for line in lines), lines
    assert "could lose about 49%" in shown, "1.645 x the aggressive profile's 30% target volatility"
    assert params.max_gross > 1.0 and "That is leverage" in shown


def test_feedback_shows_what_a_pair_was_built_from_without_hindsight(dash) -> None:
    with_user(dash)
    add_candidates(dash.factory, ["Up by 1-2%", "Down by 2-3%"], day=date(2014, 5, 9))
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    assert any("What both views were built from: AAA's prices and posts up to 2014-05-09" in e.label for e in at.expander)
    assert "adjusted close up to the decision on 2014-05-09 (what the views saw; what came next is not shown)" in texts(at)
    assert "Posts the view was built from" in texts(at)


def test_feedback_shows_how_the_sentiment_classifier_read_each_post(dash) -> None:
    from advisor.forecaster.modelstore import adapter_hash
    from advisor.forecaster.queries import forecast_texts
    from advisor.forecaster.sentiment_lora import SHIPPED_DIR
    from advisor.forecaster.tone import text_key
    from db.models import PostTone

    with_user(dash)
    ids = add_candidates(dash.factory, ["Up by 1-2%", "Down by 2-3%"], day=date(2014, 5, 9))
    with dash.factory() as session:
        quoted = list(session.scalars(select(TextItem.id).where(TextItem.ticker == "AAA", TextItem.session_date <= date(2014, 5, 9))
                                      .order_by(TextItem.session_date.desc()).limit(3)))
        for forecast_id in ids:
            session.get(Forecast, forecast_id).text_item_ids = quoted
        session.commit()
        posts = forecast_texts(session, session.get(Forecast, ids[0]))
        assert len(posts) == 3
        key = adapter_hash(SHIPPED_DIR)  # the adapter the product would read posts with here (the shipped one)
        session.add_all(PostTone(scorer_key=key, text_hash=text_key(t.text), tone=1 if i == 0 else -1) for i, t in enumerate(posts))
        session.commit()
    at = as_user(app(), "ann")
    at.switch_page("app_pages/feedback.py").run()
    assert_clean(at)
    captions = [c.value for c in at.main.caption]
    assert sum("read as upbeat by the sentiment classifier" in c for c in captions) == 1
    assert sum("read as worried by the sentiment classifier" in c for c in captions) == len(posts) - 1
