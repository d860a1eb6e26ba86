"""``advisor sentiment``: the LoRA sentiment classifier alone — train it, score a post or a CSV, evaluate it."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from advisor.cli.common import console, runtime
from advisor.errors import AdvisorError
from advisor.forecaster.sentiment import evaluate_on_valid, find_tfns
from advisor.forecaster.sentiment_lora import (
    KIND,
    LABEL_NAMES,
    PUBLISHED_WEIGHTED_F1,
    SentimentTrainOptions,
    clean_post,
    evaluate_classifier,
    export_sentiment_adapter,
    read_labelled,
    train_sentiment_adapter,
)
from advisor.forecaster.tone import register_sentiment_version, served_classifier

app = typer.Typer(help="Financial sentiment of posts (bearish / bullish / neutral) with the LoRA classifier.", no_args_is_help=True)


def _tfns(rt_bundle: Path | None, tfns: Path | None) -> Path:
    found = tfns or find_tfns(rt_bundle)
    if found is None or not (found / "train.csv").is_file():
        raise AdvisorError("no TFNS data found: pass --tfns DIR (a folder with train.csv and valid.csv), or --bundle next to sentiment/tfns")
    return found


@app.command("train")
def train(
    ctx: typer.Context,
    tfns: Path | None = typer.Option(None, "--tfns", help="Folder with TFNS train.csv / valid.csv (default: next to the bundle)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="The stocknet bundle whose sibling sentiment/tfns is used."),
    epochs: float = typer.Option(2.0, min=0.01, help="Passes over the training split."),
    batch_size: int = typer.Option(32, min=1),
    learning_rate: float = typer.Option(5e-4, min=1e-7),
    lora_r: int = typer.Option(8, min=1),
    layers: int | None = typer.Option(None, min=1, help="Classify from the first N layers of the base (fewer: faster scoring); default all."),
    max_examples: int | None = typer.Option(None, min=8, help="Train on the first N shuffled rows only (a quick run)."),
    out: Path | None = typer.Option(None, "--out", help="Adapter folder (default: <model dir>/adapters/sentiment-lora-<time>)."),
    export: Path | None = typer.Option(None, "--export", help="Also write it as a shippable folder (bf16 weights, TRAINING.md) and print its pins."),
) -> None:
    """Train the sentiment adapter on TFNS's training split and evaluate it on its validation split."""
    rt = runtime(ctx)
    folder = _tfns(bundle or rt.settings.bundle_dir, tfns)
    model_dir = rt.settings.resolved_model_dir
    out = out or model_dir / "adapters" / f"{KIND}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    options = SentimentTrainOptions(base_model=rt.settings.base_model, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                    lora_r=lora_r, layers=layers, max_examples=max_examples)
    metrics = train_sentiment_adapter(folder, model_dir, options, out, log=lambda line: console.print(escape(line)))
    _report(metrics["validation"], evaluate_on_valid(folder))
    console.print(f"adapter saved to {escape(str(out))}")
    if rt.database_is_current():
        version = register_sentiment_version(rt.session_factory, rt.settings.base_model, model_dir, out)
        if version is not None:
            console.print(f"registered as model version {version} (kind sentiment)")
    if export is not None:
        pins = export_sentiment_adapter(out, export, command="advisor " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
        console.print(f"exported to {escape(str(export))}; pins for SHIPPED_FILES in advisor/forecaster/sentiment_lora.py:", soft_wrap=True)
        console.print(json.dumps(pins, indent=4), soft_wrap=True, markup=False)


@app.command("score")
def score(
    ctx: typer.Context,
    text: str | None = typer.Argument(None, help="A post to score."),
    csv: Path | None = typer.Option(None, "--csv", help="Score every row of a CSV instead."),
    text_column: str = typer.Option("text", "--text-column", help="The CSV column holding the posts."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the scored CSV (default: <csv>.scored.csv)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="A sentiment adapter folder (default: the newest trained one, else the shipped one)."),
) -> None:
    """Score one post, or a CSV's posts (adds label, p_bearish, p_bullish, p_neutral)."""
    rt = runtime(ctx)
    if (text is None) == (csv is None):
        raise AdvisorError("give either a post's text or --csv FILE")
    if text is not None and not text.strip():
        raise AdvisorError("the text is empty: give a post to score")
    frame = None
    if csv is not None:
        try:
            frame = pd.read_csv(csv)
        except (OSError, ValueError) as exc:
            raise AdvisorError(f"cannot read {csv}: {exc}") from exc
        if text_column not in frame.columns:
            raise AdvisorError(f"{csv} has no '{text_column}' column (columns: {', '.join(map(str, frame.columns))}); pass --text-column")
    classifier, _ = served_classifier(rt.settings.base_model, rt.settings.resolved_model_dir, adapter)
    max_tokens = classifier.max_tokens
    if text is not None:
        probs = classifier.probabilities([text])[0]
        label = int(probs.argmax())
        console.print(f"{LABEL_NAMES[label]} ({float(probs[label]):.0%}): " + ", ".join(f"{LABEL_NAMES[i]} {float(p):.2f}" for i, p in enumerate(probs)))
        if len(classifier.tokenizer(clean_post(text))["input_ids"]) > max_tokens:
            console.print(f"note: the post is longer than {max_tokens} tokens; only its first {max_tokens} were read")
        return
    assert frame is not None and csv is not None
    texts = frame[text_column].fillna("").astype(str).tolist()
    probs = classifier.probabilities(texts)
    frame["label"] = [LABEL_NAMES[int(p.argmax())] for p in probs]
    for index, name in LABEL_NAMES.items():
        frame[f"p_{name}"] = [round(float(p[index]), 4) for p in probs]
    target = out or csv.with_suffix(".scored.csv")
    frame.to_csv(target, index=False)
    counts = frame["label"].value_counts().to_dict()
    console.print(f"scored {len(frame)} posts ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}) -> {escape(str(target))}")


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    csv: Path | None = typer.Option(None, "--csv", help="A labelled CSV (text, label 0/1/2; default: TFNS validation)."),
    bundle: Path | None = typer.Option(None, "--bundle"),
    adapter: Path | None = typer.Option(None, "--adapter"),
) -> None:
    """The adapter beside the naive Bayes baseline and the published figures, on TFNS validation (or --csv)."""
    rt = runtime(ctx)
    tfns = find_tfns(bundle or rt.settings.bundle_dir)
    path = csv or (tfns / "valid.csv" if tfns else None)
    if path is None:
        raise AdvisorError("no labelled data: pass --csv FILE or --bundle (TFNS next to it)")
    frame = read_labelled(path)
    classifier, _ = served_classifier(rt.settings.base_model, rt.settings.resolved_model_dir, adapter)
    _report(evaluate_classifier(classifier.predict, frame), evaluate_on_valid(tfns) if tfns and csv is None else None)


def _report(adapter: dict, naive_bayes: dict | None) -> None:
    table = Table(title="Sentiment, weighted F1 (TFNS validation unless --csv)")
    for column in ("model", "weighted F1", "accuracy", "bearish F1", "bullish F1", "neutral F1", "source"):
        table.add_column(column)
    f1 = adapter["f1"]
    table.add_row("LoRA adapter (this base)", f"{adapter['weighted_f1']:.3f}", f"{adapter['accuracy']:.3f}",
                  f"{f1['bearish']:.3f}", f"{f1['bullish']:.3f}", f"{f1['neutral']:.3f}", f"measured, n={adapter['n']}")
    if naive_bayes is not None:
        table.add_row("naive Bayes (the fallback)", f"{naive_bayes['weighted_f1']:.3f}", f"{naive_bayes['accuracy']:.3f}", "", "", "", "measured")
    for name, value in PUBLISHED_WEIGHTED_F1.items():
        table.add_row(name, f"{value:.3f}", "", "", "", "", "published, not re-run")
    console.print(table)
    console.print("confusion (rows: true bearish, bullish, neutral; columns: predicted): " + str(adapter["confusion"]))
