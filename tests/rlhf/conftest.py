"""RLHF fixtures: a market database and candidate views written directly."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.importer import import_bundle
from db.engine import make_engine, make_session_factory, session_scope
from db.migrate import upgrade
from db.models import Forecast, ModelVersion, User
from tests.helpers import make_bundle

VIEW_TEXT = (
    "[Positive Developments]\n1. Demand looks strong.\n[Potential Concerns]\n1. Costs are rising.\n"
    "[Prediction & Analysis]\nPrediction: {prediction}\nAnalysis: Balanced picture."
)
MESSAGES = [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": "Predict AAA next week."}]


@pytest.fixture
def rlhf_db(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'rlhf.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(tmp_path / "bundle", end=date(2014, 6, 30), tweets_per_session=0), progress=False)
    return factory


def add_candidates(factory, predictions: list[str], *, owner: str | None = None, ticker: str = "AAA", day: date = date(2014, 3, 7)) -> list[int]:
    """Candidate views of one prompt (same prompt hash), as a sampled generation would store them."""
    with session_scope(factory) as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.key == "cand"))
        if version is None:
            version = ModelVersion(key="cand", name="candidates", kind="sft", base_model_id="b", base_fingerprint="f")
            session.add(version)
            session.flush()
        user_id = session.scalar(select(User.id).where(User.name == owner)) if owner else None
        group = f"{ticker}-{day}-{owner}"
        ids = []
        for k, prediction in enumerate(predictions):
            row = Forecast(
                forecast_key=f"{group}-{k}", ticker=ticker, forecast_date=day, as_of=market_calendar.session_close(day),
                target_start=market_calendar.next_session_after(day), target_end=market_calendar.session_on_or_before(day + timedelta(days=7)),
                model_version_id=version.id, user_id=user_id,
                prompt_hash=f"hash-{group}", prompt_text="prompt", prompt_messages=MESSAGES, raw_text=VIEW_TEXT.format(prediction=prediction),
                parse_status="ok", decoding={"mode": "sample"}, seed=1, candidate_index=k, group_key=group,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
        return ids
