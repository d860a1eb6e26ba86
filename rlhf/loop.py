"""``advisor rlhf run --user U``: the personal tuning loop as one operation.

1. **Candidates.** The user's current model (their active adapter, else the shared SFT adapter) samples
   K views for each training window and each held-out window. Candidates are shared forecasts (no
   user), so a second user with the same parent reuses them instead of generating again.
2. **Labels.** Outcome-grounded pairs under the user's profile (weeks that are over), plus the
   simulated user's A/B choices when asked (demo, tests), plus any human feedback already stored.
3. **Data.** Pairs (and thumbs for KTO) are exported in TRL format and split by time at the start of
   the held-out period.
4. **Training.** A reward model (TRL RewardTrainer, LoRA, score head) and DPO from the parent adapter
   (KTO when there are thumbs but too few pairs). Each run is recorded; adapters are registered as
   model versions with their parent, user and profile version.
5. **Evaluation** on the held-out weeks (:mod:`rlhf.evaluate`), written as JSON and Markdown.
6. **Activation** only when the tuned adapter's realised utility beats the parent's (paired 95% interval
   above 0), it ranks the user's held-out pairs no worse than the parent (paired interval) and it does
   not give one answer or one direction everywhere (:meth:`rlhf.evaluate.ComparisonReport.activation_blockers`), or when forced. Any failure
   leaves the user's active version unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor.data.store import PreloadedMarketStore
from advisor.data.windows import ForecastWindow, label_for, weekly_decision_dates
from advisor.errors import AdvisorError, DataUnavailableError
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelSpec, load_model, write_adapter_meta
from advisor.forecaster.modelstore import adapter_hash
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.service import Personalisation, WindowConfig, forecast_windows
from advisor.forecaster.sft import labelled_windows, order_key
from advisor.forecaster.versions import ensure_model_version
from advisor.portfolio import RiskParams
from db.engine import session_scope
from db.models import Forecast, ModelVersion, RiskProfile, TrainingRun
from db.types import utcnow
from rlhf.datasets import Example, Split, pair_examples, rating_examples, time_split
from rlhf.evaluate import ComparisonReport, compare, jsonable, write_report
from rlhf.preferences import DEFAULT_MARGIN, candidate_groups, label_outcomes, simulate_feedback
from rlhf.profiles import get_user, require_profile, risk_params
from rlhf.registry import activate, handle_for
from rlhf.reward import RewardOptions, RewardScorer, train_reward_model
from rlhf.train_pref import MIN_DPO_PAIRS, MIN_KTO_EXAMPLES, PreferenceSpec, write_rows
from rlhf.train_pref import run as train_preferences

VALIDATION_FRACTION = 0.2  # the last training weeks whose pairs pick the DPO step to keep
MAX_VALIDATION_PAIRS = 40  # enough to rank a handful of steps; each evaluation is a forward pass per pair
# Fewer cannot tell steps apart: keep the last step. In the demo (10 validation pairs, 8 steps) the
# validation losses of the steps differed by 0.006-0.02 around 0.693, in no consistent order between two
# users' runs, and one run kept step 0 (no change at all) on that evidence alone.
MIN_VALIDATION_PAIRS = 20
SELECTION_POINTS = 6  # validation evaluations per DPO run (and step 0)


def validation_split(examples: list[Example], options: LoopOptions) -> Split:
    """Training-period pairs split by time: earlier weeks to fit on, a sample of the last weeks to pick the DPO step.

    A week is never on both sides (its pairs share prompts). Held-out weeks are not used, so the
    reported comparison stays out of sample.
    """
    import random
    from dataclasses import replace

    split = time_split(examples, eval_fraction=VALIDATION_FRACTION)
    if not options.select_step or len(split.eval) < MIN_VALIDATION_PAIRS:  # too few to choose a step with: fit on everything, keep the last step
        return Split([e.row for e in examples], [], None)
    if len(split.eval) > MAX_VALIDATION_PAIRS:
        split = replace(split, eval=random.Random(options.seed).sample(split.eval, MAX_VALIDATION_PAIRS))
    return split


class TooFewPreferencesError(AdvisorError):
    """Not enough preference data to train on."""


@dataclass(frozen=True)
class LoopOptions:
    train_period: tuple[date, date]
    eval_period: tuple[date, date]
    tickers: tuple[str, ...] | None = None
    train_prompts: int = 24
    eval_prompts: int = 12
    candidates: int = 2
    eval_candidates: int | None = None  # per held-out window (default: ``candidates``); 2 gives one held-out pair per window
    temperature: float = 0.7  # diverse enough for distinct candidates, rarely off-format
    margin: float = DEFAULT_MARGIN
    simulate_user: bool = False
    rm_steps: int = 10
    dpo_steps: int = 10
    batch_size: int = 2  # pairs per reward-model and DPO step (KTO uses at least 2 rated views)
    sample_batch: int = 12  # prompts sampled per generate call (x candidates sequences): fewer calls, less idle tail
    learning_rate: float = 1e-4  # with 2e-4, 60 steps collapsed a real user's adapter to one answer (README)
    beta: float = 0.1
    max_new_tokens: int = Decoding.max_new_tokens  # the same as forecasts and evaluations, so parent views are reused
    force_activate: bool = False
    seed: int = 0
    select_step: bool = True  # keep the DPO step that does best on the last training weeks' pairs; False: train on all, keep the last
    min_pairs: int = MIN_DPO_PAIRS  # the floor for the reward model and DPO (lower only for tests on toy data)


@dataclass
class LoopContext:
    """What the training, evaluation and registration steps share."""

    factory: sessionmaker[Session]
    model_dir: Path
    base_model: str
    user_name: str
    options: LoopOptions
    data_dir: Path
    console: Console
    user_id: int
    profile_id: int
    profile_version: int
    params: RiskParams
    parent: Any  # ModelHandle of the parent adapter
    parent_id: int
    parent_key: str
    eval_windows: list[ForecastWindow]
    counts: dict[str, int]
    started: float  # time.monotonic() at the start of the loop, for the progress lines


@dataclass
class LoopResult:
    user: str
    profile_version: int
    parent_version_id: int
    tuned_version_id: int | None  # None when no DPO step beat the parent: the user's advisor is unchanged
    reward_version_id: int | None
    method: str
    activated: bool
    report: ComparisonReport
    counts: dict[str, int] = field(default_factory=dict)
    report_paths: dict[str, str] = field(default_factory=dict)
    training_runs: list[int] = field(default_factory=list)


def heldout_grid(store: PreloadedMarketStore, tickers: list[str], start: date, end: date, limit: int, seed: int) -> list[ForecastWindow]:
    """Held-out windows as a grid (a few names x every week) so the backtest has a view each week."""
    weeks = [d for d in weekly_decision_dates(start, end)]
    ranked = sorted(tickers, key=lambda t: order_key(seed, t, start))
    windows: list[ForecastWindow] = []
    for ticker in ranked:
        if len(windows) >= limit:
            break
        row = []
        for day in weeks:
            try:
                window = WindowConfig().build(store, ticker, day)
                label_for(store, window)
                row.append(window)
            except DataUnavailableError:
                continue
        windows.extend(row[: max(0, limit - len(windows))])
    return windows


def run_loop(
    factory: sessionmaker[Session], model_dir: Path, base_model: str, user_name: str, options: LoopOptions, data_dir: Path,
    console: Console | None = None,
) -> LoopResult:
    console = console or Console(quiet=True)
    started = time.monotonic()
    train_start, train_end = options.train_period
    eval_start, eval_end = options.eval_period
    if not train_start < train_end < eval_start <= eval_end:
        raise AdvisorError("periods must be ordered: training weeks end before the held-out weeks start")
    if options.dpo_steps * options.batch_size < options.min_pairs:
        raise AdvisorError(f"{options.dpo_steps} DPO steps of {options.batch_size} pairs would train on {options.dpo_steps * options.batch_size} pairs, "
                           f"fewer than the {options.min_pairs} the loop requires as evidence: raise --dpo-steps or --batch-size")
    with factory() as session:
        user = get_user(session, user_name)
        profile = require_profile(session, user)
        parent, parent_version = handle_for(session, user, base_model, model_dir)
        if parent_version is None or parent.adapter_hash is None:
            raise AdvisorError("there is no fine-tuned adapter to start from: run 'advisor train sft' first")
        user_id, profile_id, profile_version, parent_id = user.id, profile.id, profile.version, parent_version.id
        parent_key = parent_version.key
        params = risk_params(profile)
        store = PreloadedMarketStore(session)
        tickers = list(options.tickers) if options.tickers else store.tickers()
        train_windows = [w for w, _ in labelled_windows(store, tickers, train_start, train_end, WindowConfig(), options.seed, options.train_prompts)]
        eval_windows = heldout_grid(store, tickers, eval_start, eval_end, options.eval_prompts, options.seed)
    if not train_windows or not eval_windows:
        raise AdvisorError(f"no usable windows in {train_start} .. {train_end} or {eval_start} .. {eval_end}")
    eval_k = options.eval_candidates or options.candidates
    _say(console, started, f"[1/5] {options.candidates} candidates for {len(train_windows)} training and {eval_k} for {len(eval_windows)} "
         f"held-out windows (parent: version {parent_id})")
    candidate_ids: list[int] = []
    for windows, k in ((train_windows, options.candidates), (eval_windows, eval_k)):
        sampling = Decoding(mode="sample", num_candidates=k, temperature=options.temperature,
                            max_new_tokens=options.max_new_tokens, seed=options.seed, sample_batch=options.sample_batch)
        with session_scope(factory) as session:
            outcomes = forecast_windows(session, parent, windows, sampling, PromptConfig())
            candidate_ids += [o.forecast.id for group in outcomes for o in group]

    _say(console, started, "[2/5] labelling: outcome-grounded pairs" + (" and simulated A/B choices" if options.simulate_user else ""))
    with session_scope(factory) as session:
        user = get_user(session, user_name)
        profile = session.get_one(RiskProfile, profile_id)  # the version the run started with, even if the user answered again since
        rows = list(session.scalars(select(Forecast).where(Forecast.id.in_(candidate_ids))))
        groups = candidate_groups(rows)
        store = PreloadedMarketStore(session)
        outcome_pairs = label_outcomes(session, store, user, profile, groups, margin=options.margin)
        simulated = simulate_feedback(session, user, profile, groups, seed=options.seed) if options.simulate_user else []
        examples = [e for e in pair_examples(session, user) if e.forecast_date <= eval_end]
        pairs = time_split(examples, split_date=eval_start)
        fit = validation_split([e for e in examples if e.forecast_date < eval_start], options)
        ratings = time_split([e for e in rating_examples(session, user) if e.forecast_date <= eval_end], split_date=eval_start)
    counts = {
        "outcome_pairs_new": len(outcome_pairs), "simulated_pairs_new": len(simulated),
        "train_pairs": len(pairs.train), "eval_pairs": len(pairs.eval), "train_ratings": len(ratings.train),
        "dpo_fit_pairs": len(fit.train), "dpo_validation_pairs": len(fit.eval),
    }
    console.print(f"      {counts}")
    if options.select_step and not fit.eval:
        console.print(f"      too few pairs in the last training weeks to choose a DPO step by (fewer than {MIN_VALIDATION_PAIRS}): "
                      "training on every training-period pair and keeping the last step")
    if len(fit.train) >= options.min_pairs:
        method, train_rows = "dpo", fit.train
    elif len(ratings.train) >= MIN_KTO_EXAMPLES and len({r["label"] for r in ratings.train}) == 2:
        method, train_rows = "kto", ratings.train
    else:
        raise TooFewPreferencesError(
            f"too little feedback for {user_name}: {len(fit.train)} training pairs"
            + (f" besides {len(fit.eval)} pairs of the last training weeks kept for validation" if fit.eval else "")
            + f" (DPO needs {options.min_pairs}: on fewer it swings "
            f"the advisor on too little evidence) and {len(ratings.train)} rated views (KTO needs {MIN_KTO_EXAMPLES}, with both thumbs up "
            "and down); widen the training period, add candidates (--train-prompts, --candidates), or give feedback"
        )

    runs: list[int] = []
    with session_scope(factory) as session:
        reward_run = TrainingRun(kind="reward", user_id=user_id, profile_id=profile_id, parent_model_version_id=parent_id,
                                 config={"steps": options.rm_steps}, data_snapshot=pairs.snapshot())
        policy_run = TrainingRun(kind=method, user_id=user_id, profile_id=profile_id, parent_model_version_id=parent_id,
                                 config=jsonable(asdict(options)), data_snapshot=(pairs if method == "dpo" else ratings).snapshot())
        session.add_all([reward_run, policy_run])
        session.flush()
        reward_run_id, policy_run_id = reward_run.id, policy_run.id
        runs = [reward_run_id, policy_run_id]
    context = LoopContext(factory, model_dir, base_model, user_name, options, data_dir, console, user_id, profile_id,
                          profile_version, params, parent, parent_id, parent_key, eval_windows, counts, started)
    try:
        return _train_evaluate_register(context, method, train_rows, fit.eval, pairs, reward_run_id, policy_run_id)
    except BaseException as exc:
        with session_scope(factory) as session:
            for run_id in runs:
                row = session.get(TrainingRun, run_id)
                if row is not None and row.status == "running":
                    row.status, row.error, row.finished_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
        raise


def _train_evaluate_register(
    c: LoopContext, method: str, train_rows: list[dict[str, Any]], validation_rows: list[dict[str, Any]], pairs: Any,
    reward_run_id: int, policy_run_id: int,
) -> LoopResult:
    factory, model_dir, base_model, user_name, options, console = c.factory, c.model_dir, c.base_model, c.user_name, c.options, c.console
    parent, parent_id, user_id, profile_id = c.parent, c.parent_id, c.user_id, c.profile_id
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    adapters = model_dir / "adapters"
    reward = None
    reward_version_id = None
    if len(pairs.train) >= options.min_pairs:
        _say(console, c.started, f"[3/5] reward model on {len(pairs.train)} pairs")
        reward_dir = adapters / f"reward-u{user_id}-{stamp}"
        result = train_reward_model(base_model, model_dir, pairs.train, pairs.eval, reward_dir, RewardOptions(max_steps=options.rm_steps, batch_size=options.batch_size, seed=options.seed, min_pairs=options.min_pairs))
        reward = RewardScorer.load(base_model, model_dir, reward_dir)
        with session_scope(factory) as session:
            digest = adapter_hash(reward_dir)
            version = ModelVersion(
                key=f"{parent.base.fingerprint[:32]}+{digest[:32]}", name=f"reward-{user_name}-{stamp}", kind="reward",
                base_model_id=base_model, base_fingerprint=parent.base.fingerprint, adapter_path=str(reward_dir.resolve()),
                adapter_hash=digest, parent_id=parent_id, user_id=user_id, profile_id=profile_id, metrics=result.metrics,
            )
            session.add(version)
            session.flush()
            reward_version_id = version.id
            run = session.get_one(TrainingRun, reward_run_id)
            run.status, run.metrics, run.finished_at, run.output_model_version_id = "succeeded", result.metrics, utcnow(), version.id
        console.print(f"      held-out pair accuracy {result.metrics['eval_accuracy']}")
    else:
        with session_scope(factory) as session:
            run = session.get_one(TrainingRun, reward_run_id)
            run.status, run.error, run.finished_at = "failed", f"needs {options.min_pairs} pairs", utcnow()

    select = method == "dpo" and bool(validation_rows)
    _say(console, c.started, f"[4/5] {method.upper()} from the parent adapter on {len(train_rows)} examples"
         + (f", keeping the step that does best on {len(validation_rows)} pairs of the last training weeks" if select else ""))
    out_dir = adapters / f"{method}-u{user_id}-{stamp}"
    spec = PreferenceSpec(
        method="dpo" if method == "dpo" else "kto", base_model=base_model, model_dir=str(model_dir), parent_adapter=str(parent.adapter_path),
        rows_path=str(write_rows(train_rows, out_dir / "train.jsonl")), out_dir=str(out_dir), max_steps=options.dpo_steps,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate, beta=options.beta, seed=options.seed, min_pairs=options.min_pairs,
        validation_rows_path=str(write_rows(validation_rows, out_dir / "validation.jsonl")) if select else None,
        eval_steps=max(2, -(-options.dpo_steps // SELECTION_POINTS)) if select else 0,
    )
    spec.save(out_dir / "spec.json")
    metrics = train_preferences(spec)
    if "selected_step" in metrics:
        console.print(f"      kept step {metrics['selected_step']} of {metrics['steps']} (validation DPO loss "
                      + ", ".join(f"{h['step']}: {h['loss']:.3f}" for h in metrics["validation_curve"]) + ")")
        if metrics["selected_step"] == 0:
            c.counts["dpo_no_step_kept"] = 1
            return _no_step_kept(c, method, metrics, reward_version_id, reward_run_id, policy_run_id, stamp)
    write_adapter_meta(out_dir, base_model=base_model, base_fingerprint=parent.base.fingerprint,
                       extra={"kind": method, "name": f"{method}-{user_name}-{stamp}", "parent_key": c.parent_key})
    tuned = load_model(ModelSpec(base=base_model, adapter=out_dir), model_dir)

    eval_windows = c.eval_windows
    _say(console, c.started, f"[5/5] evaluating tuned vs parent on {len(eval_windows)} held-out windows")
    greedy = Decoding(max_new_tokens=options.max_new_tokens)
    with session_scope(factory) as session:
        tuned_version = ensure_model_version(session, tuned, kind=method, name=f"{method}-{user_name}-{stamp}", parent_id=parent_id,
                                             user_id=user_id, profile_id=profile_id, metrics=metrics)
        tuned_id = tuned_version.id
        tuned_views = [g[0].forecast for g in forecast_windows(session, tuned, eval_windows, greedy, PromptConfig(), Personalisation(user_id, profile_id))]
        parent_views = [g[0].forecast for g in forecast_windows(session, parent, eval_windows, greedy, PromptConfig())]
        profile = session.get_one(RiskProfile, profile_id)
        report = ComparisonReport(user_name, f"{profile.label} v{c.profile_version}", options.eval_period, {"tuned": tuned_id, "parent": parent_id})
        compare(session, PreloadedMarketStore(session), profile, eval_windows, tuned_views, parent_views, pairs.eval, tuned, parent, reward, report, progress=True)
    report.backtest = _backtests(c, tuned_id, sorted({w.ticker for w in eval_windows}))

    with factory() as session:
        changed = require_profile(session, get_user(session, user_name)).id != profile_id
    if changed:
        report.notes.append(f"the user's profile changed during the run: this adapter was tuned for profile v{c.profile_version} "
                            "and is not activated (run the loop again for the new profile)")
    blockers = report.activation_blockers()
    activated = (not blockers or options.force_activate) and not changed
    with session_scope(factory) as session:
        user = get_user(session, user_name)
        run = session.get_one(TrainingRun, policy_run_id)
        run.status, run.finished_at, run.output_model_version_id = "succeeded", utcnow(), tuned_id
        run.metrics = {**metrics, "evaluation": jsonable(report.to_json())}
        version = session.get_one(ModelVersion, tuned_id)
        version.metrics = {**metrics, "heldout_utility": report.utility.get("tuned", {}).get("value"),
                           "parent_heldout_utility": report.utility.get("parent", {}).get("value")}
        if activated:
            reason = "beats parent on held-out utility (interval above 0), ranks the user's pairs no worse, varies its answer" if not blockers else "forced"
            activate(session, user, tuned_id, reason)
        elif not changed:
            report.notes.append("not activated: " + "; ".join(blockers) + " (use --force to activate anyway)")
    paths = write_report(report, c.data_dir / "reports", f"rlhf-{user_name}-{stamp}")
    _say(console, c.started, f"done: report {paths['markdown']}")
    return LoopResult(user_name, c.profile_version, parent_id, tuned_id, reward_version_id, method, activated, report, c.counts, paths,
                      [reward_run_id, policy_run_id])


def _no_step_kept(
    c: LoopContext, method: str, metrics: dict[str, Any], reward_version_id: int | None, reward_run_id: int, policy_run_id: int, stamp: str,
) -> LoopResult:
    """Every trained step did worse than the parent on the last training weeks' pairs: nothing new to serve.

    The kept weights are the parent's own, so registering them would only re-register the parent
    under the user's name; the run is recorded as succeeded with no output model, the report says
    why, and the user's active version is left as it was (evaluating identical views is skipped).
    """
    with session_scope(c.factory) as session:
        profile = session.get_one(RiskProfile, c.profile_id)
        report = ComparisonReport(c.user_name, f"{profile.label} v{c.profile_version}", c.options.eval_period, {"parent": c.parent_id})
        curve = ", ".join(f"step {h['step']}: {h['loss']:.3f}" for h in metrics.get("validation_curve", []))
        report.notes.append(f"no {method.upper()} step did better than the parent on {metrics.get('validation_pairs', 0)} pairs of the last "
                            f"training weeks (validation DPO loss {curve}): the advisor is unchanged and nothing was registered or "
                            "activated; more feedback, more training weeks or --keep-last-step change this")
        run = session.get_one(TrainingRun, policy_run_id)
        run.status, run.finished_at, run.metrics = "succeeded", utcnow(), {**metrics, "evaluation": jsonable(report.to_json())}
    paths = write_report(report, c.data_dir / "reports", f"rlhf-{c.user_name}-{stamp}")
    _say(c.console, c.started, f"done: no step beat the parent; report {paths['markdown']}")
    return LoopResult(c.user_name, c.profile_version, c.parent_id, None, reward_version_id, method, False, report, c.counts, paths,
                      [reward_run_id, policy_run_id])


def _backtests(c: LoopContext, tuned_id: int, tickers: list[str]) -> dict[str, dict[str, Any]]:
    """The tuned and the parent model's views backtested with the user's profile over the held-out weeks."""
    from backtest.runner import BacktestInputError, BacktestRequest, run_backtest

    out: dict[str, dict[str, Any]] = {}
    for name, version_id, owner in (("tuned", tuned_id, c.user_id), ("parent", c.parent_id, None)):
        request = BacktestRequest(
            start=c.options.eval_period[0], end=c.options.eval_period[1], params=c.params, profile_label=f"user profile v{c.profile_version}",
            model_version_id=version_id, tickers=tuple(tickers), user_id=owner, profile_id=c.profile_id, references=False,
        )
        try:
            outcome = run_backtest(c.factory, request, c.data_dir / "charts")
            out[name] = outcome.by_strategy()["views"].metrics | {"run_id": outcome.by_strategy()["views"].run_id}
        except BacktestInputError as exc:
            out[name] = {"error": str(exc)}
    return out


def _say(console: Console, started: float, text: str) -> None:
    """A progress line with the time since the loop started (the loop runs for minutes on a CPU)."""
    console.print(f"[dim]{time.monotonic() - started:6.0f}s[/dim] {text}", soft_wrap=True)
