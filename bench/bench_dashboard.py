"""Dashboard benchmark: time to first render of each page in a real browser, cold and warm.

Starts ``streamlit run dashboard/app.py -- --data-dir DIR`` (a fresh server process) and drives headless
Chromium with selenium through every page twice in one browser session:

  * cold: the page's first visit in the fresh server (the first page also pays for loading the app into
    the browser and for the server's first imports and its database connection);
  * warm: the second visit, clicking the same sidebar link again (module and ``st.cache_resource``
    caches filled).

Each figure runs from the navigation (``driver.get`` for the first page, the click on the sidebar link
for the others) to the end of the page's script run, read from the browser's clock, with Streamlit idle
(no stale or placeholder elements left). A page that stops early with its "what to do first" message
counts as rendered. The selected user is the sidebar's default (the first user by name).

Run: .venv/bin/python bench/bench_dashboard.py [--data-dir var]   (``make demo`` fills var/)
Needs /usr/bin/chromium and /usr/bin/chromedriver; without them it says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.dashboard.browser, the driver shared with the browser test

from tests.dashboard import browser  # noqa: E402

TIMEOUT_S = 300


def shown(driver) -> str:
    """The page title, or the first message when the page stopped before its title."""
    title = browser.page_title(driver)
    if title:
        return title
    text = browser.main_text(driver).strip()
    return (text.splitlines() or ["(empty page)"])[0][:70]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO / "var", help="the data directory (default: the repository's var/)")
    args = parser.parse_args()
    why = browser.missing_browser()
    if why:
        print(f"skipped: {why}")
        return 0
    data_dir = args.data_dir.resolve()
    if not (data_dir / "advisor.db").exists():
        print(f"note: {data_dir / 'advisor.db'} does not exist (run `make demo`); the pages will say so")

    times: dict[str, list[float]] = {path: [] for _, path, _ in browser.PAGES}
    notes: dict[str, str] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, \
            browser.streamlit_server(["--data-dir", str(data_dir)], dict(os.environ), Path(tmp) / "streamlit.log") as server, \
            browser.chromium() as driver:
        for visit in ("cold", "warm"):
            for label, path, _ in browser.PAGES:
                if visit == "cold" and not times["profile"]:  # the first page: load the app ("/" is the default page, Profile)
                    ms = browser.open_app(driver, server.url + "/", TIMEOUT_S)
                else:
                    ms = browser.click_nav(driver, label, None, TIMEOUT_S)
                times[path].append(ms / 1000)
                notes[path] = shown(driver)
                problems += [f"{path} ({visit}): {e.splitlines()[0]}" for e in browser.exceptions(driver)]

    print(f"dashboard time to first render, data dir {data_dir}")
    print(f"{'page':<10} {'cold s':>7} {'warm s':>7}  shows")
    for _, path, _ in browser.PAGES:
        cold, warm = times[path]
        print(f"{path:<10} {cold:>7.2f} {warm:>7.2f}  {notes[path]}")
    print("cold profile includes loading the app into the browser and the server's first imports")
    for problem in problems:
        print(f"error shown: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
