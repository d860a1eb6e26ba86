"""Forecaster fixtures: a small imported bundle and a runtime-like set-up around the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.importer import import_bundle
from advisor.forecaster import loading
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade
from tests.helpers import make_bundle


@pytest.fixture
def market(tmp_path: Path) -> sessionmaker[Session]:
    """A migrated SQLite database holding a synthetic bundle (3 tickers, 2014-01 .. 2014-06)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'market.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, make_bundle(tmp_path / "bundle", end=date(2014, 6, 30)), progress=False)
    return factory


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> Iterator[None]:
    """Tests that attach adapters must not see adapters attached by earlier tests."""
    loading.clear_cache()
    yield
    loading.clear_cache()
