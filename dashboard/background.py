"""Generation off the page's thread: a job per user and kind, its progress and an estimate of what is left.

Why: writing views or an A/B pair takes seconds to minutes; run inside the page's script, it blocks
that user's page (nothing else can be clicked, and leaving the page loses the work). A job here runs
in a thread of the Streamlit server process (the model is loaded once per process anyway), the page
returns at once, and a fragment polls the job and shows done/total, the time so far and the estimate:
the rate so far once something is done, before that the same kind of job's last duration.
Tuning runs in its own process instead (``rlhf.jobs``): it takes minutes of full CPU and must survive
a server restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st

from advisor.errors import AdvisorError


@dataclass
class BackgroundJob:
    """One piece of work a page started; written by its thread, read by the page."""

    kind: str
    label: str
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 0
    step: str = "starting"
    finished: float | None = None
    error: str | None = None
    result: str | None = None
    expected_s: float | None = None  # the last such job's duration, the estimate before any progress
    seen: bool = False  # the page has shown its outcome once

    @property
    def running(self) -> bool:
        return self.finished is None

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def remaining_s(self) -> float | None:
        """Seconds left: from the rate so far once some of the work is done, else from the last such job."""
        if not self.running:
            return 0.0
        if self.done and self.total:
            return self.elapsed() / self.done * (self.total - self.done)
        if self.expected_s is not None:
            return max(0.0, self.expected_s - self.elapsed())
        return None

    def report(self, done: int, total: int, step: str | None = None) -> None:
        self.done, self.total = done, total
        if step is not None:
            self.step = step

    def describe(self) -> str:
        left = self.remaining_s()
        parts = [self.step]
        if self.total:
            parts.append(f"{self.done} of {self.total} done")
        parts.append(f"{self.elapsed():.0f} s so far")
        if left is not None:
            parts.append(f"about {left:.0f} s left")
        return " · ".join(parts)


@st.cache_resource(show_spinner=False)
def _registry() -> tuple[dict[tuple[int, str], BackgroundJob], dict[str, float], threading.Lock]:
    """Jobs by (user id, kind), the last duration by kind, and their lock: one per server process."""
    return {}, {}, threading.Lock()


def current(user_id: int, kind: str) -> BackgroundJob | None:
    jobs, _, lock = _registry()
    with lock:
        return jobs.get((user_id, kind))


def start(user_id: int, kind: str, label: str, work: Callable[[BackgroundJob], str]) -> BackgroundJob:
    """Start ``work(job)`` in a thread unless this user already has such a job running (that one is returned).

    ``work`` reports progress with ``job.report`` and returns the sentence to show when it is done; an
    exception becomes the job's error (a readable message, never a traceback).
    """
    jobs, durations, lock = _registry()
    with lock:
        existing = jobs.get((user_id, kind))
        if existing is not None and existing.running:
            return existing
        job = BackgroundJob(kind, label, expected_s=durations.get(kind))
        jobs[(user_id, kind)] = job

    def run() -> None:
        try:
            job.result = work(job)
        except AdvisorError as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page as a sentence
            job.error = f"Something went wrong: {type(exc).__name__}: {exc}"
        finally:
            job.finished = time.monotonic()
            if job.error is None:
                with lock:
                    durations[kind] = job.elapsed()

    threading.Thread(target=run, name=f"advisor-{kind}-{user_id}", daemon=True).start()
    return job


def show(user_id: int, kind: str) -> None:
    """The job's state on the page: polled every second while it runs, then one full rerun when it ends
    (so the page shows what the job wrote), then its outcome."""
    job = current(user_id, kind)
    if job is None:
        return
    if job.running or not job.seen:
        _poll(user_id, kind)
    elif job.error:
        st.error(f"{job.label} failed after {job.elapsed():.0f} s: {job.error}")
    elif job.result:
        st.success(f"{job.result} ({job.elapsed():.0f} s)")


@st.fragment(run_every=1.0)
def _poll(user_id: int, kind: str) -> None:
    job = current(user_id, kind)
    if job is None:
        return
    if job.running:
        st.progress(job.done / job.total if job.total else 0.0, text=f"{job.label}: {job.describe()}")
        return
    job.seen = True
    st.rerun(scope="app")
