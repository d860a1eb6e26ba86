"""Posts' tone from the LoRA sentiment classifier, served from the forecaster's loaded base and cached.

The classifier (:mod:`advisor.forecaster.sentiment_lora`) is a LoRA adapter plus a three-label head
on the default base. Here it runs on the same :class:`~advisor.forecaster.loading.LoadedBase` the
forecaster's adapters use — the engine merges the sentiment adapter's factors into its working copy,
runs the posts (shortest first, padded on the right) through the first ``layers`` layers and the
head reads the last token's hidden state — so scoring posts costs no second copy of the model. Where
the engine cannot serve the base, the transformers classifier is loaded instead.

Readings are cached per process and in the database (:class:`db.models.PostTone`, keyed by the
adapter's content hash and the cleaned text's hash): views, training targets, the checker and the
dashboard's post list read the same posts again and again. :func:`classifier_scorer` is what
:func:`advisor.forecaster.sentiment.default_scorer` asks for; when no sentiment adapter or its base
is at hand it returns None and the naive Bayes scorer is used, as before.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from advisor.config import DEFAULT_BASE_MODEL
from advisor.errors import AdvisorError
from advisor.forecaster.backends.fast import engine_for
from advisor.forecaster.engine import EngineAdapter, EngineUnsupportedError
from advisor.forecaster.loading import LoadedBase, ModelHandle, ModelSpec, load_base
from advisor.forecaster.lora_file import AdapterFileError, LoraFile
from advisor.forecaster.modelstore import adapter_hash
from advisor.forecaster.sentiment import BEARISH, BULLISH, NEUTRAL
from advisor.forecaster.sentiment_lora import (
    SentimentClassifier,
    adapter_layers,
    adapter_max_tokens,
    adapter_metrics,
    check_base,
    clean_post,
    find_sentiment_adapter,
)
from advisor.forecaster.versions import ensure_model_version
from db.engine import side_write
from db.models import PostTone
from db.types import utcnow

log = logging.getLogger(__name__)
TONE_OF_LABEL = {BEARISH: -1, BULLISH: 1, NEUTRAL: 0}
SCORE_BATCH = 512  # posts per engine call (progress is not reported below this)


def text_key(text: str) -> str:
    """The cache key of a post: SHA-256 of its cleaned text (what the classifier reads), 32 hex digits."""
    return hashlib.sha256(clean_post(text).encode("utf-8")).hexdigest()[:32]


class EngineSentimentClassifier:
    """The sentiment adapter served by the base's decoding engine (see the module docstring)."""

    def __init__(self, base: LoadedBase, adapter_path: Path, key: str) -> None:
        lora = LoraFile.read(adapter_path, saved_modules=frozenset({"score"}))
        if lora.problem is not None:
            raise EngineUnsupportedError(f"the sentiment adapter {adapter_path}: {lora.problem}")
        head = lora.saved.get("score.weight")
        if head is None:
            raise AdapterFileError(f"the sentiment adapter {adapter_path} holds no classification head (score.weight)")
        misfit = lora.mismatch(base.linear_shapes())
        if misfit is not None:
            raise AdapterFileError(f"the sentiment adapter {adapter_path} does not fit {base.base_id}: {misfit}")
        self.engine = engine_for(base)
        self.base = base
        self.tokenizer = base.tokenizer
        self.adapter = EngineAdapter(f"sentiment-{key}", lora)
        self.head = head.to(device=self.engine.device, dtype=self.engine.dtype)
        self.layers = adapter_layers(adapter_path)
        self.max_tokens = adapter_max_tokens(adapter_path)

    def logits(self, texts: Sequence[str]) -> Any:
        """The head's logits [N, 3] (bearish, bullish, neutral) for ``texts``."""
        ids = self.base.tokenizer([clean_post(t) for t in texts], truncation=True, max_length=self.max_tokens)["input_ids"]
        ids = [row or [self.base.tokenizer.eos_token_id] for row in ids]  # a post that cleans to nothing reads as one token
        with self.base.lock:
            hidden = self.engine.last_hidden(ids, self.adapter, layers=self.layers)
        return (hidden @ self.head.T).float()

    def probabilities(self, texts: Sequence[str]) -> list[Any]:
        """Per post, the probabilities of (bearish, bullish, neutral)."""
        import torch

        return list(torch.softmax(self.logits(texts), dim=-1)) if texts else []

    def predict(self, texts: Sequence[str]) -> list[int]:
        """Labels (0 bearish, 1 bullish, 2 neutral) of ``texts``."""
        return self.logits(texts).argmax(-1).tolist() if texts else []


def _missing_table(exc: OperationalError) -> bool:
    return "no such table" in str(exc) or "does not exist" in str(exc)


class ToneCache:
    """Readings kept in the database (table ``post_tones``); a database without the table is skipped."""

    def __init__(self, factory: sessionmaker[Session] | None) -> None:
        self.factory = factory

    def get(self, scorer_key: str, keys: Sequence[str]) -> dict[str, int]:
        if self.factory is None or not keys:
            return {}
        found: dict[str, int] = {}
        try:
            with self.factory() as session:
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    rows = session.execute(select(PostTone.text_hash, PostTone.tone).where(PostTone.scorer_key == scorer_key, PostTone.text_hash.in_(chunk)))
                    found.update({h: int(t) for h, t in rows})
        except SQLAlchemyError as exc:
            self._disable(exc)
        return found

    def put(self, scorer_key: str, tones: dict[str, int]) -> None:
        """Store new readings; one another process stored meanwhile is kept as it is. A write that cannot get
        its lock at once (the caller's own transaction holds it) is skipped: the memory cache still has it."""
        if self.factory is None or not tones:
            return
        rows = [{"scorer_key": scorer_key, "text_hash": h, "tone": t, "scored_at": utcnow()} for h, t in tones.items()]
        try:
            with side_write(self.factory) as session:
                dialect = session.get_bind().dialect.name
                if dialect in ("sqlite", "postgresql"):
                    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
                    for start in range(0, len(rows), 500):
                        session.execute(insert(PostTone).values(rows[start : start + 500]).on_conflict_do_nothing())
                else:
                    known = set(session.scalars(select(PostTone.text_hash).where(PostTone.scorer_key == scorer_key, PostTone.text_hash.in_(list(tones)))))
                    session.add_all(PostTone(**row) for row in rows if row["text_hash"] not in known)
        except OperationalError as exc:
            if _missing_table(exc):
                self._disable(exc)
            else:
                log.info("post tones not stored this time: %s", str(exc).splitlines()[0])
        except SQLAlchemyError as exc:
            self._disable(exc)

    def _disable(self, exc: SQLAlchemyError) -> None:
        log.info("post tones are not cached in the database: %s", str(exc).splitlines()[0])
        self.factory = None


class ClassifierScorer:
    """:class:`~advisor.forecaster.sentiment.PostScorer` over the LoRA classifier, with both caches."""

    def __init__(self, predict: Callable[[Sequence[str]], list[int]], key: str, cache: ToneCache, *, name: str) -> None:
        self.predict, self.key, self.cache, self.name = predict, key, cache, name
        self.known: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def kind(self) -> str:
        return f"lora-classifier {self.name} {self.key[:12]}"

    def prepare(self, texts: Iterable[str]) -> None:
        """Read every post not yet known, in one batch; the new readings are stored."""
        with self.lock:
            wanted: dict[str, str] = {}
            for text in texts:
                key = text_key(text)
                if key not in self.known:
                    wanted.setdefault(key, text)
            if not wanted:
                return
            self.known.update(self.cache.get(self.key, list(wanted)))
            missing = [(k, t) for k, t in wanted.items() if k not in self.known]
            if not missing:
                return
            new: dict[str, int] = {}
            for start in range(0, len(missing), SCORE_BATCH):
                chunk = missing[start : start + SCORE_BATCH]
                for (key, _), label in zip(chunk, self.predict([t for _, t in chunk]), strict=True):
                    new[key] = TONE_OF_LABEL[label]
            self.known.update(new)
            self.cache.put(self.key, new)

    def score(self, text: str) -> int:
        key = text_key(text)
        if key not in self.known:
            self.prepare([text])
        return self.known[key]


def served_classifier(base_model: str, model_dir: Path, adapter: Path | None = None) -> tuple[EngineSentimentClassifier | SentimentClassifier, Path]:
    """The sentiment classifier on ``base_model`` as loaded for the forecaster (served by its engine where the
    engine supports the base, else transformers' classifier); and the adapter's folder.

    ``adapter`` defaults to :func:`~advisor.forecaster.sentiment_lora.find_sentiment_adapter`; an adapter
    trained on another base is refused.
    """
    folder = adapter or find_sentiment_adapter(model_dir)
    if folder is None:
        raise AdvisorError("no sentiment adapter yet: run 'advisor sentiment train' (or pass --adapter DIR)")
    base = load_base(ModelSpec(base=base_model), model_dir)
    check_base(folder, base.path, model_dir)
    try:
        return EngineSentimentClassifier(base, folder, adapter_hash(folder)), folder
    except EngineUnsupportedError as exc:
        log.info("the sentiment classifier runs on transformers: %s", exc)
        return SentimentClassifier.load(base.path, folder, max_tokens=adapter_max_tokens(folder), layers=adapter_layers(folder)), folder


_SCORERS: dict[tuple[str, str, str, int], ClassifierScorer] = {}
_FAILED: dict[tuple[str, str, str, int], float] = {}  # when a start failed (tried again after RETRY_S)
_SCORERS_LOCK = threading.Lock()
RETRY_S = 60.0


def classifier_scorer(model_dir: Path, base_model: str = DEFAULT_BASE_MODEL, factory: sessionmaker[Session] | None = None) -> ClassifierScorer | None:
    """The classifier's scorer (once per process, adapter, base and database), or None where it cannot be
    served: no sentiment adapter, a shipped one that fails its pins, the base not available, or an adapter
    trained on another base (the reason is logged; tried again a minute later, e.g. after a model fetch)."""
    try:
        adapter = find_sentiment_adapter(model_dir)
    except AdvisorError as exc:
        log.warning("the LoRA sentiment classifier is not available (%s); posts are read by naive Bayes", exc)
        return None
    if adapter is None:
        return None
    cache_key = (str(adapter.resolve()), str(model_dir), base_model, id(factory))
    with _SCORERS_LOCK:
        if cache_key in _SCORERS:
            return _SCORERS[cache_key]
        if time.monotonic() - _FAILED.get(cache_key, -RETRY_S) < RETRY_S:
            return None
        try:
            classifier, _ = served_classifier(base_model, model_dir, adapter)
        except (AdvisorError, OSError, ValueError) as exc:
            log.warning("the LoRA sentiment classifier is not available (%s); posts are read by naive Bayes", exc)
            _FAILED[cache_key] = time.monotonic()
            return None
        scorer = ClassifierScorer(classifier.predict, adapter_hash(adapter), ToneCache(factory), name=adapter.name)
        _SCORERS[cache_key] = scorer
    if factory is not None:
        register_sentiment_version(factory, base_model, model_dir, adapter)
    return scorer


def register_sentiment_version(factory: sessionmaker[Session], base_model: str, model_dir: Path, adapter: Path) -> int | None:
    """The sentiment adapter as a model version (kind ``sentiment``, its TFNS validation figures as metrics),
    like every other adapter the product serves; its id, or None where the database cannot take it yet."""
    base = load_base(ModelSpec(base=base_model), model_dir)
    handle = ModelHandle(base, adapter_hash(adapter), adapter)
    validation = adapter_metrics(adapter).get("validation", {})
    metrics = {k: validation[k] for k in ("weighted_f1", "accuracy", "f1", "n") if k in validation}
    try:
        with side_write(factory) as session:
            return ensure_model_version(session, handle, kind="sentiment", name=adapter.name, metrics=metrics).id
    except SQLAlchemyError as exc:
        log.info("the sentiment adapter is not registered as a model version: %s", str(exc).splitlines()[0])
        return None


def clear_scorers() -> None:
    """Forget built scorers and failed starts (tests)."""
    with _SCORERS_LOCK:
        _SCORERS.clear()
        _FAILED.clear()


def stored_tones(model_dir: Path, factory: sessionmaker[Session], texts: Sequence[str]) -> dict[str, int]:
    """The classifier's stored readings of ``texts`` (text -> tone) without loading any model: what the
    dashboard shows beside a view's posts (they were read when the view was written). Posts never
    read are absent."""
    try:
        adapter = find_sentiment_adapter(model_dir)
    except AdvisorError as exc:  # e.g. a shipped file that fails its pin: the page shows the posts without tones
        log.warning("stored post tones not shown: %s", exc)
        return {}
    if adapter is None or not texts:
        return {}
    keys = {text: text_key(text) for text in texts}
    found = ToneCache(factory).get(adapter_hash(adapter), sorted(set(keys.values())))
    return {text: found[key] for text, key in keys.items() if key in found}
