"""Shared CLI plumbing: the runtime in the Typer context, date parsing, console output."""

from __future__ import annotations

import logging
import os
from datetime import date

import typer
from rich.console import Console

from advisor.errors import AdvisorError
from advisor.forecaster.backends import BACKENDS, configure
from advisor.runtime import Runtime


def _console(stderr: bool = False) -> Console:
    """A terminal keeps its width; piped output (logs, CI, ``make demo > log``) gets 120 columns instead of
    rich's 80, so result tables are not cut to ellipses."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 120
    return out


console = _console()
err_console = _console(stderr=True)


def quiet_third_party_logs() -> None:
    """bitsandbytes warns on import that an optional CPU 4-bit kernel package is absent; 4-bit loading is only
    offered on CUDA here, so the line is noise on every command."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def runtime(ctx: typer.Context) -> Runtime:
    obj = ctx.find_root().obj
    assert isinstance(obj, Runtime), "the root callback sets the runtime"
    return obj


def ensure_database(rt: Runtime) -> None:
    """Commands that read or write data need a migrated database; say how to get one."""
    if not rt.database_is_current():
        raise AdvisorError(
            f"the database at {rt.database_label} is not initialised or not migrated: run 'advisor init'"
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


BACKEND_HELP = "Inference backend: auto (the fast engine where supported), engine, transformers, or openai (a server)."


def use_backend(rt: Runtime, backend: str | None) -> None:
    """A ``--backend`` flag overrides the configured inference backend for this command."""
    if backend is None:
        return

    if backend not in ("auto", *BACKENDS):
        raise AdvisorError(f"--backend: '{backend}' is not one of auto, {', '.join(BACKENDS)}")
    configure(rt.settings.inference.model_copy(update={"backend": backend}))
