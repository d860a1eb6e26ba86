"""The LoRA sentiment classifier on the tiny model: training and evaluation mechanics, scoring one post and
a CSV through the CLI, and the bad inputs (empty text, missing column, bad labels, no adapter yet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from advisor.forecaster import sentiment_lora
from advisor.forecaster.sentiment_lora import (
    SentimentClassifier,
    SentimentDataError,
    SentimentTrainOptions,
    adapter_max_tokens,
    find_sentiment_adapter,
    read_labelled,
    train_sentiment_adapter,
)
from advisor.forecaster.shipped import ShippedAdapterError
from tests.advisor.test_cli_data import run_cli

PHRASES = {
    0: ["{t} misses estimates and shares plunge", "{t} cuts guidance, stock falls", "downgrade hits {t} https://t.co/x"],
    1: ["{t} beats estimates and shares surge", "{t} raises guidance, stock jumps", "upgrade lifts {t} https://t.co/y"],
    2: ["{t} to present at investor conference", "{t} schedules earnings call", "{t} files quarterly report"],
}


@pytest.fixture
def tfns(tmp_path: Path) -> Path:
    folder = tmp_path / "sentiment" / "tfns"
    folder.mkdir(parents=True)
    for split, tickers in (("train", ["$AAA", "$BBB", "$CCC", "$DDD"]), ("valid", ["$EEE"])):
        rows = [{"text": p.format(t=t), "label": label} for label, phrases in PHRASES.items() for p in phrases for t in tickers]
        pd.DataFrame(rows).to_csv(folder / f"{split}.csv", index=False)
    return folder


def test_training_saves_an_adapter_and_reports_validation_f1(tfns: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "adapters" / "sentiment-lora-test"
    options = SentimentTrainOptions(base_model=str(tiny_model_dir), epochs=1, batch_size=8, lora_r=4)
    metrics = train_sentiment_adapter(tfns, tmp_path / "models", options, out, progress=False, log=lambda _line: None)
    assert (out / "adapter_model.safetensors").is_file() and find_sentiment_adapter(tmp_path / "models") == out
    assert adapter_max_tokens(out) == 64
    validation = metrics["validation"]
    assert validation["n"] == 9 and 0.0 <= validation["weighted_f1"] <= 1.0
    assert set(validation["f1"]) == {"bearish", "bullish", "neutral"}
    assert sum(map(sum, validation["confusion"])) == 9 and len(validation["confusion"]) == 3
    classifier = SentimentClassifier.load(tiny_model_dir, out)
    probs = classifier.probabilities(["$AAA beats", "a much longer post " * 40, "x"])
    assert all(abs(float(p.sum()) - 1) < 1e-4 for p in probs) and len(probs) == 3


def test_bad_labelled_csvs_are_refused_clearly(tmp_path: Path) -> None:
    pd.DataFrame({"post": ["a"], "label": [1]}).to_csv(tmp_path / "no_text.csv", index=False)
    pd.DataFrame({"text": ["a", "b"], "label": [1, 7]}).to_csv(tmp_path / "bad_label.csv", index=False)
    with pytest.raises(SentimentDataError, match="has no 'text' column"):
        read_labelled(tmp_path / "no_text.csv")
    with pytest.raises(SentimentDataError, match="row 3: label must be 0"):
        read_labelled(tmp_path / "bad_label.csv")


def test_the_cli_scores_a_post_and_a_csv_and_explains_bad_input(tfns: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("ADVISOR_BASE_MODEL", str(tiny_model_dir))

    def cli(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, "--model-dir", str(models), "--db-url", f"sqlite:///{tmp_path / 'x.db'}", *args)

    with monkeypatch.context() as nothing_shipped:
        nothing_shipped.setattr(sentiment_lora, "SHIPPED_FILES", {})
        code, _, err = cli("sentiment", "score", "shares surge")
    assert code == 2 and "no sentiment adapter yet: run 'advisor sentiment train'" in err
    if sentiment_lora.SHIPPED_FILES:  # the shipped adapter belongs to the default base, not to the tiny one
        code, _, err = cli("sentiment", "score", "shares surge")
        assert code == 2 and "was trained on SmolLM2-135M-Instruct, not on tiny-llama" in err
    code, out, _ = cli("sentiment", "train", "--tfns", str(tfns), "--epochs", "1", "--batch-size", "8", "--lora-r", "4")
    assert code == 0 and "naive Bayes (the fallback)" in out and "published, not re-run" in out
    code, out, _ = cli("sentiment", "score", "$AAA beats estimates")
    assert code == 0 and any(name in out for name in ("bearish (", "bullish (", "neutral (")), out
    code, out, _ = cli("sentiment", "score", "word " * 200)
    assert code == 0 and "only its first 64 were read" in out
    code, _, err = cli("sentiment", "score", "   ")
    assert code == 2 and "the text is empty" in err
    posts = tmp_path / "posts.csv"
    pd.DataFrame({"body": ["$AAA beats", "$BBB plunges", ""]}).to_csv(posts, index=False)
    code, _, err = cli("sentiment", "score", "--csv", str(posts))
    assert code == 2 and "has no 'text' column" in err and "--text-column" in err
    code, out, _ = cli("sentiment", "score", "--csv", str(posts), "--text-column", "body")
    scored = pd.read_csv(tmp_path / "posts.scored.csv")
    assert code == 0 and "scored 3 posts" in out
    assert list(scored.columns) == ["body", "label", "p_bearish", "p_bullish", "p_neutral"] and len(scored) == 3


def test_an_exported_adapter_is_pinned_found_when_none_is_trained_and_refused_when_changed(tfns: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    options = SentimentTrainOptions(base_model=str(tiny_model_dir), epochs=1, batch_size=8, lora_r=4)
    train_sentiment_adapter(tfns, tmp_path / "models", options, trained, progress=False, log=lambda _line: None)
    shipped = tmp_path / "shipped"
    pins = sentiment_lora.export_sentiment_adapter(trained, shipped, command="advisor sentiment train --export x")
    assert set(pins) == {"adapter_config.json", "adapter_model.safetensors", "advisor-sentiment.json"}
    assert "advisor sentiment train --export x" in (shipped / "TRAINING.md").read_text() and "weighted F1" in (shipped / "TRAINING.md").read_text()
    empty = tmp_path / "no-models"
    assert find_sentiment_adapter(empty, shipped_dir=shipped, pins=pins) == shipped
    before = SentimentClassifier.load(tiny_model_dir, trained).predict(["$AAA beats", "$BBB plunges"])
    assert SentimentClassifier.load(tiny_model_dir, shipped).predict(["$AAA beats", "$BBB plunges"]) == before, "bf16 export scores alike"
    (shipped / "adapter_config.json").write_text((shipped / "adapter_config.json").read_text().replace('"r": 4', '"r": 5'))
    with pytest.raises(ShippedAdapterError, match="does not match its pinned SHA-256"):
        find_sentiment_adapter(empty, shipped_dir=shipped, pins=pins)


def test_the_shipped_adapter_matches_its_pins() -> None:
    if not sentiment_lora.SHIPPED_FILES:
        pytest.skip("no sentiment adapter ships yet")
    assert find_sentiment_adapter(Path("/nonexistent"), pins=sentiment_lora.SHIPPED_FILES) == sentiment_lora.SHIPPED_DIR
