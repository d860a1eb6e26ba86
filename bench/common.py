"""What the benchmark scripts share: the default bundle location and a scratch database with it imported."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO.parent / "shared" / "data" / "stocknet"


def prepare(db_path: Path, bundle: Path, model_dir: Path):  # type: ignore[no-untyped-def]
    """Fetch the default model (once) and import ``bundle`` into a fresh SQLite file at ``db_path``."""
    from advisor.data.importer import import_bundle
    from advisor.forecaster.modelstore import fetch_default_model
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade

    fetch_default_model(model_dir, progress=False)
    engine = make_engine(f"sqlite:///{db_path}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, bundle, progress=False)
    return factory
