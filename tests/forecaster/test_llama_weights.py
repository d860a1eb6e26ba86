"""The engine's weights read straight from the checkpoint equal the transformers model's, and the engine
backend generates without building the transformers model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from advisor.forecaster.engine import DecoderEngine
from advisor.forecaster.llama_weights import EngineUnsupportedError, LlamaWeights
from advisor.forecaster.loading import ModelSpec, load_base, load_transformers_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_checkpoint_weights_equal_the_loaded_model(tiny_model_dir: Path, dtype: torch.dtype) -> None:
    model = load_transformers_model(tiny_model_dir, "none", torch.device("cpu"), dtype)
    ours = LlamaWeights.from_checkpoint(tiny_model_dir, dtype, torch.device("cpu"))
    theirs = LlamaWeights.from_model(model)
    assert (ours.n_heads, ours.n_kv, ours.head_dim, ours.eps) == (theirs.n_heads, theirs.n_kv, theirs.head_dim, theirs.eps)
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        torch.testing.assert_close(a.norm1, b.norm1, rtol=0, atol=0)
        for key in a.linears:
            assert a.linears[key].weight.dtype == dtype
            torch.testing.assert_close(a.linears[key].weight, b.linears[key].weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.head.weight, theirs.head.weight, rtol=0, atol=0)
    x = torch.zeros(2, 5, 8, dtype=dtype)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 300, 1999]])
    for mine, reference in zip(ours.rotary(x, positions), theirs.rotary(x, positions), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    ids = torch.tensor([[5, 17, 300, 42, 9, 1000]])
    logits = []
    for weights in (ours, theirs):
        engine = DecoderEngine(weights)
        shape = (1, engine.n_kv, 8, engine.head_dim)
        cache = ([torch.zeros(shape, dtype=dtype) for _ in engine.layers], [torch.zeros(shape, dtype=dtype) for _ in engine.layers])
        with torch.inference_mode():
            logits.append(engine._forward(ids, torch.arange(6)[None], cache, slice(0, 1), 6, engine.layers))
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)
    with torch.inference_mode():
        reference = model(ids).logits[:, -1].float()
    torch.testing.assert_close(logits[0], reference, rtol=1e-4 if dtype == torch.float32 else 2e-2, atol=1e-4 if dtype == torch.float32 else 2e-2)


def test_linear_shapes_from_the_checkpoint_header_equal_the_models(tiny_model_dir: Path) -> None:
    base = load_base(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tiny_model_dir.parent)
    header = base.linear_shapes()
    assert base.loaded_model is None, "reading shapes does not build the model"
    base.model  # noqa: B018 - build it
    assert base.linear_shapes() == header


def test_engine_backend_never_builds_the_transformers_model(tiny_model_dir: Path) -> None:
    from advisor.forecaster.generation import Decoding, generate
    from advisor.forecaster.loading import load_model

    handle = load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tiny_model_dir.parent)
    text = handle.tokenizer.apply_chat_template([{"role": "user", "content": "Predict AAA next week."}], tokenize=False, add_generation_prompt=True)
    out = generate(handle, [text], ["h"], Decoding(max_new_tokens=8), progress=False, backend="engine")
    assert out[0][0].new_tokens > 0
    assert handle.base.loaded_model is None
    reference = generate(handle, [text], ["h"], Decoding(max_new_tokens=8), progress=False, backend="transformers")
    assert handle.base.loaded_model is not None and reference[0][0].text == out[0][0].text


def test_a_checkpoint_the_reader_does_not_know_is_left_to_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    scaled = tmp_path / "scaled-rope"
    shutil.copytree(tiny_model_dir, scaled)
    config = json.loads((scaled / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (scaled / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineUnsupportedError, match="linear RoPE"):
        LlamaWeights.from_checkpoint(scaled, torch.float32, torch.device("cpu"))
    base = load_base(ModelSpec(base=str(scaled), dtype="float32"), tmp_path)
    weights = base.engine_weights()  # from the transformers model, whose rotary applies the scaling
    assert base.loaded_model is not None and weights.rotary is base.model.model.rotary_emb


def test_an_unreadable_checkpoint_is_refused_when_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    from advisor.forecaster.modelstore import ModelNotFoundError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelNotFoundError, match="cannot load a causal language model"):
        load_base(ModelSpec(base=str(broken), dtype="float32"), tmp_path)
