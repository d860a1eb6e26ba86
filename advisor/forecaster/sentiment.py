"""A small, transparent sentiment scorer for posts, used to write SFT targets (no external model).

When the Twitter Financial News Sentiment set (TFNS: ``train.csv``/``valid.csv`` with label 0 bearish,
1 bullish, 2 neutral) is available, a multinomial naive Bayes over word unigrams and bigrams is
trained on its training split in about a second; :func:`evaluate_on_valid` reports its weighted F1 on
the validation split (for reference, the TFNS benchmark reports FinBERT 0.733, GPT-4 0.808). Without
TFNS a short finance lexicon is used instead. Either way the scorer is deterministic.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import pandas as pd

BEARISH, BULLISH, NEUTRAL = 0, 1, 2
LABELS = (BEARISH, BULLISH, NEUTRAL)
TOKEN_RE = re.compile(r"[a-z][a-z'\-]+|\d+(?:\.\d+)?%?")
URL_RE = re.compile(r"https?://\S+")
CASHTAG_RE = re.compile(r"\$[A-Za-z.\-]+")

LEXICON_UP = {
    "beat", "beats", "raise", "raises", "raised", "upgrade", "upgraded", "record", "surge", "surges", "soar",
    "soars", "rally", "gain", "gains", "growth", "strong", "buy", "bullish", "outperform", "jumps", "higher",
    "profit", "wins", "approval", "approved", "expands", "boost", "tops",
}
LEXICON_DOWN = {
    "miss", "misses", "cut", "cuts", "downgrade", "downgraded", "lawsuit", "probe", "recall", "falls", "fall",
    "drop", "drops", "plunge", "plunges", "weak", "loss", "losses", "sell", "bearish", "underperform", "lower",
    "decline", "declines", "warning", "warns", "fine", "fined", "investigation", "layoffs", "slump",
}


def tokens(text: str) -> list[str]:
    text = CASHTAG_RE.sub(" ", URL_RE.sub(" ", text.lower()))
    words = TOKEN_RE.findall(text)
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]


@dataclass(frozen=True)
class NaiveBayes:
    log_prior: dict[int, float]
    log_likelihood: dict[int, dict[str, float]]
    log_unseen: dict[int, float]

    def scores(self, text: str) -> dict[int, float]:
        toks = tokens(text)
        return {
            label: self.log_prior[label] + sum(self.log_likelihood[label].get(t, self.log_unseen[label]) for t in toks)
            for label in LABELS
        }

    def predict(self, text: str) -> int:
        scores = self.scores(text)
        return max(LABELS, key=lambda label: (scores[label], -label))


def train_naive_bayes(texts: list[str], labels: list[int], alpha: float = 0.5) -> NaiveBayes:
    counts: dict[int, Counter[str]] = {label: Counter() for label in LABELS}
    docs = Counter(labels)
    for text, label in zip(texts, labels, strict=True):
        counts[label].update(tokens(text))
    vocab = set().union(*counts.values())
    log_prior = {label: math.log(docs[label] / len(labels)) for label in LABELS}
    log_likelihood, log_unseen = {}, {}
    for label in LABELS:
        total = sum(counts[label].values()) + alpha * len(vocab)
        log_likelihood[label] = {t: math.log((c + alpha) / total) for t, c in counts[label].items()}
        log_unseen[label] = math.log(alpha / total)
    return NaiveBayes(log_prior, log_likelihood, log_unseen)


class PostScorer(Protocol):
    """What reads a post's tone: ``score(text)`` in {-1, 0, +1} (bearish, neutral, bullish).

    ``prepare(texts)`` lets a model-backed scorer read many posts in one batch before they are asked
    one by one; callers that know their posts up front call it.
    """

    @property
    def kind(self) -> str: ...

    def score(self, text: str) -> int: ...

    def prepare(self, texts: Iterable[str]) -> None: ...


class SentimentScorer:
    """``score(text)`` in {-1, 0, +1}: bearish, neutral, bullish (naive Bayes, or the lexicon)."""

    def __init__(self, model: NaiveBayes | None) -> None:
        self.model = model

    def prepare(self, texts: Iterable[str]) -> None:
        """Nothing to batch: scoring a post is a dictionary walk."""

    @property
    def kind(self) -> str:
        return "naive-bayes (TFNS)" if self.model else "lexicon"

    def score(self, text: str) -> int:
        if self.model is not None:
            label = self.model.predict(text)
            return {BEARISH: -1, BULLISH: 1, NEUTRAL: 0}[label]
        words = set(tokens(text))
        up, down = len(words & LEXICON_UP), len(words & LEXICON_DOWN)
        return (up > down) - (down > up)


def find_tfns(bundle_dir: Path | None) -> Path | None:
    """TFNS next to a stocknet bundle (``<data>/sentiment/tfns``), if present."""
    if bundle_dir is None:
        return None
    candidate = Path(bundle_dir).expanduser().resolve().parent / "sentiment" / "tfns"
    return candidate if (candidate / "train.csv").is_file() else None


@lru_cache(maxsize=4)
def load_scorer(tfns_dir: Path | None) -> SentimentScorer:
    if tfns_dir is None:
        return SentimentScorer(None)
    frame = pd.read_csv(tfns_dir / "train.csv")
    return SentimentScorer(train_naive_bayes(frame["text"].astype(str).tolist(), frame["label"].astype(int).tolist()))


def evaluate_on_valid(tfns_dir: Path) -> dict[str, float]:
    """Accuracy and weighted F1 of the TFNS-trained scorer on TFNS's validation split."""
    scorer = load_scorer(tfns_dir)
    assert scorer.model is not None
    valid = pd.read_csv(tfns_dir / "valid.csv")
    truth = valid["label"].astype(int).tolist()
    predicted = [scorer.model.predict(t) for t in valid["text"].astype(str)]
    f1_weighted = 0.0
    for label in LABELS:
        tp = sum(p == label and t == label for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == label and t != label for p, t in zip(predicted, truth, strict=True))
        fn = sum(p != label and t == label for p, t in zip(predicted, truth, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1_weighted += f1 * truth.count(label) / len(truth)
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    return {"accuracy": accuracy, "weighted_f1": f1_weighted, "n": len(truth)}


# --------------------------------------------------------------------------------------------------
# The process's default scorer
# --------------------------------------------------------------------------------------------------

SAVED_SCORER = Path("sentiment") / "naive-bayes.json"  # under the model directory, written by `advisor data import`
_default_dirs: dict[str, Path | None] = {"bundle": None, "models": None}
_classifier: dict[str, Callable[[], PostScorer | None] | None] = {"factory": None}


def configure_default(bundle_dir: Path | None, model_dir: Path | None, classifier: Callable[[], PostScorer | None] | None = None) -> None:
    """Where :func:`default_scorer` looks (done by :class:`advisor.runtime.Runtime` from settings).

    ``classifier()``: the LoRA sentiment classifier's scorer, or None where it cannot be served
    (called on first use; see :mod:`advisor.forecaster.tone`).
    """
    _default_dirs["bundle"] = bundle_dir
    _default_dirs["models"] = model_dir
    _classifier["factory"] = classifier


def default_scorer() -> PostScorer:
    """The scorer views, training targets, the checker and the dashboard use: the LoRA sentiment
    classifier where it can be served, else :func:`baseline_scorer`."""
    factory = _classifier["factory"]
    scorer = factory() if factory is not None else None
    return scorer if scorer is not None else baseline_scorer()


def baseline_scorer() -> SentimentScorer:
    """Naive Bayes on TFNS next to the configured bundle, else the one saved at import, else the lexicon:
    the fallback of :func:`default_scorer`, and the non-LLM baseline's sentiment feature."""
    tfns = find_tfns(_default_dirs["bundle"])
    if tfns is not None:
        return load_scorer(tfns)
    models = _default_dirs["models"]
    if models is not None and (models / SAVED_SCORER).is_file():
        path = models / SAVED_SCORER
        return _load_saved(path.resolve(), path.stat().st_mtime_ns)
    return SentimentScorer(None)


def save_default(tfns_dir: Path, model_dir: Path) -> Path:
    """Train the TFNS scorer and keep it under ``model_dir`` so later commands need no bundle path."""
    scorer = load_scorer(tfns_dir)
    assert scorer.model is not None
    path = model_dir / SAVED_SCORER
    path.parent.mkdir(parents=True, exist_ok=True)
    model = scorer.model
    payload = {
        "kind": "naive-bayes-tfns",
        "log_prior": {str(k): v for k, v in model.log_prior.items()},
        "log_likelihood": {str(k): v for k, v in model.log_likelihood.items()},
        "log_unseen": {str(k): v for k, v in model.log_unseen.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


@lru_cache(maxsize=4)
def _load_saved(path: Path, mtime_ns: int) -> SentimentScorer:
    try:
        data = json.loads(path.read_text())
        model = NaiveBayes(
            {int(k): float(v) for k, v in data["log_prior"].items()},
            {int(k): v for k, v in data["log_likelihood"].items()},
            {int(k): float(v) for k, v in data["log_unseen"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return SentimentScorer(None)  # a damaged file: the lexicon, as if none were saved
    return SentimentScorer(model)
