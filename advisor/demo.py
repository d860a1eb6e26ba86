"""The end-to-end demo on the offline bundle (``make demo`` / ``advisor demo``).

Each step is a plain function over the runtime, printing what it did; the demo is re-runnable (a
second run finds the data already imported and says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from rich.console import Console

from advisor.data.importer import import_bundle
from advisor.data.queries import store_summary
from advisor.data.store import SqlMarketStore
from advisor.data.windows import build_window, format_window, weekly_label
from advisor.errors import AdvisorError
from advisor.runtime import Runtime

DEMO_TICKER = "AAPL"
DEMO_DATE = date(2015, 6, 5)


@dataclass
class DemoOptions:
    bundle: Path | None
    ticker: str = DEMO_TICKER
    on: date = DEMO_DATE


def run_demo(rt: Runtime, options: DemoOptions, console: Console) -> None:
    step_database(rt, console)
    if not step_import(rt, options, console):
        return
    step_window(rt, options, console)


def _heading(console: Console, text: str) -> None:
    console.rule(f"[bold]{text}")


def step_database(rt: Runtime, console: Console) -> None:
    _heading(console, "1. Database")
    before, after = rt.init_database()
    state = "up to date" if before == after else f"migrated {before or 'empty'} -> {after}"
    console.print(f"{rt.settings.resolved_database_url}: {state}")


def step_import(rt: Runtime, options: DemoOptions, console: Console) -> bool:
    _heading(console, "2. Market data")
    bundle = options.bundle
    if bundle is None or not bundle.is_dir():
        with rt.session() as session:
            summary = store_summary(session)
        if summary.bars:
            console.print(f"no bundle given; using the {summary.bars} bars already stored")
            return True
        console.print(
            "The offline bundle was not found"
            + (f" at {bundle}" if bundle else "")
            + ". Import one with 'advisor data import DIR' (stocknet format), or with a network connection "
            "fetch live data: 'advisor data sync --tickers AAPL,MSFT --start 2024-01-01'."
        )
        return False
    result = import_bundle(rt.session_factory, bundle, progress=True)
    for line in result.lines():
        console.print(line)
    with rt.session() as session:
        summary = store_summary(session)
    console.print(
        f"store now holds {summary.tickers_with_prices} tickers, {summary.bars:,} daily bars "
        f"({summary.first_date} .. {summary.last_date}) and {summary.texts:,} text items"
    )
    return True


def step_window(rt: Runtime, options: DemoOptions, console: Console) -> None:
    _heading(console, f"3. The forecaster's point-in-time window: {options.ticker} on {options.on}")
    with rt.session() as session:
        store = SqlMarketStore(session)
        try:
            window = build_window(store, options.ticker, options.on)
        except AdvisorError as exc:
            console.print(f"cannot build the example window: {exc}")
            return
        console.print(
            f"[dim]decision session {window.decision_date}; information cut-off {window.as_of:%Y-%m-%d %H:%M} UTC; "
            f"target week {window.target_start} .. {window.target_end}[/dim]"
        )
        console.print(format_window(window), markup=False, highlight=False, soft_wrap=True)
        try:
            label = weekly_label(store, window.ticker, window.decision_date)
            console.print(f"\n[bold]what happened next[/bold] (the label, never shown to the model): {label.text} ({label.return_pct:+.2f}%)")
        except AdvisorError as exc:
            console.print(f"(no label yet: {exc})")
