"""The objects a process needs, built once from settings: engine, session factory, stores.

The CLI and the dashboard both go through this, so they open the same database the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from advisor.config import Settings
from advisor.errors import ConfigError
from advisor.forecaster.backends import configure
from advisor.forecaster.sentiment import configure_default
from advisor.forecaster.tone import ClassifierScorer, classifier_scorer
from db.engine import make_engine, make_session_factory, session_scope
from db.locks import exclusive
from db.migrate import current_revision, head_revision, upgrade


@dataclass
class Runtime:
    settings: Settings
    _engine: Engine | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        configure(self.settings.inference)
        configure_default(self.settings.bundle_dir, self.settings.resolved_model_dir, self._post_classifier)

    def _post_classifier(self) -> ClassifierScorer | None:
        """The LoRA sentiment classifier, its readings cached in this runtime's database (see advisor.forecaster.tone)."""
        try:
            factory = self.session_factory
        except ConfigError:
            factory = None
        return classifier_scorer(self.settings.resolved_model_dir, self.settings.base_model, factory)

    @property
    def database_label(self) -> str:
        """The database URL as it may be printed: without its password."""
        return redacted_url(self.settings.resolved_database_url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = self.settings.resolved_database_url
            try:
                self._engine = make_engine(url)
            except NoSuchModuleError:
                raise ConfigError(f"unknown database kind '{make_url(url).drivername}' in the database URL (use sqlite:///path/advisor.db "
                                  "or postgresql+psycopg://user@host/db)") from None
            except ArgumentError:
                raise ConfigError("the database URL is not a valid URL (e.g. sqlite:///path/advisor.db or postgresql+psycopg://user@host/db)") from None
            except OSError as exc:
                raise ConfigError(f"cannot create the directory of the SQLite database {self.database_label}: {exc.strerror}") from None
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
        try:
            with exclusive(self.engine, "advisor init"):  # two at once on an empty database would both migrate
                before = current_revision(self.engine)
                upgrade(self.engine)
        except DBAPIError as exc:
            raise self._unreachable(exc) from None
        return before, head_revision()

    def database_is_current(self) -> bool:
        """Whether the database exists and is at the newest migration (a missing SQLite file is not created)."""
        parsed = make_url(self.settings.resolved_database_url)
        database = parsed.database or ""
        if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
            if not Path(database).expanduser().is_file():
                return False
        try:
            return current_revision(self.engine) == head_revision()
        except DBAPIError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: DBAPIError) -> ConfigError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        return ConfigError(f"cannot use the database at {self.database_label}: {reason}")

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (an unparseable URL is not printed at all)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an invalid database URL)"
