"""``advisor trade run | status | kill``: thin wrappers over the rebalance bot."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from advisor.cli.common import console, ensure_database, parse_date, parse_tickers, runtime
from advisor.errors import AdvisorError
from advisor.portfolio import params_from_profile
from advisor.runtime import Runtime
from advisor.trading import bot as bot_module
from advisor.trading.bot import kill
from advisor.trading.status import account_status
from advisor.trading.wiring import user_bot, user_broker
from advisor.users import require_profile, require_user

if TYPE_CHECKING:
    from advisor.portfolio import RiskParams
    from advisor.trading.bot import RunReport
    from advisor.trading.broker import Broker

app = typer.Typer(help="Paper trading: rebalance a paper account to the views (local broker or Alpaca paper).", no_args_is_help=True)


def _user(rt: Runtime, name: str) -> tuple[int, RiskParams]:

    with rt.session() as session:
        user = require_user(session, name)
        return user.id, params_from_profile(require_profile(session, user))


def _broker(rt: Runtime, kind: str | None, user_id: int, max_weight: float, as_of: str | None) -> Broker:

    return user_broker(rt, user_id, max_weight, kind=kind, as_of=parse_date(as_of, "--as-of") if as_of else None)


def print_report(report: RunReport) -> None:
    title = f"decision week {report.decision_week} on {report.broker}" + (" (dry run: nothing sent)" if report.dry_run else "")
    table = Table("side", "qty", "ticker", "slice", "price", "notional", "target weight", "now held", title=title)
    slices = Counter((t.ticker, t.side) for t in report.planned)
    for t in report.planned:
        # An order above the per-order cap goes out as several slices; number them so they don't read as duplicates.
        count = slices[(t.ticker, t.side)]
        table.add_row(t.side.value, f"{t.qty:.4f}", t.ticker, f"{t.sequence + 1}/{count}" if count > 1 else "", f"{t.price:.2f}",
                      f"{t.notional:,.0f}", f"{t.target_weight:.1%}", f"{t.current_qty:.4f}")
    console.print(table)
    if report.equity is not None:
        console.print(f"account equity {report.equity:,.2f}")
    for cid, status in report.final.items():
        console.print(f"  {cid}: {status}")
    for cid, reason in report.rejected.items():
        console.print(f"  [yellow]{cid} rejected: {reason}[/yellow]")
    for cid in report.adopted:
        console.print(f"  [yellow]adopted an unknown order at the broker: {cid}[/yellow]")
    for cid, what in report.reconciled.items():
        console.print(f"  reconciled {cid}: {what}")
    for message in report.messages:
        console.print(f"  note: {message}")


@app.command("run")
def run_command(
    ctx: typer.Context,
    user: str = typer.Option(...),
    once: bool = typer.Option(False, "--once", help="One rebalance, then exit."),
    loop: bool = typer.Option(False, "--loop", help="Keep rebalancing each new week until killed."),
    broker: str | None = typer.Option(None, help="local or alpaca (paper); default from settings."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the intended orders; send none."),
    as_of: str | None = typer.Option(None, "--as-of", help="Trade a historical week on the local paper broker (simulated clock)."),
    tickers: str | None = typer.Option(None, help="Names to hold (default: those with views this week)."),
    interval: float = typer.Option(300.0, help="Seconds between loop iterations."),
    poll_timeout: float = typer.Option(60.0, help="Seconds to wait for orders to reach a final state."),
    resume: bool = typer.Option(False, "--resume", help="Clear the kill switch first."),
    generate: bool = typer.Option(True, help="Forecast missing views for --tickers with the user's active model first."),
) -> None:
    """Rebalance the user's paper account to their active views and profile."""
    if once == loop:
        raise AdvisorError("choose one of --once and --loop")
    rt = runtime(ctx)
    ensure_database(rt)
    user_id, params = _user(rt, user)
    paper = _broker(rt, broker, user_id, params.max_weight, as_of)
    if resume:
        bot_module.resume(rt.session_factory, paper.name, user_id)
    bot = user_bot(rt, user_id, params, paper, generate_missing_views=bool(generate and tickers))
    options = bot_module.RebalanceOptions(tickers=tuple(parse_tickers(tickers)) if tickers else None, dry_run=dry_run, poll_timeout_s=poll_timeout)
    if once:
        print_report(bot.run_once(options))
    else:
        bot_module.run_loop(bot, options, interval, on_report=print_report)


@app.command("status")
def status_command(ctx: typer.Context, user: str = typer.Option(...), broker: str | None = typer.Option(None), as_of: str | None = typer.Option(None, "--as-of")) -> None:
    """Account, positions, orders, fills and the bot's state."""
    rt = runtime(ctx)
    ensure_database(rt)
    user_id, params = _user(rt, user)
    paper = _broker(rt, broker, user_id, params.max_weight, as_of)
    account = paper.get_account()
    console.print(f"[bold]{paper.name} paper account[/bold]: equity {account.equity:,.2f}, cash {account.cash:,.2f}")
    positions = Table("ticker", "qty", "avg entry", "market value")
    for p in paper.get_positions():
        positions.add_row(p.ticker, f"{p.qty:.4f}", f"{p.avg_entry_price:.2f}", "—" if p.market_value is None else f"{p.market_value:,.2f}")
    console.print(positions)
    with rt.session() as session:
        status = account_status(session, user_id, paper.name, limit=15)
    console.print(f"bot: {status.bot_status}{' (KILLED)' if status.kill_requested else ''}; last decision week {status.last_decision_week}; {status.message or ''}")
    if not status.orders.empty:
        console.print(status.orders[["client_order_id", "side", "qty", "ticker", "status", "filled_qty", "avg_price"]].to_string(index=False))


@app.command("kill")
def kill_command(
    ctx: typer.Context,
    user: str = typer.Option(...),
    broker: str | None = typer.Option(None),
    as_of: str | None = typer.Option(None, "--as-of", help="The historical week the local broker is trading (simulated clock)."),
) -> None:
    """Kill switch: cancel the user's open orders and stop the loop (until --resume)."""
    rt = runtime(ctx)
    ensure_database(rt)
    user_id, params = _user(rt, user)
    paper = _broker(rt, broker, user_id, params.max_weight, as_of)
    canceled = kill(rt.session_factory, paper, user_id)
    console.print(f"kill switch on for {escape(user)} ({paper.name}): {len(canceled)} open orders canceled")
