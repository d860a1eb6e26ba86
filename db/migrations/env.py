"""Alembic environment: uses the engine handed over by db.migrate, or sqlalchemy.url."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from db.engine import make_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    engine: Engine | None = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            from advisor.config import load_settings

            url = load_settings().resolved_database_url
        engine = make_engine(url)
    with engine.connect() as connection:
        is_sqlite = connection.dialect.name == "sqlite"
        if is_sqlite:
            # Batch mode rebuilds a table (copy, drop, rename); with foreign keys on, dropping a table
            # that other rows reference fails. SQLite only honours this pragma outside a transaction,
            # so it is set first and the references are checked once the migration has committed.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if is_sqlite:
            _check_foreign_keys(connection)
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    """Fail loudly if a table rebuild left a dangling reference (it should never)."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left {len(broken)} broken foreign key reference(s): {broken[:5]}")


run_migrations()
