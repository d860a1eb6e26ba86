"""``advisor data ...``: import, sync, show and window."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from advisor import market_calendar
from advisor.cli.common import console, ensure_database, parse_date, parse_tickers, runtime
from advisor.data.importer import import_bundle
from advisor.data.queries import ticker_overview
from advisor.data.store import SqlMarketStore
from advisor.data.windows import DEFAULT_TEXTS_PER_WEEK, DEFAULT_WEEKS, build_window, format_window, weekly_label
from advisor.forecaster.sentiment import find_tfns, save_default

app = typer.Typer(help="Market data: import the offline bundle, sync from yfinance, inspect.", no_args_is_help=True)


@app.command("import")
def import_command(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="Bundle directory (stocknet format: companies, prices, tweets)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Validate a bundle completely, then import it in one transaction (re-importing adds nothing)."""
    rt = runtime(ctx)
    ensure_database(rt)
    summary = import_bundle(rt.session_factory, directory, progress=not quiet)
    for line in summary.lines():
        console.print(line)
    tfns = find_tfns(directory)
    if tfns is not None:
        save_default(tfns, rt.settings.resolved_model_dir)
        console.print("post sentiment: naive Bayes trained on the TFNS set next to the bundle (kept with the models)")


@app.command("sync")
def sync_command(
    ctx: typer.Context,
    tickers: str = typer.Option(..., help="Comma-separated tickers, e.g. AAPL,MSFT."),
    start: str = typer.Option(..., help="First date (YYYY-MM-DD); later syncs only fetch what is missing."),
    end: str | None = typer.Option(None, help="Last date (default: today)."),
    news: bool = typer.Option(True, help="Also fetch news and basic financials where yfinance has them."),
) -> None:
    """Fetch daily bars (and news, basic financials) from Yahoo Finance through yfinance."""
    from advisor.data.yahoo import YahooProvider, sync_tickers

    rt = runtime(ctx)
    ensure_database(rt)
    provider = YahooProvider(timeout_s=rt.settings.yfinance_timeout_s, retries=rt.settings.yfinance_retries)
    summary = sync_tickers(
        rt.session_factory,
        provider,
        parse_tickers(tickers),
        parse_date(start, "--start"),
        parse_date(end, "--end") if end else None,
        include_news=news,
    )
    for line in summary.lines():
        console.print(line)


@app.command("show")
def show_command(
    ctx: typer.Context,
    ticker: str = typer.Argument(..., help="Ticker symbol."),
    as_of: str | None = typer.Option(None, "--as-of", help="Show only what was known at this date's close."),
    rows: int = typer.Option(10, help="How many recent bars and texts to list."),
) -> None:
    """What the store holds for a ticker (optionally as of a date)."""
    rt = runtime(ctx)
    ensure_database(rt)
    cutoff = None
    if as_of:
        day = market_calendar.session_on_or_before(parse_date(as_of, "--as-of"))
        cutoff = market_calendar.session_close(day)
    with rt.session() as session:
        overview = ticker_overview(SqlMarketStore(session), ticker.upper(), as_of=cutoff, rows=rows)
    console.print(f"[bold]{overview.company.name}[/bold] ({overview.company.ticker}), sector {overview.company.sector}")
    console.print(
        f"bars: {overview.bar_count} ({overview.first_date} .. {overview.last_date}); text items: {overview.text_count}"
        + (f"; as of {overview.as_of:%Y-%m-%d %H:%M} UTC" if overview.as_of else "")
    )
    table = Table("date", "open", "high", "low", "close", "adj close", "volume", title="latest bars")
    for bar in overview.recent_bars.itertuples():
        table.add_row(
            str(bar.Index), f"{bar.open:.2f}", f"{bar.high:.2f}", f"{bar.low:.2f}",
            f"{bar.close:.2f}", f"{bar.adj_close:.2f}", f"{bar.volume:,}",
        )
    console.print(table)
    texts = Table("published (UTC)", "session", "text", title="latest text items")
    for item in overview.recent_texts.itertuples():
        texts.add_row(f"{item.published_at:%Y-%m-%d %H:%M}", str(item.session_date), item.text[:100])
    console.print(texts)


@app.command("window")
def window_command(
    ctx: typer.Context,
    ticker: str = typer.Argument(..., help="Ticker symbol."),
    on: str = typer.Option(..., "--date", help="Forecast date (YYYY-MM-DD); the window ends at that session's close."),
    weeks: int = typer.Option(DEFAULT_WEEKS, min=1, max=12, help="Past weeks in the window."),
    texts: int = typer.Option(DEFAULT_TEXTS_PER_WEEK, min=0, max=20, help="Text items kept per week (the forecaster's default)."),
    label: bool = typer.Option(False, "--label", help="Also show the realised label of the following week."),
) -> None:
    """Print a forecast window exactly as the forecaster sees it (point in time)."""
    rt = runtime(ctx)
    ensure_database(rt)
    with rt.session() as session:
        store = SqlMarketStore(session)
        window = build_window(store, ticker.upper(), parse_date(on, "--date"), n_weeks=weeks, texts_per_week=texts)
        console.print(
            f"[dim]decision session {window.decision_date}, information cut-off {window.as_of:%Y-%m-%d %H:%M} UTC, "
            f"target week {window.target_start} .. {window.target_end}[/dim]\n"
        )
        console.print(format_window(window), markup=False, highlight=False, soft_wrap=True)
        if label:
            outcome = weekly_label(store, window.ticker, window.decision_date)
            console.print(
                f"\n[bold]label[/bold] (realised, not shown to the model): {outcome.text} "
                f"({outcome.return_pct:+.2f}%, {window.decision_date} -> {outcome.target_end})"
            )

