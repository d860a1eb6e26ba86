"""Drive the real dashboard: ``streamlit run`` in a subprocess and headless Chromium through selenium.

Shared by tests/dashboard/test_browser.py and bench/bench_dashboard.py. Only the system Chromium and
chromedriver are used (an explicit ``Service`` path means Selenium Manager never runs, so nothing is
downloaded).

How the Streamlit page is observed: the root element ``[data-testid="stApp"]`` carries
``data-test-script-state`` (``initial``, ``running``, ``notRunning``, ...). A MutationObserver, installed
before any page script runs, records every change of that attribute with ``performance.now()``, so "the
run that followed this click has finished" is read from the browser's own clock instead of racing a poll.
A page counts as rendered when such a run has ended, Streamlit is idle (no stale elements, no skeletons of
components still loading) and, where the caller knows it, the page title is shown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1440,1800",
)

# The sidebar navigation label, the url path and how the page title starts, in navigation order.
PAGES = [
    ("Overview", "overview", "Overview"),
    ("Profile", "profile", "Risk profile"),
    ("Views", "views", "Weekly views"),
    ("Feedback", "feedback", "Which views do you prefer?"),
    ("Backtest", "backtest", "Backtest"),
    ("Paper trading", "trading", "Paper trading"),
    ("Models", "models", "Models"),
]

_OBSERVER = """
window.__stStates = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.getAttribute && r.target.getAttribute('data-testid') === 'stApp') {
      window.__stStates.push([performance.now(), r.target.getAttribute('data-test-script-state')]);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-test-script-state']});
"""


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def streamlit_server(app_args: list[str], env: dict[str, str], log: Path, *, timeout_s: float = 60) -> Iterator[Server]:
    """``streamlit run dashboard/app.py -- APP_ARGS`` on a free local port, in its own process group; killed on exit."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--", *app_args,
    ]
    env = {**env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url, process, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit not healthy after {timeout_s:.0f} s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless system Chromium with a throw-away profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="advisor-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _OBSERVER})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- waiting on Streamlit -------------------------------------------------------------------------


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout_s: float, what: str) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout_s, poll_frequency=0.1, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    return wait.until(condition, f"timed out after {timeout_s:.0f} s waiting for {what}")


def now_ms(driver: Any) -> float:
    return float(driver.execute_script("return performance.now()"))


def run_finished_after(driver: Any, since_ms: float) -> float | None:
    """When the latest script run that ended after ``since_ms`` ended (browser ms), or None if none has.
    React only writes the attribute when it changes, so a "notRunning" record means a run just ended."""
    states = driver.execute_script("return window.__stStates || []")
    ends = [float(at) for at, state in states if at >= since_ms and state == "notRunning"]
    return ends[-1] if ends else None


def is_idle(driver: Any) -> bool:
    return bool(driver.execute_script(
        "const app = document.querySelector('[data-testid=\"stApp\"]');"
        "return !!app && app.getAttribute('data-test-script-state') === 'notRunning'"
        " && !app.querySelector('[data-stale=\"true\"], [data-testid=\"stSkeleton\"], [data-testid=\"stAppSkeleton\"]');"
    ))


def page_title(driver: Any) -> str:
    return str(driver.execute_script(
        "const h = document.querySelector('[data-testid=\"stMain\"] h1'); return h ? h.innerText : '';"
    )).strip()


def main_text(driver: Any) -> str:
    return str(driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.innerText : '';"
    ))


def wait_rendered(driver: Any, since_ms: float, title: str | None, timeout_s: float) -> float:
    """Wait until the run started after ``since_ms`` has finished, Streamlit is idle and (when given) the
    page title starts with ``title``; return the browser time (ms) at which that run finished."""

    def done(d: Any) -> float | None:
        finished = run_finished_after(d, since_ms)
        if finished is None or not is_idle(d):
            return None
        if title is not None and not page_title(d).startswith(title):
            return None
        return finished

    return wait_for(driver, done, timeout_s, f"the page {title or ''!r} to render and Streamlit to be idle")


def open_app(driver: Any, url: str, timeout_s: float, title: str | None = None) -> float:
    """Load the app in the browser; returns the ms from navigation start to the first finished run."""
    driver.get(url)
    return wait_rendered(driver, 0.0, title, timeout_s)


def nav_label(text: str) -> str:
    """A navigation link's text is its icon and its title on separate lines."""
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def nav_labels(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [nav_label(e.text) for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')]


def nav_link(driver: Any, label: str) -> Any:
    from selenium.webdriver.common.by import By

    return next((e for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]') if nav_label(e.text) == label), None)


def click_nav(driver: Any, label: str, title: str | None, timeout_s: float) -> float:
    """Click a sidebar navigation link (same browser session, so session state survives); returns the
    ms from the click to the end of the page's run."""
    link = wait_for(driver, lambda d: nav_link(d, label), 30, f"the navigation link {label!r}")
    started = float(driver.execute_script("const t = performance.now(); arguments[0].click(); return t;", link))

    def current(d: Any) -> bool:
        link = nav_link(d, label)
        return link is not None and link.get_attribute("aria-current") == "page"

    wait_for(driver, current, timeout_s, f"{label!r} to become the current page")
    return wait_rendered(driver, started, title, timeout_s) - started


def select_user(driver: Any, name: str, timeout_s: float, *, attempts: int = 3) -> None:
    """Choose ``name`` in the sidebar user selectbox: open its list (click the combobox input), click the
    option, then wait for the rerun that the change starts. The list is virtualised and re-rendered while it
    opens, so a click can miss on a busy machine: it is retried."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By

    def combobox(d: Any) -> Any:
        return d.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input[role="combobox"]')

    def option(d: Any) -> Any:
        return next((o for o in d.find_elements(By.CSS_SELECTOR, '[role="option"]') if o.text.strip() == name), None)

    if wait_for(driver, combobox, 30, "the user selector").get_attribute("value") == name:
        return
    started = now_ms(driver)
    for attempt in range(1, attempts + 1):
        try:
            combobox(driver).click()
            wait_for(driver, option, 10, f"the option {name!r} in the user selector").click()
            wait_for(driver, lambda d: combobox(d).get_attribute("value") == name, 10, f"the user selector to show {name!r}")
            break
        except (TimeoutException, WebDriverException):
            if attempt == attempts:
                raise
    wait_rendered(driver, started, None, timeout_s)


def exceptions(driver: Any) -> list[str]:
    """Tracebacks Streamlit shows, and errors the pages show for unexpected exceptions."""
    from selenium.webdriver.common.by import By

    shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]
    shown += [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]') if "Something went wrong" in e.text]
    return shown


def diagnose(driver: Any) -> str:
    """What the page looked like, for a failure message."""
    try:
        return str(driver.execute_script(
            "const app = document.querySelector('[data-testid=\"stApp\"]');"
            "return JSON.stringify({url: location.href, now: performance.now(), states: window.__stStates,"
            " state: app && app.getAttribute('data-test-script-state'),"
            " stale: document.querySelectorAll('[data-stale=\"true\"]').length,"
            " skeletons: document.querySelectorAll('[data-testid=\"stSkeleton\"]').length,"
            " main: (document.querySelector('[data-testid=\"stMain\"]') || {innerText: ''}).innerText.slice(0, 500)});"
        ))
    except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the real failure
        return f"(no diagnostics: {exc})"


def screenshot(driver: Any, path: Path, *, width: int = 1440, max_height: int = 6000) -> None:
    """The whole page: Streamlit scrolls inside its main container, so the window is made as tall as the
    content for the shot, then put back."""
    before = driver.get_window_size()
    content = int(driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 0;"
    ))
    chrome = int(driver.execute_script("return window.outerHeight - window.innerHeight"))
    height = min(max(content + chrome, before["height"]), max_height)
    if height != before["height"]:
        driver.set_window_size(width, height)
        wait_for(driver, lambda d: is_idle(d), 10, "Streamlit to be idle after resizing")
        time.sleep(0.3)  # charts redraw on resize
    driver.save_screenshot(str(path))
    if height != before["height"]:
        driver.set_window_size(before["width"], before["height"])
