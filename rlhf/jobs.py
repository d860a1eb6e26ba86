"""Tuning runs started from the dashboard: a separate process, followed through its log and the database.

A run takes minutes; running it inside the web process would block the page and die with it. The job is
the same command a user would type (``advisor rlhf run --user U``) in its own process, with its output in
``<data dir>/logs``; the page shows the log's tail and the TrainingRun rows (running, succeeded, failed
with the error).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import TrainingRun
from db.types import utcnow


@dataclass(frozen=True)
class Job:
    pid: int
    log_path: Path


def start_tuning(data_dir: Path, database_url: str, user: str, extra_args: list[str] | None = None) -> Job:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"rlhf-{user}-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    command = [sys.executable, "-m", "advisor.cli.app", "--db-url", database_url, "--data-dir", str(data_dir), "rlhf", "run", "--user", user, *(extra_args or [])]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Job(process.pid, log_path)


def latest_log(data_dir: Path, user: str) -> Path | None:
    logs = sorted((data_dir / "logs").glob(f"rlhf-{user}-*.log"))
    return logs[-1] if logs else None


def tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines()[-lines:])


def training_runs(session: Session, user_id: int, limit: int = 10) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).where(TrainingRun.user_id == user_id).order_by(TrainingRun.id.desc()).limit(limit)))


def run_estimate(runs: list[TrainingRun], now: datetime | None = None) -> str | None:
    """For the newest run while it is still running: how long it has run and, from the last finished run
    of the same kind, about how long is left (None when nothing is running)."""
    if not runs or runs[0].status != "running":
        return None
    current = runs[0]
    now = now or utcnow()
    elapsed = (now - current.started_at).total_seconds()
    said = f"The {current.kind} run has been going for {elapsed / 60:.0f} min"
    earlier = next((r for r in runs[1:] if r.kind == current.kind and r.status == "succeeded" and r.finished_at is not None), None)
    if earlier is None:
        return said + " (no earlier run of this kind to estimate from)."
    took = (earlier.finished_at - earlier.started_at).total_seconds()  # type: ignore[operator]
    left = max(0.0, took - elapsed)
    return said + f"; the last one took {took / 60:.0f} min, so about {left / 60:.0f} min are left" + (" (it is taking longer this time)." if took < elapsed else ".")
