"""A running tuning job says how long it has run and, from the last finished run of its kind, about how long is left."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from db.engine import session_scope
from db.models import TrainingRun, User
from db.types import utcnow
from rlhf.jobs import run_estimate, training_runs


def test_a_running_run_is_estimated_from_the_last_finished_one(sqlite_factory) -> None:
    now = utcnow()
    with session_scope(sqlite_factory) as session:
        user = User(name="ann")
        session.add(user)
        session.flush()
        session.add(TrainingRun(kind="dpo", status="succeeded", user_id=user.id, started_at=now - timedelta(minutes=60), finished_at=now - timedelta(minutes=48)))
        session.add(TrainingRun(kind="dpo", status="running", user_id=user.id, started_at=now - timedelta(minutes=3)))
    with sqlite_factory() as session:
        user_id = session.scalar(select(User.id))
        runs = training_runs(session, user_id)
        said = run_estimate(runs, now)
        assert said == "The dpo run has been going for 3 min; the last one took 12 min, so about 9 min are left."
        late = run_estimate(runs, now + timedelta(minutes=20))
        assert late is not None and "about 0 min are left (it is taking longer this time)" in late
        assert run_estimate(runs[1:], now) is None, "nothing running, nothing to say"
        assert "no earlier run of this kind" in str(run_estimate(runs[:1], now))
