"""Background jobs of the dashboard: one per user and kind, progress and an honest estimate, errors as sentences."""

from __future__ import annotations

import threading
import time

from advisor.errors import AdvisorError
from dashboard import background


def wait(job: background.BackgroundJob, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while job.running:
        assert time.monotonic() < deadline, "the job never finished"
        time.sleep(0.01)


def test_a_job_runs_off_the_callers_thread_and_reports_progress() -> None:
    release = threading.Event()
    seen: list[str] = []

    def work(job: background.BackgroundJob) -> str:
        seen.append(threading.current_thread().name)
        job.report(1, 4, "writing views")
        release.wait(5)
        job.report(4, 4)
        return "Wrote 4 views"

    job = background.start(901, "views", "Views of 4 tickers", work)
    deadline = time.monotonic() + 5
    while job.done == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert job.running and seen == ["advisor-views-901"]
    assert "writing views · 1 of 4 done" in job.describe() and "left" in job.describe()
    left = job.remaining_s()
    assert left is not None and abs(left - 3 * job.elapsed()) < 0.5, "three more quarters at the rate so far"
    assert background.start(901, "views", "again", work) is job, "a running job is not started twice"
    release.set()
    wait(job)
    assert (job.result, job.error, job.remaining_s()) == ("Wrote 4 views", None, 0.0)


def test_the_next_job_of_a_kind_is_estimated_from_the_last_ones_duration() -> None:
    first = background.start(902, "pair", "a pair", lambda job: time.sleep(0.2) or "done")
    wait(first)
    gate = threading.Event()
    second = background.start(902, "pair", "a pair", lambda job: gate.wait(5) and "done")
    assert second is not first and second.expected_s is not None and second.expected_s >= 0.2
    assert "about" in second.describe()
    gate.set()
    wait(second)


def test_failures_become_sentences() -> None:
    def no_data(job: background.BackgroundJob) -> str:
        raise AdvisorError("no prices for ZZZ on 2015-06-05")

    def bug(job: background.BackgroundJob) -> str:
        raise KeyError("x")

    clear = background.start(903, "views", "Views", no_data)
    odd = background.start(904, "views", "Views", bug)
    wait(clear)
    wait(odd)
    assert clear.error == "no prices for ZZZ on 2015-06-05"
    assert odd.error == "Something went wrong: KeyError: 'x'"
