"""Dashboard fixtures: a temporary database with market data, a tiny model with a registered SFT adapter,
shared views, and the environment that points the app at all of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.importer import import_bundle
from advisor.data.windows import weekly_decision_dates
from advisor.forecaster.loading import ModelSpec, clear_cache, load_model, write_adapter_meta
from advisor.forecaster.modelstore import fingerprint
from advisor.forecaster.versions import base_key, ensure_model_version
from db.engine import make_engine, make_session_factory, session_scope
from db.migrate import upgrade
from db.models import Forecast
from tests.helpers import make_bundle
from tests.rlhf.conftest import VIEW_TEXT

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
TICKERS = ("AAA", "BBB", "CCC", "DDD")


@dataclass
class DashEnv:
    factory: sessionmaker[Session]
    data_dir: Path
    sft_version: int


def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, *, with_data: bool = True) -> DashEnv:
    data_dir = tmp_path / "data"
    model_dir = tmp_path / "models"
    db = data_dir / "advisor.db"
    data_dir.mkdir()
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    factory = make_session_factory(engine)
    monkeypatch.setenv("ADVISOR_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ADVISOR_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("ADVISOR_BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("ADVISOR_BROKER__MAX_ORDER_NOTIONAL", "60000")
    if not with_data:
        return DashEnv(factory, data_dir, 0)
    import_bundle(factory, make_bundle(tmp_path / "bundle", tickers=TICKERS, start=date(2013, 10, 1), end=date(2014, 9, 30), tweets_per_session=1), progress=False)
    clear_cache()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    adapter = model_dir / "adapters" / "tiny-sft"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(adapter)
    fp = fingerprint(tiny_model_dir, cache_dir=model_dir)
    write_adapter_meta(adapter, base_model=str(tiny_model_dir), base_fingerprint=fp, extra={"kind": "sft", "parent_key": base_key(fp)})
    handle = load_model(ModelSpec(base=str(tiny_model_dir), adapter=adapter), model_dir)
    rng = np.random.default_rng(0)
    with session_scope(factory) as session:
        version = ensure_model_version(session, handle, kind="sft", name="tiny-sft")
        for day in weekly_decision_dates(date(2014, 3, 1), date(2014, 8, 29)):
            for ticker in TICKERS:
                low = int(rng.integers(0, 5))
                direction = "up" if rng.random() < 0.6 else "down"
                text = VIEW_TEXT.format(prediction=f"{direction.title()} by {low}-{low + 1}%")
                session.add(Forecast(
                    forecast_key=f"{ticker}-{day}", ticker=ticker, forecast_date=day, as_of=market_calendar.session_close(day),
                    target_start=market_calendar.next_session_after(day), target_end=market_calendar.session_on_or_before(day + timedelta(days=7)), model_version_id=version.id,
                    prompt_hash=f"p-{ticker}-{day}", prompt_text="prompt", prompt_messages=[{"role": "user", "content": "p"}],
                    raw_text=text, parse_status="ok", direction=direction, bin_low=float(low), bin_high=float(low + 1),
                    decoding={"mode": "greedy"}, seed=0, candidate_index=0, group_key=f"g-{ticker}-{day}",
                ))
        version_id = version.id
    return DashEnv(factory, data_dir, version_id)


@pytest.fixture(autouse=True)
def _no_background_jobs_from_other_tests() -> None:
    """The dashboard's job registry lives for the server process; each test is a fresh server (user ids repeat)."""
    from dashboard import background

    background._registry.clear()


@pytest.fixture
def dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> DashEnv:
    return make_env(tmp_path, monkeypatch, tiny_model_dir)


@pytest.fixture
def empty_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> DashEnv:
    return make_env(tmp_path, monkeypatch, tiny_model_dir, with_data=False)
