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
