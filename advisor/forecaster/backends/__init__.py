"""Inference backends: one interface for writing views, chosen by one setting.

Every caller goes through :func:`advisor.forecaster.generation.generate`; it never branches on the
backend. The backends:

* ``engine`` — :mod:`advisor.forecaster.engine`, continuous batching over the loaded transformers
  weights (one prefill shared by a prompt's sampled candidates, a shared-prefix cache, LoRA beside
  one shared base). The default wherever the model is one it implements (Llama family).
* ``transformers`` — ``model.generate`` in length-sorted batches: the reference implementation and
  the fallback for any other causal LM.
* ``openai`` — an OpenAI-compatible completions server (vLLM with multi-LoRA, SGLang, llama.cpp's
  server, ``advisor serve``), the user's adapter named per request, for when one machine is not
  enough.

``auto`` (the default setting) means ``engine`` where supported, else ``transformers`` with a
one-line note naming the fallback. The backend's name is recorded with each forecast's decoding
settings, because it is part of what produced the text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from advisor.config import InferenceSettings
from advisor.errors import ConfigError

if TYPE_CHECKING:
    from advisor.forecaster.generation import Decoding
    from advisor.forecaster.grounding import Grounding
    from advisor.forecaster.loading import ModelHandle

log = logging.getLogger("advisor.inference")

BACKENDS = ("engine", "transformers", "openai")
_settings = InferenceSettings()
_notified: set[str] = set()


@dataclass(frozen=True)
class PromptJob:
    """One prompt to answer: its chat-templated text, its hash and its seed (sampling)."""

    text: str
    hash: str
    seed: int
    grounding: Grounding | None = None  # facts the view may state (see advisor.forecaster.grounding)


@dataclass(frozen=True)
class RawGeneration:
    text: str
    new_tokens: int
    stop_reason: str  # eos | length | answer_complete | repetition
    seed: int
    batch_prompts: tuple[str, ...] = ()  # prompt hashes that shared this seed (transformers sample_batch > 1)


class GenerationBackend(Protocol):
    name: str  # recorded with each forecast
    grounds: bool  # applies a job's grounding (token-level constraint) when it has one

    def generate(
        self, handle: ModelHandle, jobs: list[PromptJob], decoding: Decoding, on_done: Callable[[int], None]
    ) -> list[list[RawGeneration]]:
        """``decoding.num_candidates`` generations per job; ``on_done(i)`` as soon as job i is finished."""
        ...


def configure(settings: InferenceSettings) -> None:
    """Set the process-wide inference settings (done by :class:`advisor.runtime.Runtime`)."""
    global _settings
    _settings = settings


def current_settings() -> InferenceSettings:
    return _settings


def notify_once(message: str) -> None:
    """A fallback note, said once per process (CLI output, dashboard logs)."""
    if message not in _notified:
        _notified.add(message)
        log.warning(message)


def select_backend(handle: ModelHandle, requested: str | None = None) -> GenerationBackend:
    """The backend for ``handle``: ``requested``, else the configured one; ``auto`` picks by support."""
    name = requested or _settings.backend
    if name not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown inference backend '{name}' (use auto, {', '.join(BACKENDS)})")
    if name == "openai":
        from advisor.forecaster.backends.server import ServerBackend

        return ServerBackend(_settings)
    if name == "transformers":
        from advisor.forecaster.backends.hf import TransformersBackend

        return TransformersBackend()
    from advisor.forecaster.backends.fast import EngineBackend, engine_support_problem
    from advisor.forecaster.backends.hf import TransformersBackend

    problem = engine_support_problem(handle)
    if problem is None:
        return EngineBackend(_settings)
    notify_once(f"fast engine not used ({problem}); falling back to the transformers backend")
    return TransformersBackend()


def describe(handle: ModelHandle, requested: str | None = None) -> dict[str, Any]:
    """What :func:`select_backend` would use, for status output."""
    backend = select_backend(handle, requested)
    return {"backend": backend.name, "requested": requested or _settings.backend}
