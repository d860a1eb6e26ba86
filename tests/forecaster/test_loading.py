"""Loading: one base per process, adapters served from it, mismatches refused, 4-bit on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from advisor.forecaster.loading import AdapterMismatchError, ModelSpec, load_model, write_adapter_meta
from advisor.forecaster.modelstore import ModelNotFoundError


def make_adapter(base_dir: Path, out: Path, seed: int, r: int = 4) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=r, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def logits(handle, text: str = "Hello there") -> torch.Tensor:
    ids = handle.tokenizer(text, return_tensors="pt")
    with handle.activate() as model, torch.inference_mode():
        return model(**ids).logits.float()


def test_base_is_loaded_once_and_adapters_share_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec(base=str(tiny_model_dir), dtype="float32")
    base = load_model(spec, tmp_path)
    assert load_model(spec, tmp_path).base is base.base
    before = logits(base)
    a = load_model(ModelSpec(base=str(tiny_model_dir), adapter=make_adapter(tiny_model_dir, tmp_path / "a", 1), dtype="float32"), tmp_path)
    b = load_model(ModelSpec(base=str(tiny_model_dir), adapter=make_adapter(tiny_model_dir, tmp_path / "b", 2), dtype="float32"), tmp_path)
    assert a.base is b.base is base.base and len(base.base.adapters) == 2
    la, lb = logits(a), logits(b)
    assert not torch.allclose(la, lb) and not torch.allclose(la, before)
    assert torch.allclose(logits(base), before), "the base must be served with adapters disabled"
    assert torch.allclose(logits(a), la), "switching back selects the same adapter"
    assert a.version_key != b.version_key != base.version_key


def test_adapter_for_another_base_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "a", 1)
    write_adapter_meta(adapter, base_model="other-model", base_fingerprint="f" * 64)
    with pytest.raises(AdapterMismatchError, match="was trained on base other-model"):
        load_model(ModelSpec(base=str(tiny_model_dir), adapter=adapter, dtype="float32"), tmp_path)


def test_adapter_with_wrong_shapes_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    other_dir = tmp_path / "wider"
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 96, 160
    AutoModelForCausalLM.from_config(config).save_pretrained(other_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(other_dir)
    adapter = make_adapter(other_dir, tmp_path / "wide-adapter", 1)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterMismatchError, match="does not fit base model"):
        load_model(ModelSpec(base=str(tiny_model_dir), adapter=adapter, dtype="float32"), tmp_path)


def test_missing_paths(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(ModelSpec(base=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(ModelNotFoundError, match="adapter .* does not exist"):
        load_model(ModelSpec(base=str(tiny_model_dir), adapter=tmp_path / "no-adapter"), tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelNotFoundError, match="cannot load"):
        load_model(ModelSpec(base=str(broken)), tmp_path)


def test_four_bit_loading_works_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    with pytest.warns(UserWarning, match="without a CUDA GPU"):
        handle = load_model(ModelSpec(base=str(tiny_model_dir), quantization="4bit", dtype="float32"), tmp_path)
    assert any("4bit" in type(m).__name__ for m in handle.base.model.modules())
    assert torch.isfinite(logits(handle)).all()
