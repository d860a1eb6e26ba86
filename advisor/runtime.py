"""The objects a process needs, built once from settings: engine, session factory, stores.

The CLI and the dashboard both go through this, so they open the same database the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from advisor.config import Settings
from db.engine import make_engine, make_session_factory, session_scope
from db.migrate import current_revision, head_revision, upgrade


@dataclass
class Runtime:
    settings: Settings
    _engine: Engine | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from advisor.forecaster.backends import configure
        from advisor.forecaster.sentiment import configure_default

        configure(self.settings.inference)
        configure_default(self.settings.bundle_dir, self.settings.resolved_model_dir)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.resolved_database_url)
        return self._engine

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with session_scope(self.session_factory) as session:
            yield session

    def init_database(self) -> tuple[str | None, str]:
        """Create or migrate the database; returns (revision before, revision after)."""
        before = current_revision(self.engine)
        upgrade(self.engine)
        return before, head_revision()

    def database_is_current(self) -> bool:
        return current_revision(self.engine) == head_revision()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
