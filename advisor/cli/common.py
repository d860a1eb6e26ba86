"""Shared CLI plumbing: the runtime in the Typer context, date parsing, console output."""

from __future__ import annotations

from datetime import date

import typer
from rich.console import Console

from advisor.errors import AdvisorError
from advisor.runtime import Runtime

console = Console()
err_console = Console(stderr=True)


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_root().obj
    assert isinstance(obj, Runtime), "the root callback sets the runtime"
    return obj


def ensure_database(rt: Runtime) -> None:
    """Commands that read or write data need a migrated database; say how to get one."""
    if not rt.database_is_current():
        raise AdvisorError(
            f"the database at {rt.settings.resolved_database_url} is not initialised or not migrated: run 'advisor init'"
        )


def parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise AdvisorError(f"{option}: '{value}' is not a date (expected YYYY-MM-DD)") from exc


def parse_tickers(value: str) -> list[str]:
    tickers = [t.strip().upper() for t in value.split(",") if t.strip()]
    if not tickers:
        raise AdvisorError("--tickers: give at least one ticker, e.g. AAPL,MSFT")
    return tickers
