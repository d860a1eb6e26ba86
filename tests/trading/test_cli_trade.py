"""``advisor trade run | status | kill`` through the real entry point (:func:`advisor.cli.app.main`).

The database is ``trading_db`` (synthetic market, stored views for 2014, user ``trader``), opened by the
CLI with ``--db-url``; ``trader`` gets the moderate questionnaire profile.

The base model's fingerprint: ``trade run`` finds the user's views through the model version that
serves them, keyed by the fingerprint of ``settings.base_model`` (``fingerprint(resolve_model_path(...))``).
That fingerprint is a content hash of the model directory's files (config and weights); nothing is
loaded when ``--tickers`` is not given. So the test points ``ADVISOR_BASE_MODEL`` at a two-file
placeholder model directory and registers the stored views under its fingerprint. (The
``tiny_model_dir`` fixture would also work, but it needs the real default model on disk and a
PyTorch model build, for a hash.)

Alpaca: the CLI has no hook for the bot's clock, and ``--as-of`` with ``--broker alpaca`` is refused
by the factory on purpose (Alpaca paper trades in real time; a 2014 week's views must not be traded on
a real-time account). So against the fake server the bot runs on the real clock: its decision week is
the latest Friday, which has no views, and the run reports that cleanly without sending or selling
anything, while still reconciling with the account (an order placed by hand is adopted and reported).
The full Alpaca trading path, with faults, is proven in ``test_bot_alpaca_faults.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from advisor.cli.app import main
from advisor.forecaster.modelstore import fingerprint
from advisor.trading.alpaca_broker import AlpacaPaperBroker
from advisor.trading.broker import OrderRequest, Side
from db.engine import session_scope
from db.models import DailyBar, ModelVersion, Order, Position
from rlhf.profiles import ARCHETYPES, save_profile
from tests.fakes.alpaca_server import FakeAlpaca
from tests.trading.conftest import WEEK


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["advisor", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(trading_db: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    model = tmp_path / "base-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "note": "placeholder: only its hash is used"}))
    (model / "model.safetensors").write_bytes(b"placeholder weights")
    with session_scope(trading_db) as session:
        save_profile(session, "trader", ARCHETYPES["moderate"])
        session.execute(update(ModelVersion).values(base_fingerprint=fingerprint(model, cache_dir=tmp_path / "models")))
    monkeypatch.setenv("ADVISOR_BASE_MODEL", str(model))
    db_url = f"sqlite:///{tmp_path / 'trade.db'}"

    def call(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, "--db-url", db_url, "--model-dir", str(tmp_path / "models"), *args)

    return call


def bot_orders(factory: sessionmaker[Session], broker: str = "local") -> dict[str, str]:
    with factory() as session:
        return dict(session.execute(select(Order.client_order_id, Order.status).where(Order.broker == broker)).all())


def test_dry_run_then_once_then_again_on_the_local_broker(cli, trading_db) -> None:
    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09", "--dry-run")
    assert code == 0 and "(dry run: nothing sent)" in out and "decision week 2014-05-09 on local" in out
    assert "buy" in out and bot_orders(trading_db) == {}, "a dry run records and sends nothing"

    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09")
    assert code == 0, out
    orders = bot_orders(trading_db)
    assert orders and set(orders.values()) == {"filled"}
    assert all(cid.startswith("rb-u1-20140509-") and f"{cid}: filled" in out for cid in orders)
    assert "account equity 100,000.00" in out

    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09")
    assert code == 0 and "week 2014-05-09 was already rebalanced: nothing new sent" in out
    assert bot_orders(trading_db) == orders

    code, out, _ = cli("trade", "status", "--user", "trader", "--as-of", "2014-05-16")
    assert code == 0 and "local paper account" in out and "last decision week 2014-05-09" in out
    with trading_db() as session:
        held = [p.ticker for p in session.scalars(select(Position).where(Position.broker == "local")) if p.qty]
    assert held and all(ticker in out for ticker in held) and all(cid in out for cid in orders)


def test_kill_blocks_runs_until_resume(cli, trading_db) -> None:
    code, out, _ = cli("trade", "kill", "--user", "trader")
    assert code == 0 and "kill switch on for trader (local): 0 open orders canceled" in out
    code, out, err = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09")
    assert code == 2 and "kill switch is on" in err and "--resume" in err
    assert bot_orders(trading_db) == {}
    code, out, _ = cli("trade", "status", "--user", "trader", "--as-of", "2014-05-09")
    assert code == 0 and "(KILLED)" in out
    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09", "--resume")
    assert code == 0 and bot_orders(trading_db) and set(bot_orders(trading_db).values()) == {"filled"}


def test_user_errors_are_one_readable_line_and_exit_2(cli, trading_db) -> None:
    code, out, err = cli("trade", "run", "--user", "nobody", "--once", "--as-of", "2014-05-09")
    assert code == 2 and "no user named 'nobody'" in err and "advisor profile set --user nobody" in err
    assert "Traceback" not in err + out
    code, _, err = cli("trade", "run", "--user", "trader", "--as-of", "2014-05-09")
    assert code == 2 and "choose one of --once and --loop" in err
    code, _, err = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-32")
    assert code == 2 and "--as-of" in err
    assert bot_orders(trading_db) == {}


@pytest.fixture
def fake(trading_db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAlpaca]:
    with trading_db() as session:
        prices = dict(session.execute(select(DailyBar.ticker, DailyBar.close).where(DailyBar.date == WEEK)).all())
    with FakeAlpaca(prices=prices, market_open=False) as server:  # the real clock: the CLI has no other
        monkeypatch.setenv("ADVISOR_BROKER__ALPACA_BASE_URL", server.base_url)
        monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", server.api_key)
        monkeypatch.setenv("ADVISOR_ALPACA_SECRET_KEY", server.secret_key)
        yield server


def test_alpaca_once_against_the_fake_server(cli, trading_db, fake) -> None:
    fake.set_position("AAA", 10, 45.0)
    by_hand = AlpacaPaperBroker(fake.api_key, fake.secret_key, fake.base_url, timeout_s=2)
    by_hand.submit_order(OrderRequest("placed-by-hand", "CCC", Side.BUY, qty=2))

    code, out, err = cli("trade", "run", "--user", "trader", "--once", "--broker", "alpaca", "--as-of", "2014-05-09")
    assert code == 2 and "Alpaca paper trades in real time" in err and len(fake.requests) == 1, "refused before any request"

    code, out, err = cli("trade", "run", "--user", "trader", "--once", "--broker", "alpaca", "--poll-timeout", "0")
    assert code == 0, err
    assert "on alpaca" in out and "no views for week" in out and "nothing planned" in out
    assert "adopted an unknown order at the broker: placed-by-hand" in out
    assert fake.count_requests("submit_order") == 1, "nothing sent; the held AAA is not sold for lack of views"
    assert fake.positions["AAA"].qty == 10
    with trading_db() as session:
        mirrored = {p.ticker: p.qty for p in session.scalars(select(Position).where(Position.broker == "alpaca"))}
        assert session.scalar(select(func.count()).select_from(Order).where(Order.broker == "alpaca", Order.adopted.is_(False))) == 0
    assert mirrored == {"AAA": 10}
    assert bot_orders(trading_db, "alpaca") == {"placed-by-hand": "accepted"}

    code, out, _ = cli("trade", "status", "--user", "trader", "--broker", "alpaca")
    assert code == 0 and "alpaca paper account" in out and "AAA" in out and "placed-by-hand" in out

    code, out, _ = cli("trade", "kill", "--user", "trader", "--broker", "alpaca")
    assert code == 0 and "kill switch on for trader (alpaca): 1 open orders canceled" in out
    assert fake.order_by_client_id("placed-by-hand").status == "canceled"
    assert bot_orders(trading_db, "alpaca") == {"placed-by-hand": "canceled"}
    code, _, err = cli("trade", "run", "--user", "trader", "--once", "--broker", "alpaca")
    assert code == 2 and "kill switch is on" in err
    assert fake.count_requests("submit_order") == 1


def test_alpaca_live_url_is_refused_by_the_cli(cli, monkeypatch) -> None:
    monkeypatch.setenv("ADVISOR_BROKER__ALPACA_BASE_URL", "https://api.alpaca.markets")
    monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", "PKLIVEKEY")
    monkeypatch.setenv("ADVISOR_ALPACA_SECRET_KEY", "live-secret-value")
    code, out, err = cli("trade", "run", "--user", "trader", "--once", "--broker", "alpaca")
    assert code == 2 and "never live trading" in err
    assert "live-secret-value" not in out + err


def test_the_plan_numbers_the_slices_of_an_order_above_the_per_order_cap(cli, trading_db, monkeypatch) -> None:
    monkeypatch.setenv("ADVISOR_BROKER__MAX_ORDER_NOTIONAL", "5000")
    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09", "--dry-run")
    assert code == 0, out
    assert "slice" in out and "1/" in out and "2/" in out, "identical slices are numbered, not shown as duplicate rows"


def table_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    from db.models import Base

    with factory() as session:
        return {table.name: session.scalar(select(func.count()).select_from(table)) for table in Base.metadata.sorted_tables}


def test_a_dry_run_writes_nothing_at_all(cli, trading_db) -> None:
    before = table_counts(trading_db)
    code, out, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09", "--dry-run")
    assert code == 0 and "(dry run: nothing sent)" in out
    assert table_counts(trading_db) == before, "a dry run must not create accounts, bot state, logs or orders"


def test_trading_an_earlier_week_than_the_last_one_is_refused(cli, trading_db) -> None:
    code, _, _ = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-16")
    assert code == 0
    before = table_counts(trading_db)
    code, out, err = cli("trade", "run", "--user", "trader", "--once", "--as-of", "2014-05-09")
    assert code != 0 and "before the last week this account traded (2014-05-16)" in out + err and "Traceback" not in out + err
    assert table_counts(trading_db) == before
