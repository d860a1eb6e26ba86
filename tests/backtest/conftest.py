"""Backtest fixtures: a synthetic market and views written directly into the forecasts table."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.importer import import_bundle
from advisor.data.windows import weekly_decision_dates
from db.engine import make_engine, make_session_factory, session_scope
from db.migrate import upgrade
from db.models import Forecast, ModelVersion
from tests.helpers import make_bundle


@pytest.fixture
def market(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'bt.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(tmp_path / "bundle", tickers=("AAA", "BBB", "CCC", "DDD"), start=date(2013, 10, 1), end=date(2014, 9, 30), tweets_per_session=0), progress=False)
    return factory


def write_views(factory: sessionmaker[Session], start: date, end: date, seed: int = 0, unparsed_every: int = 0) -> int:
    """A model version with one greedy view per ticker and week (random directions and bins)."""
    rng = np.random.default_rng(seed)
    with session_scope(factory) as session:
        version = ModelVersion(key=f"test+{seed}", name="test views", kind="sft", base_model_id="test", base_fingerprint="0" * 64)
        session.add(version)
        session.flush()
        k = 0
        for day in weekly_decision_dates(start, end):
            for ticker in ("AAA", "BBB", "CCC", "DDD"):
                k += 1
                unparsed = unparsed_every and k % unparsed_every == 0
                low = int(rng.integers(0, 6))
                session.add(
                    Forecast(
                        forecast_key=f"{seed}-{ticker}-{day}", ticker=ticker, forecast_date=day,
                        as_of=market_calendar.session_close(day), target_start=market_calendar.next_session_after(day),
                        target_end=market_calendar.session_on_or_before(day + timedelta(days=7)), model_version_id=version.id, prompt_hash="p" * 64, prompt_text="prompt",
                        raw_text="text", parse_status="unparsed" if unparsed else "ok",
                        direction=None if unparsed else ("up" if rng.random() < 0.6 else "down"),
                        bin_low=None if unparsed else float(low), bin_high=None if unparsed or low == 5 else float(low + 1),
                        decoding={"mode": "greedy"}, seed=0, candidate_index=0, group_key=f"g-{seed}-{ticker}-{day}",
                    )
                )
        return version.id


@pytest.fixture
def views(market) -> int:
    return write_views(market, date(2014, 3, 1), date(2014, 8, 29), unparsed_every=7)
