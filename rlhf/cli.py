"""CLI for profiles, feedback, the tuning loop and a user's model versions (an advisor plugin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from advisor.cli.common import console, ensure_database, parse_date, parse_tickers, runtime
from advisor.cli.forecast import model_app
from advisor.data.store import PreloadedMarketStore
from advisor.errors import AdvisorError, InputValidationError
from rlhf.datasets import pair_examples, rating_examples, time_split
from rlhf.preferences import feedback_counts, record_choice, record_rating
from rlhf.profiles import ARCHETYPES, QUESTIONS, get_user, profile_history, require_profile, save_profile, score_answers, user_utility
from rlhf.registry import activate, rollback
from rlhf.train_pref import write_rows

DEMO_ORDER = 200

profile_app = typer.Typer(help="Risk profile: the questionnaire and its versions.", no_args_is_help=True)
feedback_app = typer.Typer(help="Tell the advisor which views you prefer.", no_args_is_help=True)
MAX_ROW_ID = 2**63 - 1  # database ids are signed 64-bit; a larger number is a usage error, not an OverflowError
rlhf_app = typer.Typer(help="Tune a user's adapter on their preferences (reward model + DPO/KTO).", no_args_is_help=True)


def _answers(text: str) -> dict[str, str]:

    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise InputValidationError(f"answers look like horizon=2,goal=1,...; got '{item}'", field="answers")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in pairs:
            raise InputValidationError(f"'{key}' is answered twice ({key}={pairs[key]} and {key}={value}); give each answer once", field="answers")
        pairs[key] = value
    return pairs


@profile_app.command("questions")
def questions() -> None:
    """The questionnaire, with the option numbers to answer with."""
    for q in QUESTIONS:
        console.print(f"[bold]{q.key}[/bold]: {q.text}")
        for i, option in enumerate(q.options):
            console.print(f"   {i} = {option}")


@profile_app.command("set")
def set_profile(
    ctx: typer.Context,
    user: str = typer.Option(..., help="User name (created on first use)."),
    answers: str | None = typer.Option(None, help="horizon=2,goal=1,... (see 'advisor profile questions'); asked interactively if omitted."),
    archetype: str | None = typer.Option(None, help="Answer like a conservative, moderate or aggressive investor."),
) -> None:
    """Answer the questionnaire; stores a new profile version when the answers changed."""
    rt = runtime(ctx)
    ensure_database(rt)
    if archetype:
        if archetype not in ARCHETYPES:
            raise AdvisorError(f"unknown archetype '{archetype}' (choose {', '.join(ARCHETYPES)})")
        given: dict[str, Any] = dict(ARCHETYPES[archetype])
    elif answers:
        given = _answers(answers)
    else:
        given = {}
        for q in QUESTIONS:
            console.print(f"[bold]{q.text}[/bold]")
            for i, option in enumerate(q.options):
                console.print(f"   {i} = {option}")
            given[q.key] = typer.prompt("your answer", type=int)
    with rt.session() as session:
        profile, created = save_profile(session, user, given)
        console.print(("saved" if created else "unchanged:") + f" {escape(user)}'s profile version {profile.version} — {score_answers(given).describe()}")


@profile_app.command("show")
def show_profile(ctx: typer.Context, user: str = typer.Option(...)) -> None:
    """The user's current profile and its history."""
    rt = runtime(ctx)
    ensure_database(rt)
    table = Table("version", "label", "score", "risk aversion", "max weight", "max gross", "shorts", "target vol", "cash buffer", "created")
    with rt.session() as session:
        for p in profile_history(session, get_user(session, user)):
            table.add_row(str(p.version), p.label, f"{p.score:.2f}", f"{p.risk_aversion:.1f}", f"{p.max_weight:.0%}", f"{p.max_gross:.0%}",
                          "yes" if p.allow_shorts else "no", f"{p.target_vol or 0:.0%}", f"{p.cash_buffer:.0%}", f"{p.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@feedback_app.command("choose")
def choose(
    ctx: typer.Context,
    user: str = typer.Option(...),
    a: int = typer.Option(..., "--a", min=1, max=MAX_ROW_ID, help="Forecast id of view A."),
    b: int = typer.Option(..., "--b", min=1, max=MAX_ROW_ID, help="Forecast id of view B."),
    choice: str = typer.Option(..., help="a, b or both_bad."),
    comment: str | None = typer.Option(None),
) -> None:
    """Record which of two views of the same prompt you prefer."""
    rt = runtime(ctx)
    ensure_database(rt)
    with rt.session() as session:
        user_row = get_user(session, user)
        preference = record_choice(session, user_row, require_profile(session, user_row), a, b, choice, comment)
        console.print(f"stored preference {preference.id}")


@feedback_app.command("rate")
def rate(
    ctx: typer.Context,
    user: str = typer.Option(...),
    forecast: int = typer.Option(..., min=1, max=MAX_ROW_ID, help="Forecast id."),
    up: bool = typer.Option(..., "--up/--down", help="Thumbs up or down."),
    comment: str | None = typer.Option(None),
) -> None:
    """Thumbs up or down on one view."""
    rt = runtime(ctx)
    ensure_database(rt)
    with rt.session() as session:
        user_row = get_user(session, user)
        preference = record_rating(session, user_row, require_profile(session, user_row), forecast, 1 if up else -1, comment)
        console.print(f"stored rating {preference.id}")


@feedback_app.command("summary")
def summary(ctx: typer.Context, user: str = typer.Option(...)) -> None:
    """How much feedback a user has given, by source and kind."""
    rt = runtime(ctx)
    ensure_database(rt)
    with rt.session() as session:
        console.print(feedback_counts(session, get_user(session, user)) or "no feedback yet")


@rlhf_app.command("run")
def run_command(
    ctx: typer.Context,
    user: str = typer.Option(...),
    train_start: str = typer.Option("2014-06-01"),
    train_end: str = typer.Option("2015-03-27"),
    eval_start: str = typer.Option("2015-04-01"),
    eval_end: str = typer.Option("2015-06-30"),
    tickers: str | None = typer.Option(None, help="Restrict to these tickers (default: all)."),
    train_prompts: int = typer.Option(24, min=1),
    eval_prompts: int = typer.Option(12, min=1),
    candidates: int = typer.Option(2, min=2, max=8),
    eval_candidates: int | None = typer.Option(None, min=2, max=8, help="Candidates per held-out window (default: --candidates)."),
    dpo_steps: int = typer.Option(10, min=1),
    rm_steps: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(2, min=1, help="Pairs per reward-model and DPO step."),
    learning_rate: float = typer.Option(1e-4, min=1e-7, max=1e-2, help="DPO/KTO learning rate."),
    beta: float = typer.Option(0.1, min=0.01, max=2.0, help="DPO/KTO beta: higher keeps the adapter closer to its parent."),
    simulate_user: bool = typer.Option(False, "--simulate-user", help="Add a simulated user's A/B choices (labelled as simulated)."),
    force: bool = typer.Option(False, "--force", help="Activate the tuned adapter even if it does not beat its parent."),
    keep_last_step: bool = typer.Option(False, "--keep-last-step", help="Train DPO on every training-period pair and keep its last "
                                        "step (default: keep the step that does best on the last training weeks' pairs, maybe none)."),
    seed: int = typer.Option(0),
) -> None:
    """Candidates -> labels -> reward model + DPO -> held-out evaluation -> register (and activate if better)."""
    from rlhf.loop import LoopOptions, run_loop

    rt = runtime(ctx)
    ensure_database(rt)
    options = LoopOptions(
        train_period=(parse_date(train_start, "--train-start"), parse_date(train_end, "--train-end")),
        eval_period=(parse_date(eval_start, "--eval-start"), parse_date(eval_end, "--eval-end")),
        tickers=tuple(parse_tickers(tickers)) if tickers else None, train_prompts=train_prompts, eval_prompts=eval_prompts,
        candidates=candidates, eval_candidates=eval_candidates, dpo_steps=dpo_steps, rm_steps=rm_steps, batch_size=batch_size,
        learning_rate=learning_rate, beta=beta, simulate_user=simulate_user, force_activate=force, seed=seed,
        select_step=not keep_last_step,
    )
    result = run_loop(rt.session_factory, rt.settings.resolved_model_dir, rt.settings.base_model, user, options, rt.settings.data_dir, console)
    print_loop(result, console)


@rlhf_app.command("compare")
def compare_command(
    ctx: typer.Context,
    users: str = typer.Option(..., help="Two users, comma-separated, e.g. demo-cautious,demo-bold."),
    eval_start: str = typer.Option("2015-04-01"),
    eval_end: str = typer.Option("2015-06-30"),
    tickers: str | None = typer.Option(None, help="Restrict to these tickers (default: all)."),
    windows: int = typer.Option(200, min=1, help="Held-out windows (a few names x every week, as the loop picks them)."),
    seed: int = typer.Option(0, help="The loop's seed (picks the same held-out names)."),
) -> None:
    """Compare two users' latest tuned adapters with their parents on the same held-out windows."""
    from rlhf.compare import compare_users
    from rlhf.loop import heldout_grid

    rt = runtime(ctx)
    ensure_database(rt)
    names = [u.strip() for u in users.split(",") if u.strip()]
    period = (parse_date(eval_start, "--eval-start"), parse_date(eval_end, "--eval-end"))
    with rt.session() as session:
        store = PreloadedMarketStore(session)
        chosen = list(parse_tickers(tickers)) if tickers else store.tickers()
        grid = heldout_grid(store, chosen, period[0], period[1], windows, seed)
    report, paths = compare_users(rt.session_factory, rt.settings.resolved_model_dir, rt.settings.base_model, names, grid, period,
                                  rt.settings.data_dir, console)
    console.print(report.markdown(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report {paths['markdown']}")


def print_loop(result: Any, console: Any) -> None:

    console.print(result.report.markdown(), markup=False, highlight=False, soft_wrap=True)
    if result.tuned_version_id is None:
        outcome = f"no {result.method.upper()} step beat parent version {result.parent_version_id}; the advisor is unchanged"
    else:
        state = "activated" if result.activated else "registered, not activated"
        outcome = f"{result.method.upper()} adapter version {result.tuned_version_id} (parent {result.parent_version_id}) {state}"
    console.print(f"{escape(result.user)}: {outcome}; report {escape(str(result.report_paths.get('markdown')))}", soft_wrap=True)


@rlhf_app.command("export")
def export(ctx: typer.Context, user: str = typer.Option(...), out: Path = typer.Option(..., help="Directory for the JSONL files."),
           split_date: str | None = typer.Option(None, help="Evaluation = weeks on or after this date (default: last 25% of weeks).")) -> None:
    """Export the user's preferences as TRL datasets (DPO/reward pairs, KTO thumbs), split by time."""
    rt = runtime(ctx)
    ensure_database(rt)
    cut = parse_date(split_date, "--split-date") if split_date else None
    with rt.session() as session:
        user_row = get_user(session, user)
        pairs = time_split(pair_examples(session, user_row), split_date=cut)
        ratings = time_split(rating_examples(session, user_row), split_date=cut or pairs.split_date)
    for name, rows in (("pairs-train", pairs.train), ("pairs-eval", pairs.eval), ("kto-train", ratings.train), ("kto-eval", ratings.eval)):
        write_rows(rows, out / f"{name}.jsonl")
    console.print(f"wrote {len(pairs.train)}/{len(pairs.eval)} pairs and {len(ratings.train)}/{len(ratings.eval)} thumbs (train/eval, split {pairs.split_date}) to {out}")


def register_cli(app: typer.Typer) -> None:

    app.add_typer(profile_app, name="profile")
    app.add_typer(feedback_app, name="feedback")
    app.add_typer(rlhf_app, name="rlhf")

    @model_app.command("activate")
    def activate_command(ctx: typer.Context, user: str = typer.Option(...), version: int = typer.Option(..., min=1, max=MAX_ROW_ID, help="Model version id.")) -> None:
        """Make a model version the one that writes this user's views."""
        rt = runtime(ctx)
        ensure_database(rt)
        with rt.session() as session:
            activate(session, get_user(session, user), version, "activated by the user")
        console.print(f"{escape(user)} now uses model version {version}")

    @model_app.command("rollback")
    def rollback_command(ctx: typer.Context, user: str = typer.Option(...)) -> None:
        """Go back to the version that was active before the current one."""
        rt = runtime(ctx)
        ensure_database(rt)
        with rt.session() as session:
            version = rollback(session, get_user(session, user))
            console.print(f"{escape(user)} rolled back to model version {version.id} ({escape(version.name)})")


def demo_step(context: Any) -> None:
    """Two simulated users with opposite profiles tune their own adapters; compare what they got."""
    from rlhf.compare import compare_users, pair_overlap
    from rlhf.loop import LoopOptions, heldout_grid, run_loop

    rt, console = context.rt, context.console
    context.heading("Personal tuning: two simulated users with opposite risk profiles")
    options = context.options
    results = {}
    names = ("demo-cautious", "demo-bold")
    for name, archetype in zip(names, ("conservative", "aggressive"), strict=True):
        with rt.session() as session:
            profile, _ = save_profile(session, name, ARCHETYPES[archetype], simulated=True)
            console.print(f"{name}: {archetype} questionnaire -> profile v{profile.version} ({profile.label}, risk aversion "
                          f"{profile.risk_aversion:.1f}, loss aversion {user_utility(profile).loss_aversion:.2f})")
        loop = LoopOptions(
            train_period=context.plan.rlhf_train_period, eval_period=context.plan.heldout_period, tickers=tuple(options.tickers),
            train_prompts=options.rlhf_train_prompts, eval_prompts=options.rlhf_eval_prompts, candidates=4, eval_candidates=2,
            dpo_steps=options.rlhf_steps, rm_steps=2, batch_size=2, simulate_user=True,
        )
        results[name] = run_loop(rt.session_factory, rt.settings.resolved_model_dir, rt.settings.base_model, name, loop, rt.settings.data_dir, console)
        print_loop(results[name], console)
    table = Table("user", "profile", "method", "train pairs", "held-out utility tuned", "parent", "pref. acc. tuned", "parent", "activated")
    for name, r in results.items():
        u, pa = r.report.utility, r.report.preference_accuracy

        def fmt(stat: Any, pct: bool = False) -> str:
            if not stat or stat.get("value") is None:
                return "—"
            return f"{100 * stat['value']:.0f}%" if pct else f"{stat['value']:.5f}"

        table.add_row(name, r.report.profile, r.method, str(r.counts["train_pairs"]), fmt(u.get("tuned")), fmt(u.get("parent")),
                      fmt(pa.get("tuned"), True), fmt(pa.get("parent"), True), "yes" if r.activated else "no")
    console.print(table)
    with rt.session() as session:
        overlap = pair_overlap(session, get_user(session, names[0]), get_user(session, names[1]))
    console.print(f"Their training data: {overlap.describe()}", soft_wrap=True)
    context.heading("What tuning changed: the two users' advisors side by side")
    unchanged = [name for name, r in results.items() if r.tuned_version_id is None]
    if unchanged:
        console.print(f"no comparison: {', '.join(unchanged)} kept the parent (no DPO step beat it on the last training weeks' pairs), "
                      "so there is no second tuned advisor to compare; larger --rlhf-train-prompts give each run more evidence", soft_wrap=True)
        context.results["rlhf"] = results
        return
    with rt.session() as session:
        store = PreloadedMarketStore(session)
        start, end = context.plan.heldout_period
        grid = heldout_grid(store, list(options.tickers), start, end, options.rlhf_eval_prompts, 0)
    report, paths = compare_users(rt.session_factory, rt.settings.resolved_model_dir, rt.settings.base_model, list(names), grid,
                                  context.plan.heldout_period, rt.settings.data_dir, console)
    console.print(report.markdown(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"(report {paths['markdown']}; at real sizes: advisor rlhf compare --users A,B --windows 200)", soft_wrap=True)
    context.results["rlhf"] = results
    context.results["rlhf_compare"] = report
