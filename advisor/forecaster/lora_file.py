"""A peft LoRA adapter read straight from its files, for the engine and for checking it fits a base.

Why not peft: importing peft (which imports much of transformers' modelling code) and wrapping the
base took ~3 s of a 20 s ``advisor forecast``, and the engine only needs each projection's two
factors and scale. peft stays the loader for the transformers backend and for training; this reader
handles plain LoRA (the kind the project trains) and reports anything else as a problem, so the
caller falls back to peft instead of serving an adapter half-understood.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import AdvisorError

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
# base_model.model.<module path>.lora_A.weight (peft's saved names; an adapter name may sit before .weight)
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")
# base_model.model.score.weight or base_model.model.score.modules_to_save.<name>.weight: a module saved whole
_SAVED_KEY = re.compile(r"^base_model\.model\.(?P<module>[^.]+)(?:\.modules_to_save\.[^.]+)?\.(?P<param>weight|bias)$")
_SEQ_CLS_DEFAULT_SAVED = frozenset({"classifier", "score"})
# Config entries that change what a LoRA computes; any non-empty value makes the reader decline.
_UNSUPPORTED = ("use_dora", "lora_bias", "modules_to_save", "trainable_token_indices", "target_parameters", "layers_to_transform",
                "fan_in_fan_out", "use_qalora", "use_bdlora", "alora_invocation_tokens")


class AdapterFileError(AdvisorError):
    """An adapter directory that cannot be read as a LoRA adapter."""


@dataclass(frozen=True)
class LoraFactors:
    """One projection's update ``scale * B @ A``: A [r, in], B [out, r]."""

    a: Any
    b: Any
    scale: float


@dataclass(frozen=True)
class LoraFile:
    """An adapter's LoRA factors by module path (``model.layers.3.self_attn.q_proj``) and why the
    reader cannot represent it exactly (``problem``), if it cannot."""

    path: Path
    modules: dict[str, LoraFactors]
    problem: str | None
    saved: dict[str, Any] = field(default_factory=dict)  # whole weights of the saved modules the caller accepted

    @classmethod
    def read(cls, path: Path, *, saved_modules: frozenset[str] = frozenset()) -> LoraFile:
        """Read ``path``. ``saved_modules``: top-level modules the caller serves itself when the adapter
        saves them whole (the sentiment adapter's ``score`` head); their weights go to ``saved``."""
        config = _config(path)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            # peft also writes adapter_model.bin; only the safetensors form is read here
            return cls(path, {}, f"no {WEIGHTS_FILE} in {path}")
        problem = _config_problem(config, saved_modules)
        tensors = _tensors(weights)
        sides: dict[str, dict[str, Any]] = {}
        saved: dict[str, Any] = {}
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                whole = _SAVED_KEY.match(key)
                if whole is not None and whole["module"] in saved_modules:
                    saved[f"{whole['module']}.{whole['param']}"] = tensor
                    continue
                problem = problem or f"the adapter holds {key}, which is not a LoRA factor"
                continue
            sides.setdefault(match["module"], {})[match["side"]] = tensor
        modules = {}
        for module, pair in sides.items():
            if set(pair) != {"A", "B"}:
                raise AdapterFileError(f"adapter {path}: {module} has lora_{''.join(pair)} only")
            a, b = pair["A"], pair["B"]
            if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
                raise AdapterFileError(f"adapter {path}: {module} has factors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
            modules[module] = LoraFactors(a, b, _scale(config, module, int(a.shape[0])))
        if not modules:
            problem = problem or "the adapter holds no LoRA factors"
        return cls(path, modules, problem, saved)

    def mismatch(self, linear_shapes: dict[str, tuple[int, int]]) -> str | None:
        """Why these factors do not fit a base whose linear layers are ``linear_shapes`` ((out, in) by
        module name, :meth:`~advisor.forecaster.loading.LoadedBase.linear_shapes`): a missing module or a wrong shape."""
        for module, factors in self.modules.items():
            shape = linear_shapes.get(module)
            if shape is None:
                return f"it puts LoRA on {module}, which the base model has no linear layer for"
            out_features, in_features = shape
            if factors.a.shape[1] != in_features or factors.b.shape[0] != out_features:
                return (f"{module} is {out_features}x{in_features} in the base, but the adapter's factors are "
                        f"{tuple(factors.b.shape)} and {tuple(factors.a.shape)}")
        return None


def _config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError as exc:
        raise AdapterFileError(f"adapter {path} has no {CONFIG_FILE}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"adapter {path}: {CONFIG_FILE} is unreadable ({exc})") from exc
    if not isinstance(config, dict):
        raise AdapterFileError(f"adapter {path}: {CONFIG_FILE} is not a JSON object")
    return config


def _config_problem(config: dict[str, Any], saved_modules: frozenset[str]) -> str | None:
    if config.get("peft_type", "LORA") != "LORA":
        return f"it is a {config.get('peft_type')} adapter, not LoRA"
    for name in _UNSUPPORTED:
        value = config.get(name)
        if name == "modules_to_save" and value and saved_modules and set(value) <= saved_modules | _SEQ_CLS_DEFAULT_SAVED:
            continue  # peft adds classifier/score to a classifier's list; only those the file holds are read
        if value:
            return f"its config sets {name}, which the engine does not implement"
    return None


def _tensors(weights: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFileError(f"adapter weights {weights} are unreadable: {exc}") from exc


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    """peft's scaling for ``module``: alpha / r (alpha / sqrt(r) with rsLoRA), per-module alphas by suffix match."""
    alpha = float(config.get("lora_alpha", 8))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
