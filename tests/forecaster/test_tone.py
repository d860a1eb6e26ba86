"""Posts' tone from the LoRA sentiment classifier served by the decoding engine: the same logits as the
transformers classifier, padding that changes nothing, the first-N-layers classifier, both caches, the
naive Bayes fallback, and the readings the dashboard shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from advisor.forecaster import sentiment, sentiment_lora, tone
from advisor.forecaster.loading import ModelSpec, load_base
from advisor.forecaster.lora_file import LoraFile
from advisor.forecaster.sentiment import SentimentScorer, baseline_scorer, configure_default, default_scorer
from advisor.forecaster.sentiment_lora import SentimentClassifier, SentimentTrainOptions, train_sentiment_adapter
from advisor.forecaster.tone import ClassifierScorer, EngineSentimentClassifier, ToneCache, classifier_scorer, stored_tones, text_key
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade
from db.models import ModelVersion

POSTS = ["$AAA beats estimates and shares surge https://t.co/x", "downgrade", "a much longer post about nothing much " * 6, "x", "$BBB cuts guidance"]


@pytest.fixture(autouse=True)
def _fresh_scorers() -> Any:
    tone.clear_scorers()
    yield
    tone.clear_scorers()
    configure_default(None, None)


def _train(tiny_model_dir: Path, model_dir: Path, name: str, layers: int | None) -> Path:
    folder = model_dir / "tfns"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"text": f"{t} {w}", "label": label} for label, w in ((0, "falls hard"), (1, "jumps high"), (2, "holds a call")) for t in ("$A", "$B", "$C")]
    for split in ("train", "valid"):
        pd.DataFrame(rows).to_csv(folder / f"{split}.csv", index=False)
    out = model_dir / "adapters" / name
    options = SentimentTrainOptions(base_model=str(tiny_model_dir), epochs=1, batch_size=4, lora_r=4, layers=layers)
    train_sentiment_adapter(folder, model_dir, options, out, progress=False, log=lambda _line: None)
    return out


@pytest.mark.parametrize("layers", [None, 1])
def test_the_engine_reads_posts_as_the_transformers_classifier_does(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: int | None
) -> None:
    import torch

    adapter = _train(tiny_model_dir, tmp_path / "models", "sentiment-lora-t", layers)
    assert sentiment_lora.adapter_layers(adapter) == layers
    monkeypatch.setattr(sentiment_lora, "resolve_device_dtype", lambda: (torch.device("cpu"), torch.float32))
    reference = SentimentClassifier.load(tiny_model_dir, adapter, layers=layers)
    base = load_base(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path / "models")
    served = EngineSentimentClassifier(base, adapter, "k")
    with torch.inference_mode():
        for post in POSTS:  # one at a time: no padding on the transformers side
            batch = reference.tokenizer([sentiment_lora.clean_post(post)], return_tensors="pt")
            expected = reference.model(**batch).logits[0]
            assert torch.allclose(served.logits([post])[0], expected, atol=1e-4), post
    # in one batch the posts are padded to the longest: the readings do not change
    together = served.logits(POSTS)
    alone = torch.stack([served.logits([p])[0] for p in POSTS])
    assert torch.allclose(together, alone, atol=1e-4)
    assert served.predict(POSTS) == reference.predict(POSTS)


def test_the_shipped_adapter_reads_without_peft_its_head_included() -> None:
    lora = LoraFile.read(sentiment_lora.SHIPPED_DIR, saved_modules=frozenset({"score"}))
    assert lora.problem is None and lora.saved["score.weight"].shape == (3, 576) and len(lora.modules) == 7 * 20  # 20 layers
    assert "modules_to_save" in (LoraFile.read(sentiment_lora.SHIPPED_DIR).problem or "")  # a caller that serves no head declines it


def _factory(tmp_path: Path, migrated: bool = True) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tones.db'}")
    if migrated:
        upgrade(engine)
    return make_session_factory(engine)


class CountingClassifier:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.calls.append(len(texts))
        return [1 if "surge" in t else 0 if "downgrade" in t else 2 for t in texts]


def test_posts_are_read_once_in_one_batch_and_kept_in_the_database(tmp_path: Path) -> None:
    factory = _factory(tmp_path)
    predict = CountingClassifier()
    scorer = ClassifierScorer(predict, "adapter-hash", ToneCache(factory), name="t")
    scorer.prepare(POSTS + POSTS)
    assert predict.calls == [len(POSTS)]
    assert [scorer.score(p) for p in POSTS] == [1, -1, 0, 0, 0] and predict.calls == [len(POSTS)]
    # the same text after cleaning (a link dropped) is the same post
    assert text_key("$AAA beats estimates and shares surge https://t.co/other") == text_key(POSTS[0])

    later = CountingClassifier()  # another process: readings come from the database
    again = ClassifierScorer(later, "adapter-hash", ToneCache(factory), name="t")
    assert [again.score(p) for p in POSTS] == [1, -1, 0, 0, 0] and later.calls == []
    other_adapter = CountingClassifier()  # a new adapter version reads afresh
    ClassifierScorer(other_adapter, "another-hash", ToneCache(factory), name="t").prepare(POSTS)
    assert other_adapter.calls == [len(POSTS)]

    assert stored_tones(tmp_path / "no-models", factory, POSTS) == {}  # no adapter there: nothing to look up


def test_a_database_without_the_table_only_loses_the_cache(tmp_path: Path) -> None:
    predict = CountingClassifier()
    scorer = ClassifierScorer(predict, "k", ToneCache(_factory(tmp_path, migrated=False)), name="t")
    assert scorer.score(POSTS[0]) == 1 and scorer.cache.factory is None


def test_without_the_classifier_s_base_views_fall_back_to_naive_bayes(tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    models = tmp_path / "models"  # the shipped adapter is found, but its base is not in this model directory
    models.mkdir()
    assert classifier_scorer(models) is None
    assert "not available" in caplog.text and "naive Bayes" in caplog.text
    caplog.clear()  # a forecaster on another base: the shipped adapter (trained on the default base) is not served on it
    assert classifier_scorer(models, str(tiny_model_dir)) is None and "was trained on SmolLM2-135M-Instruct, not on tiny-llama" in caplog.text
    configure_default(None, models, lambda: classifier_scorer(models))
    assert isinstance(default_scorer(), SentimentScorer)
    assert isinstance(default_scorer(), SentimentScorer) and default_scorer().kind == baseline_scorer().kind == "lexicon"


def test_the_default_scorer_is_the_classifier_where_it_can_be_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    adapter = _train(tiny_model_dir, models, "sentiment-lora-t", None)
    factory = _factory(tmp_path)
    configure_default(None, models, lambda: classifier_scorer(models, str(tiny_model_dir), factory))
    scorer = default_scorer()
    assert isinstance(scorer, ClassifierScorer) and scorer.kind.startswith("lora-classifier sentiment-lora-t")
    assert scorer is default_scorer()  # built once per process
    readings = {p: scorer.score(p) for p in POSTS}
    assert stored_tones(models, factory, POSTS) == readings  # what the dashboard shows, with no model loaded
    with factory() as session:  # registered like every other adapter the product serves
        version = session.scalar(select(ModelVersion).where(ModelVersion.kind == "sentiment"))
        assert version is not None and version.adapter_hash == scorer.key and version.name == "sentiment-lora-t"
        assert set(version.metrics) >= {"weighted_f1", "f1", "n"} and version.parent_id is not None
    assert sentiment.baseline_scorer().kind == "lexicon" and adapter.is_dir()


def test_storing_readings_never_waits_on_the_caller_s_open_transaction(tmp_path: Path) -> None:
    import time

    from db.models import PostTone

    factory = _factory(tmp_path)
    holder = factory()
    holder.add(PostTone(scorer_key="other", text_hash="x" * 32, tone=0))
    holder.flush()  # the caller's own write transaction is open (SQLite: the database's write lock is held)
    scorer = ClassifierScorer(CountingClassifier(), "k", ToneCache(factory), name="t")
    started = time.perf_counter()
    assert scorer.score(POSTS[0]) == 1
    assert time.perf_counter() - started < 5 and scorer.cache.factory is not None  # skipped, not 30 s, cache kept
    holder.commit()
    holder.close()
    scorer.prepare(POSTS)
    twice = ClassifierScorer(CountingClassifier(), "k", ToneCache(factory), name="t")
    twice.known.clear()
    twice.cache.put("k", {text_key(POSTS[0]): 1})  # stored already by the first: kept, no error
    assert twice.cache.factory is not None and twice.cache.get("k", [text_key(POSTS[0])]) == {text_key(POSTS[0]): 1}


def test_a_shipped_adapter_that_fails_its_pins_leaves_views_on_naive_bayes_and_pages_without_tones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from advisor.forecaster.shipped import ShippedAdapterError

    def changed(_model_dir: Path) -> Path:
        raise ShippedAdapterError("advisor/forecaster/shipped/sentiment-default/adapter_config.json does not match its pinned SHA-256")

    monkeypatch.setattr(tone, "find_sentiment_adapter", changed)
    assert classifier_scorer(tmp_path) is None and "does not match its pinned SHA-256" in caplog.text
    assert stored_tones(tmp_path, _factory(tmp_path), POSTS) == {}
