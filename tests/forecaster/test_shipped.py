"""The shipped adapter: exported with pins, registered for its base only, refused when a file changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advisor.forecaster.loading import ADAPTER_META, ModelSpec, load_model, write_adapter_meta
from advisor.forecaster.shipped import SHIPPED_DIR, SHIPPED_FILES, ShippedAdapterError, export_adapter, register_shipped, shipped_adapter
from db.engine import session_scope
from db.models import ModelVersion


def _trained_adapter(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    out = tmp_path / "adapter"
    model.save_pretrained(str(out))
    write_adapter_meta(out, base_model=str(tiny_model_dir), base_fingerprint=base.base.fingerprint, extra={"kind": "sft"})
    return out, base.base.fingerprint


def test_export_pins_every_file_and_a_changed_file_is_refused(tiny_model_dir: Path, tmp_path: Path, sqlite_factory) -> None:
    adapter, fingerprint = _trained_adapter(tiny_model_dir, tmp_path)
    target = tmp_path / "shipped"
    pins = export_adapter(adapter, target, command="advisor train sft --export x", metrics={"steps": 3, "loss_curve": [(1, 2.0), (3, 1.5)]},
                          snapshot={"examples": 12})
    assert set(pins) == {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META}
    assert "| 3 | 1.5000 |" in (target / "TRAINING.md").read_text() and "advisor train sft --export x" in (target / "TRAINING.md").read_text()
    assert shipped_adapter(target, pins) == target
    handle = load_model(ModelSpec(base=str(tiny_model_dir), adapter=target, dtype="float32"), tmp_path)
    assert handle.adapter_hash is not None, "the bf16 export loads onto the float32 base"

    with session_scope(sqlite_factory) as session:
        row = register_shipped(session, fingerprint, str(tiny_model_dir), target, pins)
        assert row is not None and row.kind == "sft" and row.parent_id is not None
        assert register_shipped(session, fingerprint, str(tiny_model_dir), target, pins).id == row.id
        assert register_shipped(session, "f" * 64, "another-base", target, pins) is None, "only for the base it was trained on"
        assert session.query(ModelVersion).count() == 2

    meta = json.loads((target / ADAPTER_META).read_text())
    (target / ADAPTER_META).write_text(json.dumps({**meta, "base_fingerprint": "0" * 64}))
    with pytest.raises(ShippedAdapterError, match=f"{ADAPTER_META} .* does not match its pinned SHA-256"):
        shipped_adapter(target, pins)
    weights = target / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ShippedAdapterError, match="adapter_model.safetensors .* refused"):
        shipped_adapter(target, {"adapter_model.safetensors": pins["adapter_model.safetensors"]})


def test_the_repository_ships_a_pinned_adapter() -> None:
    assert SHIPPED_FILES, "advisor/forecaster/shipped.py pins the shipped adapter's files"
    assert shipped_adapter() == SHIPPED_DIR
    size = sum((SHIPPED_DIR / name).stat().st_size for name in SHIPPED_FILES)
    assert size < 8 * 2**20, f"the shipped adapter is {size / 2**20:.1f} MB"
