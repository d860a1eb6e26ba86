"""Loading a causal LM once per process, with any number of LoRA adapters served from it.

A :class:`ModelSpec` names a base (Hugging Face id or local path), an optional adapter, optional
bitsandbytes 4/8-bit loading, and device/dtype (``auto`` picks CUDA when present; on a CPU with
native bfloat16 units — AVX512-BF16/AMX — bfloat16, which decodes 2-3x faster than float32 here;
otherwise float32). Bases are cached by (path, quantisation, device, dtype); adapters are loaded onto
the cached base under their content hash and switched per call, so every user's adapter is served by
one copy of the weights. :meth:`ModelHandle.activate` holds a lock while an adapter is selected, so
concurrent callers (the dashboard) never generate with someone else's adapter.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from advisor.config import DEFAULT_BASE_MODEL
from advisor.errors import AdvisorError, ConfigError
from advisor.forecaster.llama_weights import Checkpoint, EngineUnsupportedError, LlamaWeights, checkpoint_config
from advisor.forecaster.lora_file import AdapterFileError, LoraFile
from advisor.forecaster.modelstore import ModelNotFoundError, adapter_hash, fingerprint, resolve_model_path

log = logging.getLogger(__name__)
Quantization = Literal["none", "4bit", "8bit"]
ADAPTER_META = "advisor-adapter.json"


class AdapterMismatchError(AdvisorError):
    """An adapter that was trained for a different base model."""


@dataclass(frozen=True)
class ModelSpec:
    base: str = DEFAULT_BASE_MODEL
    adapter: Path | None = None
    quantization: Quantization = "none"
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class LoadedBase:
    """A base model: its tokenizer, and its transformers model built on first use (possibly wrapped by
    peft once an adapter was added).

    The engine backend never needs the transformers model: it reads the checkpoint's tensors itself
    (:meth:`engine_weights`), so a command that only generates with the engine does not pay for
    importing transformers' model code and building the model (~2.3 s of a 2-core CPU).
    """

    tokenizer: Any
    base_id: str
    path: Path
    fingerprint: str
    device: Any
    dtype: Any
    quantization: str
    loader: Any = None  # () -> the transformers model, called once by :attr:`model`
    loaded_model: Any = None
    load_error: Exception | None = None
    header_shapes: dict[str, tuple[int, int]] | None = None  # linear shapes from the checkpoint headers (lazy bases)
    adapters: dict[str, Path] = field(default_factory=dict)  # attached adapters by content hash
    lora_files: dict[str, LoraFile] = field(default_factory=dict)  # their factors as read from disk (the engine's source)
    peft_loaded: set[str] = field(default_factory=set)  # hashes loaded into the peft wrapper (the transformers path)
    lock: threading.RLock = field(default_factory=threading.RLock)
    engines: dict[str, Any] = field(default_factory=dict)  # fast decoding engines by weight mode (backends/fast.py)

    @property
    def model(self) -> Any:
        """The transformers model (built now if nothing asked for it before; a failure is raised again on later calls)."""
        with self.lock:
            if self.loaded_model is None:
                if self.load_error is not None:
                    raise self.load_error
                try:
                    self.loaded_model = self.loader()
                except ModelNotFoundError as exc:
                    self.load_error = exc
                    raise
            return self.loaded_model

    @model.setter
    def model(self, value: Any) -> None:
        self.loaded_model = value

    def config(self) -> dict[str, Any]:
        """The checkpoint's config.json (the loaded model's config when there is no such file)."""
        path = self.path / "config.json"
        return json.loads(path.read_text()) if path.is_file() else self.model.config.to_dict()

    @property
    def context_length(self) -> int:
        if self.loaded_model is not None:
            return int(getattr(self.loaded_model.config, "max_position_embeddings", 2048) or 2048)
        return int(self.config().get("max_position_embeddings") or 2048)

    def engine_weights(self) -> Any:
        """The tensors the decoding engine runs (:class:`~advisor.forecaster.llama_weights.LlamaWeights`):
        shared with the transformers model when it is built, else read from the checkpoint files; raises
        EngineUnsupportedError for a model the engine does not implement."""
        with self.lock:
            if self.loaded_model is None and self.quantization == "none":
                try:
                    return LlamaWeights.from_checkpoint(self.path, self.dtype, self.device)
                except EngineUnsupportedError:
                    pass  # let the model's own loading decide (it may still be a Llama the engine runs)
                except Exception as exc:  # an unreadable file: the model's loader says what is wrong
                    log.info("reading %s for the engine failed (%s); building the transformers model", self.path, exc)
            return LlamaWeights.from_model(self.model)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of every linear layer by module name: what an adapter's factors must fit."""
        if self.loaded_model is None and self.header_shapes is not None:  # read once by load_base
            return self.header_shapes
        import torch

        model = self.model
        get_base = getattr(model, "get_base_model", None)  # a peft wrapper: its names carry a prefix
        named = (get_base() if callable(get_base) else model).named_modules()
        out = {}
        for name, module in named:
            module = getattr(module, "base_layer", module)
            if isinstance(module, torch.nn.Linear):
                out[name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
        return out


@dataclass(frozen=True)
class ModelHandle:
    """A base plus (optionally) one of its adapters: what a forecast is generated with."""

    base: LoadedBase
    adapter_hash: str | None = None
    adapter_path: Path | None = None

    @property
    def tokenizer(self) -> Any:
        return self.base.tokenizer

    @property
    def version_key(self) -> str:
        return f"{self.base.fingerprint[:32]}+{(self.adapter_hash or 'none')[:32]}"

    @contextmanager
    def activate(self) -> Iterator[Any]:
        """The model with this handle's adapter selected (or all adapters disabled), under the lock.

        The adapter is loaded into peft here, on first use, not when the handle is made: the engine
        backend never needs peft (see :mod:`advisor.forecaster.lora_file`).
        """
        with self.base.lock:
            if self.adapter_hash is not None:
                model = load_into_peft(self.base, self.adapter_hash)
                model.set_adapter(adapter_name(self.adapter_hash))
                yield model
                return
            model = self.base.model
            if self.base.peft_loaded:
                with model.disable_adapter():
                    yield model
            else:
                yield model


_BASES: dict[tuple[str, str, str, str], LoadedBase] = {}
_BASES_LOCK = threading.Lock()


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda"):
            chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            chosen = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    elif dtype in names:
        chosen = names[dtype]
    else:
        raise ConfigError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return torch.device(device), chosen


def cpu_has_native_bf16() -> bool:
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def load_base(spec: ModelSpec, model_dir: Path) -> LoadedBase:
    """Load (or reuse) the base model of ``spec``: its tokenizer now, its weights when first used."""

    path = resolve_model_path(spec.base, model_dir)
    device, dtype = resolve_device_dtype(spec.device, spec.dtype)
    key = (str(path.resolve()), spec.quantization, str(device), str(dtype))
    with _BASES_LOCK:
        if key in _BASES:
            return _BASES[key]
        loader = lambda: load_transformers_model(path, spec.quantization, device, dtype)  # noqa: E731
        # Built on first use when the engine's reader knows the checkpoint (its headers give the shapes an
        # adapter must fit); otherwise now, so an unreadable model is refused here with the loader's message.
        shapes = _header_shapes(path) if spec.quantization == "none" else None
        model = loader() if shapes is None else None
        try:
            tokenizer = load_tokenizer(path)
        except Exception as exc:  # transformers/tokenizers raise many types for unreadable files
            raise ModelNotFoundError(f"cannot load a tokenizer from {path}: {type(exc).__name__}: {exc}") from exc
        prepare_tokenizer(tokenizer)
        base = LoadedBase(
            tokenizer=tokenizer,
            base_id=spec.base,
            path=path,
            fingerprint=fingerprint(path, cache_dir=model_dir),
            device=device,
            dtype=dtype,
            quantization=spec.quantization,
            loader=loader,
            loaded_model=model,
            header_shapes=shapes,
        )
        _BASES[key] = base
        return base


def _header_shapes(path: Path) -> dict[str, tuple[int, int]] | None:
    """The linear shapes of a checkpoint whose config and weights the engine's reader knows (a Llama in
    safetensors with readable headers), else None."""
    try:
        checkpoint_config(path)
        return Checkpoint(path).linear_shapes()
    except Exception:  # another architecture, a truncated or foreign file: the model loader decides, now
        return None


FAST_TOKENIZER_CLASSES = frozenset({None, "TokenizersBackend", "PreTrainedTokenizerFast"})


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's tokenizer. A tokenizer file whose declared class is the generic fast tokenizer is read
    as ``PreTrainedTokenizerFast`` directly (what ``AutoTokenizer`` returns for it, without importing the
    registry of every model's classes, ~0.4 s); any other class goes through ``AutoTokenizer`` as training does."""
    config_path = path / "tokenizer_config.json"
    try:
        declared = json.loads(config_path.read_text()).get("tokenizer_class") if config_path.is_file() else None
    except (OSError, json.JSONDecodeError, AttributeError):
        declared = "unreadable"
    if (path / "tokenizer.json").is_file() and declared in FAST_TOKENIZER_CLASSES:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_transformers_model(path: Path, quantization: Quantization, device: Any, dtype: Any) -> Any:
    """The transformers causal LM at ``path``, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization != "none":
        kwargs["quantization_config"] = _bnb_config(quantization, dtype)
        kwargs["device_map"] = {"": str(device)}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:  # transformers/safetensors raise many types for unreadable weights
        raise ModelNotFoundError(f"cannot load a causal language model from {path}: {type(exc).__name__}: {exc}") from exc
    if quantization == "none":
        model.to(device)
    model.eval()
    return model


def prepare_tokenizer(tokenizer: Any) -> None:
    """Left padding for batched generation; a pad token when the model has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def _bnb_config(quantization: Quantization, dtype: Any) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        # bitsandbytes 0.50 does run on CPU (slowly); allowed, but say what it costs.
        import warnings

        warnings.warn(f"{quantization} loading without a CUDA GPU runs on the CPU and is slow", stacklevel=3)
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"unknown quantization '{quantization}' (use none, 4bit or 8bit)")


def load_model(spec: ModelSpec, model_dir: Path) -> ModelHandle:
    """A handle for ``spec``: the cached base, with the adapter loaded onto it when one is given."""
    base = load_base(spec, model_dir)
    if spec.adapter is None:
        return ModelHandle(base)
    return attach_adapter(base, Path(spec.adapter))


def attach_adapter(base: LoadedBase, adapter_path: Path) -> ModelHandle:
    """Attach an adapter to ``base`` (once) after checking it belongs to this base and fits its shapes.

    Its factors are read from disk and checked against the base's layers without peft; peft loads it
    only when the transformers path first uses it (:meth:`ModelHandle.activate`). An adapter the
    reader cannot represent (DoRA, saved modules, ``.bin`` weights) is loaded into peft right away, so
    a misfit is refused here either way.
    """
    adapter_path = adapter_path.expanduser()
    if not adapter_path.is_dir():
        raise ModelNotFoundError(f"adapter {adapter_path} does not exist")
    digest = adapter_hash(adapter_path)
    check_adapter_base(adapter_path, base)
    with base.lock:
        if digest not in base.adapters:
            try:
                lora = LoraFile.read(adapter_path)
            except AdapterFileError as exc:
                raise AdapterMismatchError(f"adapter {adapter_path} does not fit base model {base.base_id}: {exc}") from exc
            misfit = lora.mismatch(base.linear_shapes())
            if misfit is not None:
                raise AdapterMismatchError(f"adapter {adapter_path} does not fit base model {base.base_id}: {misfit}")
            base.adapters[digest] = adapter_path
            base.lora_files[digest] = lora
            if lora.problem is not None:
                try:
                    load_into_peft(base, digest)
                except AdapterMismatchError:
                    del base.adapters[digest], base.lora_files[digest]
                    raise
    return ModelHandle(base, digest, adapter_path)


def load_into_peft(base: LoadedBase, digest: str) -> Any:
    """The peft-wrapped model with attached adapter ``digest`` loaded into it (once)."""
    from peft import PeftModel

    with base.lock:
        if digest in base.peft_loaded:
            return base.model
        adapter_path, name = base.adapters[digest], adapter_name(digest)
        try:
            if isinstance(base.model, PeftModel):
                base.model.load_adapter(str(adapter_path), adapter_name=name)
            else:
                base.model = PeftModel.from_pretrained(base.model, str(adapter_path), adapter_name=name)
            base.model.eval()
        except (RuntimeError, ValueError, KeyError) as exc:
            raise AdapterMismatchError(
                f"adapter {adapter_path} does not fit base model {base.base_id}: {str(exc).splitlines()[0]}"
            ) from exc
        base.peft_loaded.add(digest)
        return base.model


def check_adapter_base(adapter_path: Path, base: LoadedBase) -> None:
    """Refuse an adapter recorded as trained on another base (by fingerprint, else by name)."""
    meta_path = adapter_path / ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("base_fingerprint") and meta["base_fingerprint"] != base.fingerprint:
            raise AdapterMismatchError(
                f"adapter {adapter_path} was trained on base {meta.get('base_model', '?')} "
                f"(fingerprint {meta['base_fingerprint'][:12]}), not on {base.base_id} ({base.fingerprint[:12]})"
            )
        return
    config = json.loads((adapter_path / "adapter_config.json").read_text())
    named = str(config.get("base_model_name_or_path") or "")
    if named and Path(named).name not in (Path(base.base_id).name, base.path.name):
        raise AdapterMismatchError(f"adapter {adapter_path} names base model '{named}', not '{base.base_id}'")


def write_adapter_meta(adapter_path: Path, *, base_model: str, base_fingerprint: str, extra: dict | None = None) -> None:
    meta = {"base_model": base_model, "base_fingerprint": base_fingerprint, **(extra or {})}
    (adapter_path / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str))


def adapter_name(digest: str) -> str:
    """The peft adapter name an adapter is loaded under (from its content hash)."""
    return f"a{digest[:16]}"


def clear_cache() -> None:
    """Forget loaded bases (tests; freeing memory)."""
    with _BASES_LOCK:
        _BASES.clear()

