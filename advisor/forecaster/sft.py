"""Supervised fine-tuning of the forecaster (TRL SFTTrainer + LoRA) on historical windows.

Examples come from the training period only: a (ticker, week) pair is used when its decision date is
in [start, end] *and* its label week ends by ``end``, so no label reaches past the period and held-out
weeks after ``end`` stay unseen. Prompts are built exactly as at forecast time; targets come from
:mod:`advisor.forecaster.targets`; the loss is on the answer only (conversational prompt-completion
data). Pairs are drawn deterministically (hash order) so a run is reproducible and spread over
tickers and weeks. The run is recorded (config, data snapshot, metrics); the adapter is saved with
the base model's fingerprint and registered as a model version whose parent is the base.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from advisor import market_calendar
from advisor.data.store import MarketStore, PreloadedMarketStore
from advisor.data.windows import ForecastWindow, Horizon, WeeklyLabel, decision_dates, label_for
from advisor.errors import AdvisorError, DataUnavailableError
from advisor.forecaster.generation import Decoding
from advisor.forecaster.loading import ModelSpec, load_model, prepare_tokenizer, write_adapter_meta
from advisor.forecaster.modelstore import fingerprint, resolve_model_path
from advisor.forecaster.prompts import PromptConfig, build_prompt
from advisor.forecaster.sentiment import PostScorer
from advisor.forecaster.service import WindowConfig, forecast_windows
from advisor.forecaster.stocknet import stocknet_keeps
from advisor.forecaster.targets import sft_target
from advisor.forecaster.training import CompletionLogitsSFTTrainer, Precision, training_attention
from advisor.forecaster.versions import base_key, ensure_model_version
from db.engine import session_scope
from db.models import TrainingRun
from db.types import utcnow


class TooFewExamplesError(AdvisorError):
    """The training period yields too few usable windows."""


@dataclass(frozen=True)
class SFTOptions:
    start: date
    end: date
    base_model: str
    tickers: tuple[str, ...] | None = None
    max_steps: int = 60
    batch_size: int = 4
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # dropout on every LoRA input costs ~50% more per step on CPU
    max_examples: int | None = None  # default: max_steps * batch_size (one pass)
    seed: int = 0
    check_prompts: int = 16  # held-out prompts generated after training to measure the parse rate
    detach_prompt: bool = False  # prompt forward without gradient (training.py): 1.4x faster steps, but learns less per step
    logging_steps: int | None = None  # default: a tenth of the steps
    window: WindowConfig = field(default_factory=WindowConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def version_kind(self) -> str:
        """Weekly view adapters are ``sft``; stocknet daily-movement adapters ``sft-daily``."""
        return "sft-daily" if self.window.horizon is Horizon.DAY else "sft"

    def example_budget(self) -> int:
        return self.max_examples or self.max_steps * self.batch_size


@dataclass
class SFTResult:
    run_id: int
    model_version_id: int
    adapter_path: Path
    metrics: dict[str, Any]
    snapshot: dict[str, Any] = field(default_factory=dict)


def order_key(seed: int, ticker: str, day: date) -> str:
    return hashlib.sha256(f"{seed}|{ticker}|{day}".encode()).hexdigest()


def label_end(day: date, horizon: Horizon) -> date:
    if horizon is Horizon.DAY:
        return market_calendar.next_session_after(day)
    return market_calendar.session_on_or_before(day + timedelta(days=7))


def candidate_pairs(
    store: MarketStore, tickers: list[str], start: date, end: date, seed: int, horizon: Horizon = Horizon.WEEK
) -> list[tuple[str, date]]:
    """(ticker, decision date) pairs whose label period ends within [start, end], in deterministic hash order."""
    pairs = []
    for ticker in tickers:
        span = store.date_range(ticker)
        if span is None or span[1] < start or span[0] > end:
            continue
        for day in decision_dates(max(start, span[0]), min(end, span[1]), horizon):
            if label_end(day, horizon) <= end:
                pairs.append((ticker, day))
    return sorted(pairs, key=lambda p: order_key(seed, *p))


def labelled_windows(
    store: MarketStore, tickers: list[str], start: date, end: date, config: WindowConfig, seed: int, limit: int | None
) -> list[tuple[ForecastWindow, WeeklyLabel]]:
    """Windows with their labels for a period (daily: only the days the stocknet protocol keeps)."""
    out: list[tuple[ForecastWindow, WeeklyLabel]] = []
    for ticker, day in candidate_pairs(store, tickers, start, end, seed, config.horizon):
        if limit is not None and len(out) >= limit:
            break
        try:
            window = config.build(store, ticker, day)
            label = label_for(store, window)
        except DataUnavailableError:
            continue  # e.g. too little history at the start of a ticker's data
        if config.horizon is Horizon.DAY and not stocknet_keeps(label.return_pct):
            continue
        out.append((window, label))
    return out


def build_examples(
    store: MarketStore, tokenizer: Any, options: SFTOptions, scorer: PostScorer, *, limit: int, start: date, end: date
) -> tuple[list[dict[str, Any]], list[tuple[str, date]]]:
    """Conversational prompt/completion rows for up to ``limit`` pairs in the period."""
    tickers = list(options.tickers) if options.tickers else store.tickers()
    rows: list[dict[str, Any]] = []
    used: list[tuple[str, date]] = []
    pairs = labelled_windows(store, tickers, start, end, options.window, options.seed, limit)
    scorer.prepare(t.text for window, _ in pairs for week in window.weeks for t in week.texts)  # one batch for a model scorer
    for window, label in pairs:
        prompt = build_prompt(window, tokenizer, options.prompt)
        rows.append(
            {
                "prompt": list(prompt.messages),
                "completion": [{"role": "assistant", "content": sft_target(window, label, scorer)}],
            }
        )
        used.append((window.ticker, window.decision_date))
    return rows, used


def train_sft(
    factory: sessionmaker[Session],
    model_dir: Path,
    options: SFTOptions,
    scorer: PostScorer,
    *,
    console: Console | None = None,
    progress: bool = True,
) -> SFTResult:
    """Run SFT end to end; a failure marks the run failed and registers nothing."""
    console = console or Console(quiet=True)
    if options.end <= options.start:
        raise AdvisorError(f"--end {options.end} must be after --start {options.start}")
    base_path = resolve_model_path(options.base_model, model_dir)
    with session_scope(factory) as session:
        run = TrainingRun(kind="sft", status="running", config=_jsonable(asdict(options)))
        session.add(run)
        session.flush()
        run_id = run.id
    try:
        return _train(factory, model_dir, base_path, options, scorer, run_id, console, progress)
    except BaseException as exc:
        with session_scope(factory) as session:
            failed = session.get(TrainingRun, run_id)
            assert failed is not None
            failed.status, failed.error, failed.finished_at = "failed", f"{type(exc).__name__}: {exc}", utcnow()
        raise


def _train(
    factory: sessionmaker[Session], model_dir: Path, base_path: Path, options: SFTOptions, scorer: PostScorer,
    run_id: int, console: Console, progress: bool,
) -> SFTResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    prepare_tokenizer(tokenizer)
    with factory() as session:
        store = PreloadedMarketStore(session)
        rows, used = build_examples(store, tokenizer, options, scorer, limit=options.example_budget(), start=options.start, end=options.end)
    if len(rows) < options.batch_size:
        raise TooFewExamplesError(
            f"only {len(rows)} usable training windows between {options.start} and {options.end}; "
            f"at least {options.batch_size} (one batch) are needed — widen the period or add tickers"
        )
    dataset_sha = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    snapshot = {
        "period": [str(options.start), str(options.end)],
        "examples": len(rows),
        "tickers": len({t for t, _ in used}),
        "first_decision": str(min(d for _, d in used)),
        "last_decision": str(max(d for _, d in used)),
        "dataset_sha256": dataset_sha,
        "sentiment": scorer.kind,
        "horizon": options.window.horizon.value,
    }
    console.print(f"SFT data: {len(rows)} windows from {snapshot['tickers']} tickers, {snapshot['first_decision']} .. {snapshot['last_decision']}")

    precision = Precision.auto()
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, attn_implementation=training_attention())
    # Run ids are per database; the suffix keeps databases that share a model directory apart.
    out_dir = model_dir / "adapters" / f"{options.version_kind()}-run{run_id}-{uuid.uuid4().hex[:8]}"
    config = SFTConfig(
        output_dir=str(out_dir / "trainer"),
        use_cpu=precision.use_cpu,
        bf16=precision.bf16,
        per_device_train_batch_size=options.batch_size,
        max_steps=options.max_steps,
        learning_rate=options.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, options.max_steps // 10),
        logging_steps=options.logging_steps or max(1, options.max_steps // 10),
        gradient_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=options.seed,
        max_length=options.prompt.max_prompt_tokens + 320,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    trainer = CompletionLogitsSFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft_config,
        detach_prompt=options.detach_prompt,
    )
    started = time.perf_counter()
    train_output = trainer.train()
    elapsed = time.perf_counter() - started
    cast(Any, trainer.model).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    base_fp = fingerprint(base_path, cache_dir=model_dir)
    kind = options.version_kind()
    write_adapter_meta(
        out_dir,
        base_model=options.base_model,
        base_fingerprint=base_fp,
        extra={"kind": kind, "name": f"{kind}-run{run_id}", "parent_key": base_key(base_fp), "training_run_id": run_id},
    )
    curve = [(int(entry["step"]), float(entry["loss"])) for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    losses = [loss for _, loss in curve]
    metrics: dict[str, Any] = {
        "train_loss": float(train_output.training_loss),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "steps": int(train_output.global_step),
        "seconds": round(elapsed, 1),
        "seconds_per_step": round(elapsed / max(1, train_output.global_step), 2),
        "peak_rss_mb": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "bf16": precision.bf16,
        "detach_prompt": options.detach_prompt,
        "loss_curve": curve,
    }
    del trainer, model

    handle = load_model(ModelSpec(base=options.base_model, adapter=out_dir), model_dir)
    if options.check_prompts:
        metrics.update(_held_out_parse_check(factory, handle, options))
    with session_scope(factory) as session:
        version = ensure_model_version(session, handle, kind=kind, name=f"{kind}-run{run_id}", metrics=metrics)
        run = session.get(TrainingRun, run_id)
        assert run is not None
        run.status, run.finished_at = "succeeded", utcnow()
        run.data_snapshot, run.metrics = snapshot, metrics
        run.parent_model_version_id = version.parent_id
        run.output_model_version_id = version.id
        version_id = version.id
    return SFTResult(run_id, version_id, out_dir, metrics, snapshot)


def _held_out_parse_check(factory: sessionmaker[Session], handle: Any, options: SFTOptions) -> dict[str, Any]:
    """Generate greedy views for held-out weeks after the period and measure how many parse.

    The check's rows are not kept (a rolled-back transaction): evaluation stores its own forecasts.
    """
    start = options.end + timedelta(days=1)
    with factory() as session:
        store = PreloadedMarketStore(session)
        tickers = list(options.tickers) if options.tickers else store.tickers()
        pairs = labelled_windows(store, tickers, start, start + timedelta(days=120), options.window, options.seed + 1, options.check_prompts)
        windows = [window for window, _label in pairs]
        if not windows:
            return {"heldout_parse_rate": None, "heldout_prompts": 0}
        # Free decoding: the check measures what the adapter learned, not what grounding enforces.
        outcomes = forecast_windows(session, handle, windows, Decoding(grounded=False), options.prompt, progress=False)
        session.rollback()
    views = [group[0] for group in outcomes]
    parsed = sum(1 for o in views if o.view.is_signal)
    checks = [o.check for o in views if o.check is not None]
    stated = sum(c.stated for c in checks)
    return {
        "heldout_parse_rate": parsed / len(windows),
        "heldout_prompts": len(windows),
        "heldout_check_passed": sum(c.passed for c in checks) / len(windows),
        "heldout_facts_found": sum(c.found for c in checks) / stated if stated else None,
        "heldout_contradictions": sum(bool(c.contradictions) for c in checks) / len(checks) if checks else None,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
