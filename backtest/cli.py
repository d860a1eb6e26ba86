"""``advisor backtest`` and the demo's backtest step (registered through the advisor.plugins entry point)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from advisor.cli.common import console, ensure_database, parse_date, parse_tickers, runtime
from advisor.cli.forecast import resolve_handle
from advisor.data.store import PreloadedMarketStore
from advisor.data.windows import weekly_decision_dates
from advisor.forecaster.service import generate_missing_views
from advisor.forecaster.versions import ensure_model_version
from advisor.portfolio import params_from_profile, preset
from advisor.users import require_profile, require_user

DEMO_ORDER = 100


def resolve_profile(session: Any, spec: str) -> tuple[Any, str, int | None, int | None]:
    """``--profile``: a preset name, or ``user:NAME`` for that user's current profile version."""
    if spec.startswith("user:"):
        name = spec.split(":", 1)[1]
        user = require_user(session, name)
        profile = require_profile(session, user)
        return params_from_profile(profile), f"{name} v{profile.version} ({profile.label})", user.id, profile.id
    return preset(spec), spec, None, None


def metrics_table(outcome: Any) -> Table:
    table = Table("strategy", "total", "ann. return", "ann. vol", "Sharpe", "Sortino", "max DD", "DD days", "turnover/yr", "gross", "hit rate")
    table.columns[0].min_width = 22  # long reference names wrap onto two lines, not five

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f}%"

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    for run in outcome.runs:
        m = run.metrics
        table.add_row(
            run.strategy, pct(m["total_return"]), pct(m["annualized_return"]), pct(m["annualized_volatility"]),
            num(m["sharpe"]), num(m["sortino"]), pct(m["max_drawdown"]), str(m["max_drawdown_days"]),
            num(m["turnover_per_year"]), num(m["avg_gross_exposure"]),
            "—" if m["hit_rate"] is None else f"{100 * m['hit_rate']:.0f}% of {m['traded_views']}",
        )
    return table


def register_cli(app: typer.Typer) -> None:
    @app.command("backtest")
    def backtest_command(
        ctx: typer.Context,
        profile: str = typer.Option("moderate", help="conservative, moderate, aggressive, or user:NAME."),
        start: str = typer.Option(..., help="First day of the backtest."),
        end: str = typer.Option(..., help="Last day of the backtest."),
        model_version: int | None = typer.Option(None, "--model-version", help="Views of this model version (default: newest SFT)."),
        tickers: str | None = typer.Option(None, help="Names to trade (default: those with views)."),
        cash: float = typer.Option(100_000.0, help="Initial cash."),
        commission_bps: float = typer.Option(1.0, help="Commission, basis points of notional."),
        slippage_bps: float = typer.Option(5.0, help="Slippage on fills, basis points."),
        references: bool = typer.Option(True, help="Also run always-long, momentum and the oracle ceiling."),
        generate_missing: bool = typer.Option(False, "--generate-missing", help="Forecast weeks that have no stored view first."),
    ) -> None:
        """What following the views would have done under a risk profile, against the benchmark."""
        from backtest.engine import CostModel
        from backtest.runner import BacktestRequest, run_backtest

        rt = runtime(ctx)
        ensure_database(rt)
        first, last = parse_date(start, "--start"), parse_date(end, "--end")
        names = tuple(parse_tickers(tickers)) if tickers else None
        with rt.session() as session:
            params, label, user_id, profile_id = resolve_profile(session, profile)
        if model_version is None or generate_missing:
            handle = resolve_handle(rt, None, None, False, "none")
            with rt.session() as session:
                version_id = ensure_model_version(session, handle).id
                if generate_missing:
                    store = PreloadedMarketStore(session)
                    made, skipped = generate_missing_views(session, store, handle, names or tuple(store.tickers()), weekly_decision_dates(first, last))
                    console.print(f"generated {made} missing views" + (f"; skipped {len(skipped)} without enough data" if skipped else ""))
            model_version = model_version or version_id
        request = BacktestRequest(
            start=first, end=last, params=params, profile_label=label, model_version_id=model_version, tickers=names,
            user_id=user_id, profile_id=profile_id, initial_cash=cash,
            costs=CostModel(commission_bps=commission_bps, slippage_bps=slippage_bps), references=references,
        )
        outcome = run_backtest(rt.session_factory, request, rt.settings.data_dir / "charts")
        console.print(metrics_table(outcome))
        for note in outcome.notes:
            console.print(f"note: {note}")
        console.print(f"stored as backtest runs {', '.join(str(r.run_id) for r in outcome.runs)} (group {outcome.group_key}); chart {outcome.chart_path}", soft_wrap=True)


def demo_step(context: Any) -> None:
    """The demo's views, backtested for a moderate profile against the benchmark."""
    from backtest.runner import BacktestRequest, run_backtest

    rt, console, handle, tickers = context.rt, context.console, context.handle, context.options.tickers
    start, end = context.plan.backtest_period
    context.heading(f"Backtest of the views, {start} .. {end}, moderate profile")
    with rt.session() as session:
        store = PreloadedMarketStore(session)
        made, _ = generate_missing_views(session, store, handle, tickers, weekly_decision_dates(start, end))
        version_id = ensure_model_version(session, handle).id
    console.print(f"{made} weekly views generated for the backtest (the evaluation's views are reused)")
    outcome = run_backtest(
        rt.session_factory,
        BacktestRequest(start=start, end=end, params=preset("moderate"), profile_label="moderate",
                        model_version_id=version_id, tickers=tuple(tickers)),
        rt.settings.data_dir / "charts",
    )
    console.print(metrics_table(outcome))
    for note in outcome.notes:
        console.print(f"note: {note}")
    console.print(f"chart: {outcome.chart_path}", soft_wrap=True)
    context.results["backtest"] = outcome
