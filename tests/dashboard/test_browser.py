"""The dashboard in a real browser: ``streamlit run`` against the same temporary database the AppTest tests
use, driven by headless Chromium through selenium. Every page renders without a traceback, the sidebar user
selector works, an A/B choice made by clicking is stored, and a screenshot of each page is kept in
test-artifacts/screenshots/ (CI can upload that folder).

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium, chromium-driver); skipped
without them unless ADVISOR_REQUIRE_BROWSER=1 (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import Preference, User
from rlhf.profiles import ARCHETYPES, save_profile
from tests.dashboard import browser
from tests.dashboard.conftest import make_env
from tests.rlhf.conftest import add_candidates

pytestmark = pytest.mark.browser

# Read at import: the autouse fixture in tests/conftest.py clears ADVISOR_* variables before each test.
REQUIRE_BROWSER = os.environ.get("ADVISOR_REQUIRE_BROWSER") == "1"
SCREENSHOTS = browser.REPO / "test-artifacts" / "screenshots"
FIRST_RENDER_S = 60  # the first run of a fresh server imports pandas, torch, transformers...
RENDER_S = 30
# Something each page shows once its data is there (proves the page got past its "what to do first" stops).
SHOWS = {
    "overview": "Target allocation",
    "profile": "Current profile v1",
    "views": "Prediction:",
    "feedback": "View B",
    "backtest": "No backtests yet",
    "trading": "Rebalance now",
    "models": "Active for ann",
}


@pytest.fixture
def browser_ready() -> None:
    why = browser.missing_browser()
    if why:
        if REQUIRE_BROWSER:
            pytest.fail(f"ADVISOR_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)


def check_page(driver: Any, path: str, title: str) -> None:
    assert browser.page_title(driver).startswith(title), browser.page_title(driver)
    assert not browser.exceptions(driver), browser.exceptions(driver)
    assert SHOWS[path] in browser.main_text(driver), f"{path}: {SHOWS[path]!r} not shown:\n{browser.main_text(driver)[:2000]}"


def choose_b_and_save(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    option = driver.find_element(By.XPATH, '//div[@data-testid="stRadio"]//label[normalize-space(.)="B is better"]')
    option.click()
    assert option.find_element(By.TAG_NAME, "input").is_selected()


def submit_choice(driver: Any) -> float:
    from selenium.webdriver.common.by import By

    button = driver.find_element(By.XPATH, '//div[@data-testid="stFormSubmitButton"]//button[normalize-space(.)="Save my choice"]')
    started = browser.now_ms(driver)
    button.click()
    return started


def test_every_page_renders_in_chromium_and_an_ab_choice_is_stored(
    browser_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    dash = make_env(tmp_path, monkeypatch, tiny_model_dir)
    with session_scope(dash.factory) as session:
        save_profile(session, "ann", ARCHETYPES["moderate"])
        save_profile(session, "bob", ARCHETYPES["aggressive"])  # the second user every page is shot for
        session.add(User(name="abe"))  # sorts first, so the selector starts on abe and choosing ann is a real change
    ids = add_candidates(dash.factory, ["Up by 1-2%", "Down by 2-3%"], day=date(2014, 5, 9))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "failure.png").unlink(missing_ok=True)

    with browser.streamlit_server([], dict(os.environ), tmp_path / "streamlit.log") as server, browser.chromium() as driver:
        try:
            # A deep link first: the app's own navigation must be in charge even when "/" was never visited
            # (Overview, the default page, is served at "/"; /overview does not exist).
            browser.open_app(driver, f"{server.url}/models", FIRST_RENDER_S, "Models")
            assert browser.nav_labels(driver) == [label for label, _, _ in browser.PAGES]
            browser.select_user(driver, "ann", FIRST_RENDER_S)
            for label, path, title in browser.PAGES:
                # One browser session: click the sidebar links, so the chosen user stays selected.
                browser.click_nav(driver, label, title, FIRST_RENDER_S)
                check_page(driver, path, title)
                if path == "profile":
                    assert browser.page_title(driver) == "Risk profile — ann"
                if path == "feedback":
                    choose_b_and_save(driver)
                browser.screenshot(driver, SCREENSHOTS / f"{path}.png")
                if path == "feedback":
                    started = submit_choice(driver)
                    browser.wait_rendered(driver, started, title, RENDER_S)
                    browser.wait_for(driver, lambda d: "No pair waiting" in browser.main_text(d), RENDER_S, "the answered pair to go")
                    assert not browser.exceptions(driver), browser.exceptions(driver)
                    browser.screenshot(driver, SCREENSHOTS / "feedback-saved.png")
            browser.select_user(driver, "bob", RENDER_S)
            for label, path, title in browser.PAGES:
                browser.click_nav(driver, label, title, RENDER_S)
                assert not browser.exceptions(driver), browser.exceptions(driver)
                if path == "profile":
                    assert browser.page_title(driver) == "Risk profile — bob"
                browser.screenshot(driver, SCREENSHOTS / f"{path}-bob.png")
        except BaseException:
            driver.save_screenshot(str(SCREENSHOTS / "failure.png"))
            print(f"--- page\n{browser.diagnose(driver)}\n--- streamlit log\n{server.log_tail()}")
            raise

    with dash.factory() as session:
        pref = session.scalars(select(Preference)).one()
        ann = session.scalar(select(User).where(User.name == "ann"))
        assert (pref.kind, pref.source, pref.user_id) == ("pair", "human", ann.id)
        assert (pref.chosen_forecast_id, pref.rejected_forecast_id) == (ids[1], ids[0])


def checked_option(driver: Any, question: str) -> str | None:
    """The label of the selected option of the radio group whose question is ``question`` (None: none chosen)."""
    from selenium.webdriver.common.by import By

    for group in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"]'):
        if question in group.text:
            for label in group.find_elements(By.TAG_NAME, "label"):
                inputs = label.find_elements(By.TAG_NAME, "input")
                if inputs and inputs[0].is_selected():
                    return label.text.strip()
            return None
    raise AssertionError(f"no question {question!r} on the page")


def test_switching_and_creating_users_in_chromium_keeps_each_users_answers(
    browser_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from rlhf.profiles import QUESTIONS

    dash = make_env(tmp_path, monkeypatch, tiny_model_dir)
    with session_scope(dash.factory) as session:
        save_profile(session, "bold", ARCHETYPES["aggressive"])
        save_profile(session, "careful", ARCHETYPES["conservative"])
    horizon = next(q for q in QUESTIONS if q.key == "horizon")
    with browser.streamlit_server([], dict(os.environ), tmp_path / "streamlit.log") as server, browser.chromium() as driver:
        try:
            browser.open_app(driver, f"{server.url}/profile", FIRST_RENDER_S, "Risk profile")
            header = driver.find_element(By.CSS_SELECTOR, '[data-testid="stHeader"]').text
            assert "Deploy" not in header, f"the developer toolbar shows: {header!r}"
            browser.select_user(driver, "bold", FIRST_RENDER_S)
            browser.wait_for(driver, lambda d: browser.page_title(d) == "Risk profile — bold", RENDER_S, "bold's profile")
            assert checked_option(driver, horizon.text) == horizon.options[ARCHETYPES["aggressive"]["horizon"]]
            browser.select_user(driver, "careful", RENDER_S)
            browser.wait_for(driver, lambda d: browser.page_title(d) == "Risk profile — careful", RENDER_S, "careful's profile")
            assert checked_option(driver, horizon.text) == horizon.options[ARCHETYPES["conservative"]["horizon"]], \
                "the form shows careful's answers, not bold's"
            name_box = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] input[aria-label="New user name"]')
            name_box.send_keys("zoe", Keys.TAB)
            started = browser.now_ms(driver)
            driver.find_element(By.XPATH, '//*[@data-testid="stSidebar"]//button[normalize-space(.)="Create user"]').click()
            browser.wait_rendered(driver, started, None, RENDER_S)
            browser.wait_for(driver, lambda d: browser.page_title(d) == "Risk profile — zoe", RENDER_S, "the new user to be selected")
            assert "Created user zoe" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
            assert checked_option(driver, horizon.text) is None, "a new user's form starts unanswered"
            browser.screenshot(driver, SCREENSHOTS / "profile-new-user.png")
        except BaseException:
            driver.save_screenshot(str(SCREENSHOTS / "failure-users.png"))
            print(f"--- page\n{browser.diagnose(driver)}\n--- streamlit log\n{server.log_tail()}")
            raise
    with dash.factory() as session:
        assert session.scalar(select(User).where(User.name == "zoe")) is not None
