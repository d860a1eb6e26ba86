"""A Llama-family model's weights as the decoding engine reads them: from a loaded transformers model,
or straight from the checkpoint's safetensors files.

Why the second source: the engine needs only the tensors and five numbers of the config. Importing
transformers' model code and building the model with ``from_pretrained`` cost ~2.3 s of an ``advisor
forecast`` of ~20 s on a 2-core CPU; reading the checkpoint with ``safetensors`` and casting to the
model's dtype takes a fraction of that. The cast is the one ``from_pretrained(dtype=...)`` does
(``Tensor.to``), and rotary embeddings follow transformers' default RoPE, so both sources give the
same numbers (tested against the transformers model). Anything the reader does not know — another
architecture, another activation, scaled RoPE, other weight names — raises
:class:`EngineUnsupportedError` and the caller loads the model instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError

SUPPORTED_MODEL_TYPES = frozenset({"llama"})

# The engine's fused products and their members, (parent module, projection) as transformers names them.
PROJECTION_GROUPS = {
    "qkv": (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj")),
    "o": (("self_attn", "o_proj"),),
    "gate_up": (("mlp", "gate_proj"), ("mlp", "up_proj")),
    "down": (("mlp", "down_proj"),),
}
PROJECTIONS = tuple(member for members in PROJECTION_GROUPS.values() for member in members)


class EngineUnsupportedError(ConfigError):
    """The model is not one the engine implements (the caller falls back to transformers)."""


@dataclass(frozen=True)
class LinearWeights:
    weight: Any  # [out, in]
    bias: Any = None


@dataclass(frozen=True)
class LayerWeights:
    norm1: Any  # input_layernorm
    norm2: Any  # post_attention_layernorm
    linears: dict[tuple[str, str], LinearWeights]  # by (parent, projection)


@dataclass(frozen=True)
class LlamaWeights:
    n_heads: int
    n_kv: int
    head_dim: int
    eps: float
    embed: Any
    final_norm: Any
    head: LinearWeights
    layers: list[LayerWeights]
    rotary: Callable[[Any, Any], tuple[Any, Any]]  # (x, positions [B, T]) -> cos, sin [B, T, head_dim] in x's dtype
    act: Callable[[Any], Any]

    @classmethod
    def from_model(cls, model: Any) -> LlamaWeights:
        """The tensors of a loaded (possibly peft-wrapped) transformers Llama model, shared, not copied."""
        check_supported(model)
        lm = causal_lm(model)
        config = lm.config
        n_heads = config.num_attention_heads
        layers = []
        for layer in lm.model.layers:
            linears = {}
            for parent, name in PROJECTIONS:
                module = _base_linear(getattr(getattr(layer, parent), name))
                linears[(parent, name)] = LinearWeights(module.weight.detach(), None if module.bias is None else module.bias.detach())
            layers.append(LayerWeights(layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach(), linears))
        head = lm.lm_head
        return cls(
            n_heads=n_heads,
            n_kv=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // n_heads,
            eps=float(config.rms_norm_eps),
            embed=lm.model.embed_tokens.weight.detach(),
            final_norm=lm.model.norm.weight.detach(),
            head=LinearWeights(head.weight.detach(), None if getattr(head, "bias", None) is None else head.bias.detach()),
            layers=layers,
            rotary=lm.model.rotary_emb,
            act=lm.model.layers[0].mlp.act_fn,
        )

    @classmethod
    def from_checkpoint(cls, path: Path, dtype: Any, device: Any) -> LlamaWeights:
        """Read ``path``'s config.json and safetensors weights (one file or an index of shards), cast to ``dtype``."""
        import torch.nn.functional as F

        config = checkpoint_config(path)
        n_heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // n_heads)
        tensors = Checkpoint(path)

        def get(name: str) -> Any:
            return tensors.get(name).to(device=device, dtype=dtype)

        def optional(name: str) -> Any:
            return get(name) if tensors.has(name) else None

        # transformers reads a projection's bias only when the config says the layer has one
        has_bias = {"self_attn": bool(config.get("attention_bias")), "mlp": bool(config.get("mlp_bias"))}
        layers = []
        for index in range(int(config["num_hidden_layers"])):
            prefix = f"model.layers.{index}."
            linears = {
                (parent, name): LinearWeights(get(f"{prefix}{parent}.{name}.weight"),
                                              optional(f"{prefix}{parent}.{name}.bias") if has_bias[parent] else None)
                for parent, name in PROJECTIONS
            }
            layers.append(LayerWeights(get(f"{prefix}input_layernorm.weight"), get(f"{prefix}post_attention_layernorm.weight"), linears))
        embed = get("model.embed_tokens.weight")
        # LlamaConfig's default is an untied head; an untied head the checkpoint lacks would be random in transformers
        head = LinearWeights(embed if config.get("tie_word_embeddings", False) else get("lm_head.weight"))
        return cls(
            n_heads=n_heads,
            n_kv=int(config.get("num_key_value_heads") or n_heads),
            head_dim=head_dim,
            eps=float(config["rms_norm_eps"]),
            embed=embed,
            final_norm=get("model.norm.weight"),
            head=head,
            layers=layers,
            rotary=DefaultRope(head_dim, _rope_theta(config)),
            act=F.silu,
        )


class DefaultRope:
    """transformers' default rotary embedding (``LlamaRotaryEmbedding`` with ``rope_type`` default), same operations."""

    def __init__(self, head_dim: int, theta: float) -> None:
        import torch

        self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))

    def __call__(self, x: Any, positions: Any) -> tuple[Any, Any]:
        import torch

        freqs = positions[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def apply_rotary(q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """transformers' ``apply_rotary_pos_emb`` (q, k [B, heads, T, hd]; cos, sin [B, T, hd])."""
    import torch

    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotate_half(x: Any) -> Any:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def checkpoint_config(path: Path) -> dict[str, Any]:
    """config.json of a checkpoint the engine can read without transformers, else EngineUnsupportedError."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineUnsupportedError(f"{path}/config.json is unreadable ({exc})") from exc
    model_type = config.get("model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EngineUnsupportedError(f"it implements {sorted(SUPPORTED_MODEL_TYPES)} models, not '{model_type}'")
    if config.get("hidden_act", "silu") != "silu":
        raise EngineUnsupportedError(f"its activation is {config['hidden_act']}, not silu")
    if config.get("quantization_config"):
        raise EngineUnsupportedError("its checkpoint is quantised")
    _rope_theta(config)
    for key in ("num_attention_heads", "num_hidden_layers", "hidden_size", "rms_norm_eps"):
        if key not in config:
            raise EngineUnsupportedError(f"its config has no {key}")
    return config


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise EngineUnsupportedError(f"it uses {rope_type} RoPE scaling, which only transformers' model code applies")
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


class Checkpoint:
    """Tensors by name across a checkpoint's safetensors file(s)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        index = path / "model.safetensors.index.json"
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        elif (path / "model.safetensors").is_file():
            files, weight_map = ["model.safetensors"], {}
        else:
            raise EngineUnsupportedError(f"{path} has no safetensors weights")
        self.handles = {name: safe_open(str(path / name), framework="pt") for name in files}
        self.where = weight_map or {key: files[0] for key in self.handles[files[0]].keys()}

    def has(self, name: str) -> bool:
        return name in self.where

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of every 2-D ``*.weight`` tensor by module name, from the file headers (no tensor is read);
        a tied checkpoint's head is its embedding matrix."""
        shapes = {}
        for key, file in self.where.items():
            shape = self.handles[file].get_slice(key).get_shape()
            if key.endswith(".weight") and len(shape) == 2:
                shapes[key.removesuffix(".weight")] = (int(shape[0]), int(shape[1]))
        embed = shapes.pop("model.embed_tokens", None)
        if embed is not None:
            shapes.setdefault("lm_head", embed)
        return shapes

    def get(self, name: str) -> Any:
        if name not in self.where:
            raise EngineUnsupportedError(f"its checkpoint has no tensor {name}")
        return self.handles[self.where[name]].get_tensor(name)


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a (possibly peft-wrapped) model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def check_supported(model: Any) -> None:
    """Raise :class:`EngineUnsupportedError` unless ``model`` has the layout the engine implements."""
    import torch

    lm = causal_lm(model)
    config = lm.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EngineUnsupportedError(f"it implements {sorted(SUPPORTED_MODEL_TYPES)} models, not '{model_type}'")
    core = getattr(lm, "model", None)
    if core is None or any(not hasattr(core, n) for n in ("embed_tokens", "layers", "norm", "rotary_emb")) or not hasattr(lm, "lm_head"):
        raise EngineUnsupportedError(f"{type(lm).__name__} lacks the Llama module layout")
    for layer in core.layers:
        for parent, name in PROJECTIONS:
            base = _base_linear(getattr(getattr(layer, parent), name))
            if not isinstance(base, torch.nn.Linear) or base.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise EngineUnsupportedError(f"its {name} is a {type(base).__name__} (quantised loading), not a plain Linear")


def _base_linear(module: Any) -> Any:
    return getattr(module, "base_layer", module)
