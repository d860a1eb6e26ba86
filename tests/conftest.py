"""Shared fixtures.

Every test runs in its own temporary working directory with no ``ADVISOR_*`` variables, so a developer's
config never leaks in. Database tests that take ``db_url`` run against SQLite and, when
``ADVISOR_TEST_POSTGRES_URL`` is set (CI starts a local server), against PostgreSQL too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from db.engine import make_engine, make_session_factory  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from tests.helpers import make_bundle  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_BUNDLE = (REPO_ROOT.parent / "shared" / "data" / "stocknet").resolve()
POSTGRES_URL = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("ADVISOR_REQUIRE_POSTGRES") == "1"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("ADVISOR_") and name not in ("ADVISOR_TEST_POSTGRES_URL", "ADVISOR_REQUIRE_POSTGRES"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def _postgres_params() -> list:
    if POSTGRES_URL:
        return [pytest.param("postgres", marks=pytest.mark.postgres)]
    if REQUIRE_POSTGRES:
        return [pytest.param("postgres", marks=pytest.mark.postgres)]
    return [pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.skip(reason="ADVISOR_TEST_POSTGRES_URL not set (CI sets it)")])]


@pytest.fixture(params=["sqlite", *_postgres_params()])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a wiped PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if not POSTGRES_URL:
        pytest.fail("ADVISOR_REQUIRE_POSTGRES=1 but ADVISOR_TEST_POSTGRES_URL is not set")
    engine = make_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield POSTGRES_URL


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database only (for tests that do not need to run on both backends)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'sqlite.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def sqlite_factory(sqlite_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(sqlite_engine)


@pytest.fixture
def synthetic_bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


@pytest.fixture(scope="session")
def real_bundle() -> Path:
    if not (REAL_BUNDLE / "prices.csv.gz").is_file():
        pytest.skip(f"the offline data bundle is not at {REAL_BUNDLE}")
    return REAL_BUNDLE


@pytest.fixture(scope="session")
def real_db(tmp_path_factory: pytest.TempPathFactory, real_bundle: Path) -> sessionmaker[Session]:
    """The real bundle imported once into a SQLite file shared by read-only tests."""
    from advisor.data.importer import import_bundle

    path = tmp_path_factory.mktemp("realdb") / "real.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, real_bundle, progress=False)
    return factory


TEST_MODEL_CACHE = Path(os.environ.get("ADVISOR_TEST_MODEL_CACHE", REPO_ROOT / "var" / "test-models"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model, fetched once per machine by the same code the demo uses."""
    from advisor.forecaster.modelstore import fetch_default_model

    fetch_default_model(TEST_MODEL_CACHE, progress=False)
    return TEST_MODEL_CACHE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path) -> Path:
    """A tiny random-weight Llama with the default model's tokenizer and chat template (fast tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from advisor.config import DEFAULT_BASE_MODEL

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir / DEFAULT_BASE_MODEL)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    root = tmp_path_factory.mktemp("models")
    path = root / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_sft(tmp_path_factory: pytest.TempPathFactory, default_model_dir: Path, real_bundle: Path):
    """The real bundle in a fresh database and a short SFT adapter of the default model (12 steps of 2),
    trained once per session for the slow tests that need a format-following adapter."""
    from datetime import date

    from advisor.config import DEFAULT_BASE_MODEL
    from advisor.data.importer import import_bundle
    from advisor.forecaster.sentiment import find_tfns, load_scorer
    from advisor.forecaster.sft import SFTOptions, train_sft

    root = tmp_path_factory.mktemp("real-sft")
    model_dir = root / "models"
    model_dir.mkdir()
    (model_dir / DEFAULT_BASE_MODEL).symlink_to(default_model_dir / DEFAULT_BASE_MODEL)
    engine = make_engine(f"sqlite:///{root / 'sft.db'}")
    upgrade(engine)
    factory = make_session_factory(engine)
    import_bundle(factory, real_bundle, progress=False)
    options = SFTOptions(start=date(2014, 1, 1), end=date(2015, 3, 31), base_model=DEFAULT_BASE_MODEL, max_steps=12, batch_size=2, check_prompts=0)
    result = train_sft(factory, model_dir, options, load_scorer(find_tfns(real_bundle)), progress=False)
    return factory, model_dir, result
