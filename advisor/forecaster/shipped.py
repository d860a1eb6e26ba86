"""The forecaster adapter that ships with the project, pinned by its content hash.

A fresh clone writes checked, readable views without training: when no SFT adapter is registered
for the default base, the shipped one (``advisor/forecaster/shipped/sft-default``) is registered as
a model version of kind ``sft`` and used. It is a LoRA adapter of SmolLM2-135M-Instruct trained by
the project's own command on the bundle's whole training period (the command, its loss curve and
held-out figures are in ``shipped/sft-default/TRAINING.md``). Each of its files is pinned by SHA-256
in ``SHIPPED_FILES`` and checked whenever it is registered; a mismatch is refused, never used.

``advisor train sft ... --export DIR`` writes such a directory (weights stored in bfloat16 to keep it
a few MB; they are cast back to the model's dtype on loading) and prints the pins to paste here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from advisor.errors import AdvisorError
from advisor.forecaster.loading import ADAPTER_META
from advisor.forecaster.modelstore import adapter_hash, sha256_file
from advisor.forecaster.versions import base_key
from db.models import ModelVersion

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped" / "sft-default"
SHIPPED_FILES: dict[str, str] = {
    "adapter_config.json": "dc65ee1c4c3143937457e9ee08cdbeeae9acf502c9c44041835b7b765d9576d0",
    "adapter_model.safetensors": "fd37dcd11810414c693658158474ca826d6c2460c752d83b1be777c3a4f30032",
    "advisor-adapter.json": "5bdcd5d6cb48832abdc22166328dd1dfa6f7f5239cb2ad867cf04dfa4d9b3f6c",
}
SHIPPED_NAME = "sft-default (shipped)"


class ShippedAdapterError(AdvisorError):
    """The shipped adapter's files are missing or do not match their pinned hash."""


def shipped_adapter(directory: Path = SHIPPED_DIR, pins: dict[str, str] | None = None) -> Path:
    """The shipped adapter's directory after checking every file against its pinned SHA-256."""
    pins = SHIPPED_FILES if pins is None else pins
    if not pins or not (directory / "adapter_model.safetensors").is_file():
        raise ShippedAdapterError(f"no shipped adapter in {directory}: restore it from the repository or train one (advisor train sft)")
    for name, expected in pins.items():
        path = directory / name
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != expected:
            raise ShippedAdapterError(
                f"the shipped adapter's {name} in {directory} does not match its pinned SHA-256 (expected {expected[:16]}…, "
                f"found {actual[:16]}…): it was modified or corrupted, so it is refused; restore it with git "
                "or retrain it with the command in its TRAINING.md"
            )
    return directory


def shipped_base_fingerprint(directory: Path = SHIPPED_DIR) -> str | None:
    meta = directory / ADAPTER_META
    return json.loads(meta.read_text()).get("base_fingerprint") if meta.is_file() else None


def register_shipped(
    session: Session, base_fingerprint: str, base_id: str, directory: Path = SHIPPED_DIR, pins: dict[str, str] | None = None
) -> ModelVersion | None:
    """The shipped adapter's model version for this base (created on first use), or None for another base."""
    if not (directory / "adapter_model.safetensors").is_file() or shipped_base_fingerprint(directory) != base_fingerprint:
        return None
    path = shipped_adapter(directory, pins)
    digest = adapter_hash(path)
    key = f"{base_fingerprint[:32]}+{digest[:32]}"
    row = session.scalar(select(ModelVersion).where(ModelVersion.key == key))
    if row is not None:
        return row
    parent = session.scalar(select(ModelVersion).where(ModelVersion.key == base_key(base_fingerprint)))
    if parent is None:
        parent = ModelVersion(key=base_key(base_fingerprint), name=base_id, kind="base", base_model_id=base_id, base_fingerprint=base_fingerprint, metrics={})
        session.add(parent)
        session.flush()
    metrics = json.loads((path / ADAPTER_META).read_text()).get("metrics", {})
    row = ModelVersion(
        key=key, name=SHIPPED_NAME, kind="sft", base_model_id=base_id, base_fingerprint=base_fingerprint,
        adapter_path=str(path), adapter_hash=digest, parent_id=parent.id, metrics=metrics,
    )
    session.add(row)
    session.flush()
    return row


def export_adapter(adapter: Path, target: Path, *, command: str, metrics: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, str]:
    """Write ``adapter`` as a shippable directory (bf16 weights, meta with metrics, TRAINING.md); returns the pins."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for stale in target.iterdir():
        if stale.is_file():
            stale.unlink()
    tensors = {name: t.to(torch.bfloat16).contiguous() for name, t in load_file(str(adapter / "adapter_model.safetensors")).items()}
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    shutil.copy(adapter / "adapter_config.json", target / "adapter_config.json")
    meta = json.loads((adapter / ADAPTER_META).read_text())
    kept = {k: v for k, v in metrics.items() if k != "loss_curve"}
    meta.update({"name": SHIPPED_NAME, "metrics": kept, "data": snapshot, "command": command})
    meta.pop("training_run_id", None)
    (target / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (target / "TRAINING.md").write_text(training_card(command, metrics, snapshot))
    return {name: sha256_file(target / name) for name in ("adapter_config.json", "adapter_model.safetensors", ADAPTER_META)}


def training_card(command: str, metrics: dict[str, Any], snapshot: dict[str, Any]) -> str:
    """TRAINING.md: how the shipped adapter was made, its loss curve and held-out figures."""
    lines = [
        "# The shipped forecaster adapter (sft-default)",
        "",
        "Reproduce (from the repository root, after `make install`, with the bundle imported):",
        "",
        f"    {command}",
        "",
        "Training on another CPU gives an adapter of the same quality but not the same bytes (bf16 and fp32",
        "kernels round differently); the pins in advisor/forecaster/shipped.py are those of this one.",
        "",
        "## Data",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in snapshot.items()]
    lines += ["", "## Training", ""]
    for key in ("steps", "seconds", "seconds_per_step", "peak_rss_mb", "bf16", "detach_prompt", "train_loss"):
        if key in metrics:
            lines.append(f"- {key}: {metrics[key]}")
    lines += ["", "## Held-out check (greedy views of weeks after the training period, free decoding: no grounding)", ""]
    for key in ("heldout_prompts", "heldout_parse_rate", "heldout_check_passed", "heldout_facts_found", "heldout_contradictions"):
        if metrics.get(key) is not None:
            value = metrics[key]
            lines.append(f"- {key}: {value:.1%}" if isinstance(value, float) else f"- {key}: {value}")
    lines += ["", "## Loss curve (training loss on the answer tokens)", "", "| step | loss |", "|---|---|"]
    lines += [f"| {step} | {loss:.4f} |" for step, loss in metrics.get("loss_curve", [])]
    return "\n".join(lines) + "\n"
