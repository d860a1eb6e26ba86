"""The ``advisor`` command: global options, sub-commands, and one place that turns errors into messages."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from advisor.cli import data as data_cli
from advisor.cli import forecast as forecast_cli
from advisor.cli import sentiment as sentiment_cli
from advisor.cli import trade as trade_cli
from advisor.cli.common import console, err_console, parse_date, parse_tickers, quiet_third_party_logs, runtime
from advisor.config import load_settings
from advisor.demo import DemoOptions, run_demo
from advisor.errors import AdvisorError
from advisor.plugins import plugins
from advisor.runtime import Runtime
from db.locks import LockTimeoutError

app = typer.Typer(
    name="advisor",
    help="A personal robo-advisor whose forecaster learns your risk preferences (paper trading only).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(forecast_cli.model_app, name="model")
app.add_typer(forecast_cli.train_app, name="train")
app.add_typer(forecast_cli.eval_app, name="eval")
app.add_typer(trade_cli.app, name="trade")
app.add_typer(sentiment_cli.app, name="sentiment")
app.command("forecast")(forecast_cli.forecast_command)
for _plugin in plugins():
    if hasattr(_plugin, "register_cli"):
        _plugin.register_cli(app)


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="TOML config file (default: $ADVISOR_CONFIG or ./advisor.toml)."),
    db_url: str | None = typer.Option(None, "--db-url", help="SQLAlchemy database URL (overrides config and environment)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (database, reports, charts)."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help="Where models and adapters are stored."),
) -> None:
    settings = load_settings(config, database_url=db_url, data_dir=data_dir, model_dir=model_dir)
    ctx.obj = Runtime(settings)
    ctx.call_on_close(ctx.obj.dispose)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database or migrate it to the latest schema."""
    rt = runtime(ctx)
    before, after = rt.init_database()
    where = rt.database_label
    if before == after:
        console.print(f"database {where} is up to date (revision {after})")
    else:
        console.print(f"database {where}: migrated {before or 'empty'} -> {after}")


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Print the effective settings (broker keys are never printed)."""
    rt = runtime(ctx)
    console.print_json(rt.settings.model_dump_json())


@app.command()
def demo(
    ctx: typer.Context,
    bundle: Path | None = typer.Option(None, help="Offline data bundle directory (stocknet format)."),
    ticker: str = typer.Option("AAPL", help="Ticker for the example window."),
    on: str = typer.Option("2015-06-05", "--date", help="Forecast date for the example window and the views."),
    tickers: str = typer.Option("AAPL,MSFT,GE,XOM,JPM", help="Tickers to forecast."),
    sft_steps: int = typer.Option(12, min=1, help="SFT steps (bigger runs: 200+)."),
    sft_batch: int = typer.Option(2, min=1, help="SFT batch size."),
    heldout_weeks: int = typer.Option(3, min=1, help="Held-out weeks ending on --date: evaluated, backtested, used to compare tuned adapters (bigger: 26)."),
    rlhf_train_prompts: int = typer.Option(12, min=2, help="Prompts each demo user's tuning loop samples 4 candidates for (bigger: 100)."),
    rlhf_eval_prompts: int = typer.Option(10, min=1, help="Held-out prompts the tuned adapters are compared on (bigger: 200)."),
    rlhf_steps: int = typer.Option(8, min=1, help="DPO steps of 2 pairs in each demo loop (bigger: 60; at least 8, the floor of 16 pairs)."),
    with_base: bool = typer.Option(False, "--with-base", help="Evaluate the untuned base model too (slow: it writes to the token limit)."),
    retrain: bool = typer.Option(False, "--retrain", help="Train a new SFT adapter even if one exists."),
) -> None:
    """End-to-end demo on the offline bundle: data, SFT, views, evaluation, backtest, personal tuning, paper trading."""
    rt = runtime(ctx)
    bundle = bundle or rt.settings.bundle_dir
    options = DemoOptions(
        bundle=bundle, ticker=ticker.upper(), on=parse_date(on, "--date"), tickers=tuple(parse_tickers(tickers)),
        sft_steps=sft_steps, sft_batch=sft_batch, heldout_weeks=heldout_weeks, with_base=with_base, retrain=retrain,
        rlhf_train_prompts=rlhf_train_prompts, rlhf_eval_prompts=rlhf_eval_prompts, rlhf_steps=rlhf_steps,
    )
    run_demo(rt, options, console)


def main() -> None:
    """Console entry point: user errors become one readable line and exit status 2."""
    quiet_third_party_logs()
    try:
        app(standalone_mode=False, prog_name="advisor")
    except (AdvisorError, LockTimeoutError) as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except typer.TyperException as exc:  # typer's bundled click errors (usage errors in non-standalone mode)
        sys.exit(_report_usage_error(exc))


def _report_usage_error(exc: typer.TyperException) -> int:
    """One line naming what was wrong and where help is, and exit status 2 (bare ``advisor`` shows the help)."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    if isinstance(exc, NoArgsIsHelpError):
        exc.show()
        return 2
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if isinstance(exc, UsageError) and ctx is not None else ""
    message = " ".join(exc.format_message().split())
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}{escape(where)}", highlight=False, soft_wrap=True)
    return 2 if isinstance(exc, UsageError) else int(getattr(exc, "exit_code", 1) or 1)


if __name__ == "__main__":
    main()
