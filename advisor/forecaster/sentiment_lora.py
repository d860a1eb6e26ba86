"""A LoRA sentiment classifier on the forecaster's base model: FinGPT's sentiment task on TFNS.

FinGPT's headline result is financial sentiment with LoRA (TFNS weighted F1: FinGPT v3.3 0.903 on
Llama-2-13B, GPT-4 0.808, FinBERT 0.733 — published figures, not re-run here). This module trains the
same kind of adapter on the project's default base (SmolLM2-135M): a sequence-classification head
(three labels: bearish, bullish, neutral) plus LoRA on every linear layer, with transformers' Trainer
and peft (TRL has no classification trainer; its reward trainer is pairwise). A classification head
rather than generating the label word: one forward pass per post, no decoding, and the label is the
argmax of three logits, never an unparsable answer.

Posts are cleaned as prompts quote them (links removed) and cut to ``max_tokens`` tokens; scoring sorts
posts by length so a batch carries little padding.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Sequence, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd

from advisor.data.textselect import clean_for_prompt
from advisor.errors import AdvisorError
from advisor.forecaster.loading import resolve_device_dtype
from advisor.forecaster.modelstore import fingerprint, resolve_model_path, sha256_file
from advisor.forecaster.sentiment import BEARISH, BULLISH, LABELS, NEUTRAL
from advisor.forecaster.shipped import shipped_adapter

# transformers' model code reads its own deprecated gradient-checkpointing name on load and merge; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)

LABEL_NAMES = {BEARISH: "bearish", BULLISH: "bullish", NEUTRAL: "neutral"}
WEIGHTS_FILE = "adapter_model.safetensors"
KIND = "sentiment-lora"
META_FILE = "advisor-sentiment.json"
# The adapter that ships with the project (made by `advisor sentiment train --export`), each file pinned by SHA-256.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped" / "sentiment-default"
SHIPPED_FILES: dict[str, str] = {
    "adapter_config.json": "75994a995e22a38261aab912b60aefa92abc5b0e8bd579a0cecada12394acebe",
    "adapter_model.safetensors": "3d9b52858c2ec2bd48299562a5189755be1f14e9f4fa3af920f1df7fd2833fd9",
    "advisor-sentiment.json": "91a3ecb8afde32fad8741b28346097282f5acec24c8d5a4c534e6d58cc400398",
}
# TFNS weighted F1 as published (FinGPT's sentiment benchmark table); shown beside ours, never re-run here.
PUBLISHED_WEIGHTED_F1 = {"FinGPT v3.3 (Llama-2-13B + LoRA), published": 0.903, "GPT-4, published": 0.808, "FinBERT, published": 0.733}


class SentimentDataError(AdvisorError):
    """A sentiment CSV that cannot be used as asked."""


@dataclass(frozen=True)
class SentimentTrainOptions:
    base_model: str
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 5e-4
    lora_r: int = 8  # measured: r=8 0.879 weighted F1 on TFNS validation, r=16 0.874
    lora_alpha: int = 32
    max_tokens: int = 64
    layers: int | None = None  # classify from the first N decoder layers (None: all); recorded with the adapter
    max_examples: int | None = None  # a quick run on the first N training rows (hash order)
    seed: int = 0


def clean_post(text: str) -> str:
    return clean_for_prompt(str(text)) or str(text).strip()


def read_labelled(path: Path, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """A TFNS-format CSV (text, label 0 bearish / 1 bullish / 2 neutral), checked."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SentimentDataError(f"cannot read {path}: {exc}") from exc
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise SentimentDataError(f"{path} has no '{column}' column (columns: {', '.join(map(str, frame.columns))})")
    labels = pd.to_numeric(frame[label_column], errors="coerce")
    bad = frame.index[~labels.isin(LABELS)]
    if len(bad):
        raise SentimentDataError(f"{path} row {int(bad[0]) + 2}: label must be 0 (bearish), 1 (bullish) or 2 (neutral)")
    return pd.DataFrame({"text": frame[text_column].astype(str).map(clean_post), "label": labels.astype(int)})


def train_sentiment_adapter(
    tfns_dir: Path, model_dir: Path, options: SentimentTrainOptions, out_dir: Path, *, progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the adapter on ``tfns_dir/train.csv``, save it to ``out_dir``, evaluate it on ``valid.csv``; the metrics."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from advisor.forecaster.training import Precision, training_attention

    base_path = resolve_model_path(options.base_model, model_dir)
    train = read_labelled(tfns_dir / "train.csv").sample(frac=1.0, random_state=options.seed)
    if options.max_examples:
        train = train.head(options.max_examples)
    tokenizer = _tokenizer(AutoTokenizer, base_path)
    encoded = Dataset.from_dict({"text": train["text"].tolist(), "label": train["label"].tolist()}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=options.max_tokens), batched=True, remove_columns=["text"]
    )
    encoded = encoded.select(length_buckets([len(ids) for ids in encoded["input_ids"]], options.batch_size, options.seed))
    precision = Precision.auto()
    model = AutoModelForSequenceClassification.from_pretrained(
        base_path, num_labels=len(LABELS), dtype=torch.float32, attn_implementation=training_attention(), **_layer_kwargs(base_path, options.layers)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.id2label, model.config.label2id = dict(LABEL_NAMES), {v: k for k, v in LABEL_NAMES.items()}
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=options.lora_r, lora_alpha=options.lora_alpha, target_modules="all-linear"))
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), use_cpu=precision.use_cpu, bf16=precision.bf16, per_device_train_batch_size=options.batch_size,
        num_train_epochs=options.epochs, learning_rate=options.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=max(1, int(0.05 * options.epochs * math.ceil(len(train) / options.batch_size))),
        logging_steps=20, save_strategy="no", report_to="none", seed=options.seed, disable_tqdm=not progress, dataloader_num_workers=0,
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=encoded, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    curve = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e and "step" in e]
    metrics: dict[str, Any] = {
        "kind": KIND, "examples": len(train), "steps": int(output.global_step), "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, output.global_step), 3), "train_loss": float(output.training_loss),
        "loss_curve": curve, "peak_rss_mb": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "bf16": precision.bf16,
        "options": asdict(options),
    }
    del trainer, model
    classifier = SentimentClassifier.load(base_path, out_dir, max_tokens=options.max_tokens, layers=options.layers)
    metrics["validation"] = evaluate_classifier(classifier.predict, read_labelled(tfns_dir / "valid.csv"))
    meta = {"kind": KIND, "base_model": options.base_model, "base_fingerprint": fingerprint(base_path, cache_dir=model_dir),
            "max_tokens": options.max_tokens, "layers": options.layers, "metrics": metrics}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    log(f"trained in {seconds:.0f} s ({metrics['seconds_per_step']} s/step); validation weighted F1 {metrics['validation']['weighted_f1']:.3f}")
    return metrics


def length_buckets(lengths: Sequence[int], batch_size: int, seed: int) -> list[int]:
    """An order of the rows in which each batch holds posts of similar length (little padding), the batches
    themselves in random order: sorted by length, cut into batches, batches shuffled."""
    import random

    ranked = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
    random.Random(seed).shuffle(batches)
    return [i for batch in batches for i in batch]


def _trainer_class() -> Any:
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class InOrderTrainer(Trainer):
        """Trainer that keeps the dataset's order (the length buckets) instead of shuffling rows."""

        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return SequentialSampler(cast(Sized, self.train_dataset))

    return InOrderTrainer


def evaluate_classifier(predict: Callable[[Sequence[str]], list[int]], frame: pd.DataFrame) -> dict[str, Any]:
    """Weighted F1, per-class F1 and the confusion matrix (rows: truth, columns: predicted) on a labelled frame."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    started = time.perf_counter()
    predicted = predict(frame["text"].tolist())
    seconds = time.perf_counter() - started
    truth = frame["label"].tolist()
    per_class = f1_score(truth, predicted, labels=list(LABELS), average=None)
    return {
        "n": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "weighted_f1": float(f1_score(truth, predicted, labels=list(LABELS), average="weighted")),
        "f1": {LABEL_NAMES[label]: float(score) for label, score in zip(LABELS, per_class, strict=True)},
        "confusion": confusion_matrix(truth, predicted, labels=list(LABELS)).tolist(),
        "seconds": round(seconds, 2),
    }


class SentimentClassifier:
    """The base plus the sentiment adapter, scoring posts in length-sorted batches."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int) -> None:
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens

    @classmethod
    def load(cls, base_path: Path, adapter_path: Path, *, max_tokens: int = 64, layers: int | None = None) -> SentimentClassifier:
        """The base with the adapter merged into its weights (in float32, then cast to the serving dtype):
        1.5x faster than applying LoRA beside each layer (1,000 posts in 27 s against 40 s here)."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        device, dtype = resolve_device_dtype()
        tokenizer = _tokenizer(AutoTokenizer, base_path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base has no classification head yet: the adapter brings it, no news for a user
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                base_path, num_labels=len(LABELS), dtype=torch.float32, **_layer_kwargs(base_path, layers)
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        model.config.pad_token_id = tokenizer.pad_token_id
        merged = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
        return cls(merged.to(device=device, dtype=dtype).eval(), tokenizer, max_tokens)

    def predict(self, texts: Sequence[str], batch_size: int = 16) -> list[int]:
        return [int(p.argmax()) for p in self.probabilities(texts, batch_size)]

    def probabilities(self, texts: Sequence[str], batch_size: int = 16) -> list[Any]:
        """Per post, the probabilities of (bearish, bullish, neutral)."""
        import torch

        encoded = self.tokenizer([clean_post(t) for t in texts], truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[Any] = [None] * len(encoded)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
                probs = torch.softmax(self.model(**batch.to(self.model.device)).logits.float(), dim=-1).cpu()
                for row, index in enumerate(chunk):
                    out[index] = probs[row]
        return out


def _layer_kwargs(base_path: Path, layers: int | None) -> dict[str, Any]:
    """``from_pretrained`` arguments that keep the first ``layers`` decoder layers (and the final norm)."""
    if layers is None:
        return {}
    total = int(json.loads((base_path / "config.json").read_text()).get("num_hidden_layers", 0))
    if not 1 <= layers <= total:
        raise AdvisorError(f"--layers must be between 1 and the base's {total} layers, not {layers}")
    return {"num_hidden_layers": layers}


def _tokenizer(auto_tokenizer: Any, base_path: Path) -> Any:
    tokenizer = auto_tokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"  # the head reads the last non-padding token
    return tokenizer


def find_sentiment_adapter(model_dir: Path, *, shipped_dir: Path | None = None, pins: dict[str, str] | None = None) -> Path | None:
    """The newest sentiment adapter trained into ``model_dir``, else the shipped one (its pins checked; a
    changed file is refused with :class:`~advisor.forecaster.shipped.ShippedAdapterError`), else None."""
    found = sorted((model_dir / "adapters").glob(f"{KIND}-*/{META_FILE}"), key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1].parent
    directory, pins = shipped_dir or SHIPPED_DIR, SHIPPED_FILES if pins is None else pins
    if pins and (directory / WEIGHTS_FILE).is_file():
        return shipped_adapter(directory, pins)
    return None


def load_classifier(base_model: str, model_dir: Path, adapter: Path | None = None) -> tuple[SentimentClassifier, Path]:
    """The classifier for ``adapter`` (default: :func:`find_sentiment_adapter`), after checking it belongs to the base; and its folder."""
    folder = adapter or find_sentiment_adapter(model_dir)
    if folder is None:
        raise AdvisorError("no sentiment adapter yet: run 'advisor sentiment train' (or pass --adapter DIR)")
    base_path = resolve_model_path(base_model, model_dir)
    check_base(folder, base_path, model_dir)
    return SentimentClassifier.load(base_path, folder, max_tokens=adapter_max_tokens(folder), layers=adapter_layers(folder)), folder


def check_base(adapter_path: Path, base_path: Path, model_dir: Path) -> None:
    """Refuse a sentiment adapter recorded as trained on another base model."""
    try:
        meta = json.loads((adapter_path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise AdvisorError(f"{adapter_path} is not a sentiment adapter (no readable {META_FILE}): {exc}") from exc
    expected = meta.get("base_fingerprint")
    if expected and expected != fingerprint(base_path, cache_dir=model_dir):
        raise AdvisorError(f"the sentiment adapter {adapter_path} was trained on {meta.get('base_model', 'another base')}, not on {base_path.name}")


def export_sentiment_adapter(adapter: Path, target: Path, *, command: str) -> dict[str, str]:
    """Write ``adapter`` as a shippable directory (weights in bfloat16, meta, TRAINING.md); the pins for :data:`SHIPPED_FILES`."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for stale in target.iterdir():
        if stale.is_file():
            stale.unlink()
    tensors = {name: t.to(torch.bfloat16).contiguous() for name, t in load_file(str(adapter / WEIGHTS_FILE)).items()}
    save_file(tensors, str(target / WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.copy(adapter / "adapter_config.json", target / "adapter_config.json")
    meta = json.loads((adapter / META_FILE).read_text())
    meta["command"] = command
    (target / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (target / "TRAINING.md").write_text(_training_card(command, meta.get("metrics", {})))
    return {name: sha256_file(target / name) for name in ("adapter_config.json", WEIGHTS_FILE, META_FILE)}


def _training_card(command: str, metrics: dict[str, Any]) -> str:
    valid = metrics.get("validation", {})
    lines = ["# The shipped sentiment adapter (sentiment-default)", "", "Reproduce (from the repository root, after `make install`):", "",
             f"    {command}", "", "Training on another CPU gives an adapter of the same quality but not the same bytes; the pins in",
             "advisor/forecaster/sentiment_lora.py are those of this one. Weights are stored in bfloat16.", "", "## Training", ""]
    lines += [f"- {key}: {metrics[key]}" for key in ("examples", "steps", "train_seconds", "seconds_per_step", "train_loss", "bf16", "options") if key in metrics]
    lines += ["", "## TFNS validation", "", f"- n: {valid.get('n')}", f"- weighted F1: {valid.get('weighted_f1', 0):.4f}",
              f"- accuracy: {valid.get('accuracy', 0):.4f}", f"- per-class F1: {valid.get('f1')}",
              f"- confusion (rows true, columns predicted; bearish, bullish, neutral): {valid.get('confusion')}",
              "", "## Loss curve", "", "| step | loss |", "|---|---|"]
    lines += [f"| {step} | {loss:.4f} |" for step, loss in metrics.get("loss_curve", [])]
    return "\n".join(lines) + "\n"


def adapter_meta(adapter_path: Path) -> dict[str, Any]:
    """What was recorded with the adapter when it was trained (empty when nothing readable was)."""
    try:
        meta = json.loads((adapter_path / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def adapter_max_tokens(adapter_path: Path) -> int:
    """The post length (tokens) the adapter was trained on; longer posts are cut there when scored."""
    return int(adapter_meta(adapter_path).get("max_tokens") or 64)


def adapter_layers(adapter_path: Path) -> int | None:
    """How many of the base's decoder layers the adapter classifies from (None: all)."""
    value = adapter_meta(adapter_path).get("layers")
    return int(value) if value else None


def adapter_metrics(adapter_path: Path) -> dict[str, Any]:
    """The training and validation figures recorded with the adapter (empty when none were)."""
    return dict(adapter_meta(adapter_path).get("metrics") or {})
