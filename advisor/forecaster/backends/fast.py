"""The ``engine`` backend: :class:`advisor.forecaster.engine.DecoderEngine` behind the backend interface.

One engine per loaded base is kept on the base, so every user's adapter is served
by the same weights: the engine takes the handle's adapter's LoRA factors as read from its files
(:mod:`advisor.forecaster.lora_file`, no peft import) and merges them into one working copy of the base. Nothing is converted per adapter on disk, so a
new adapter version is usable the moment it is registered.

Each candidate of a prompt samples from its own generator: candidate 0 from the prompt's seed,
candidate c > 0 from ``prompt_seed(seed, "candidate-c")``; the prompt's seed is what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advisor.config import InferenceSettings
from advisor.forecaster.backends import PromptJob, RawGeneration
from advisor.forecaster.engine import (
    DecoderEngine,
    EngineAdapter,
    EngineRequest,
    EngineUnsupportedError,
    SamplingSettings,
    adapter_problem,
)
from advisor.forecaster.generation import Decoding, newline_token_ids, prompt_seed
from advisor.forecaster.grounding import compile_grounding
from advisor.forecaster.loading import LoadedBase, ModelHandle
from advisor.forecaster.views import answer_stop_reason


def engine_support_problem(handle: ModelHandle) -> str | None:
    """Why the engine cannot serve ``handle``'s model, or None."""
    try:
        engine_for(handle.base)
    except EngineUnsupportedError as exc:
        return str(exc)
    adapter = engine_adapter(handle)
    return adapter_problem(adapter.lora) if adapter is not None else None


def engine_adapter(handle: ModelHandle) -> EngineAdapter | None:
    """The handle's adapter as the engine serves it (None: the base alone)."""
    if handle.adapter_hash is None:
        return None
    return EngineAdapter(handle.adapter_hash, handle.base.lora_files[handle.adapter_hash])


def candidate_seed(seed: int, candidate: int) -> int:
    return seed if candidate == 0 else prompt_seed(seed, f"candidate-{candidate}")


def engine_for(base: LoadedBase) -> DecoderEngine:
    """The base's engine, built once per loaded base."""
    with base.lock:
        engine = base.engines.get("engine")
        if engine is None:
            engine = DecoderEngine(base.engine_weights())
            base.engines["engine"] = engine
    return engine


class EngineBackend:
    name = "engine"
    grounds = True

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings

    def generate(
        self, handle: ModelHandle, jobs: list[PromptJob], decoding: Decoding, on_done: Callable[[int], None]
    ) -> list[list[RawGeneration]]:
        tokenizer = handle.tokenizer
        engine = engine_for(handle.base)
        k = decoding.num_candidates
        requests = [
            EngineRequest(
                tuple(tokenizer(job.text, add_special_tokens=False)["input_ids"]),
                tuple(candidate_seed(job.seed, c) for c in range(k)),
                compile_grounding(job.grounding, tokenizer),
            )
            for job in jobs
        ]
        settings = SamplingSettings(decoding.mode, decoding.max_new_tokens, decoding.temperature, decoding.top_p)
        stop_check = _stop_check(tokenizer) if decoding.early_stop else None
        eos = frozenset({tokenizer.eos_token_id}) if tokenizer.eos_token_id is not None else frozenset()
        adapter = engine_adapter(handle)
        with handle.base.lock:
            outputs = engine.generate(
                requests, settings, slots=self.settings.slots, eos_ids=eos, adapter=adapter,
                stop_check=stop_check, on_request_done=on_done,
            )
        return [
            [RawGeneration(tokenizer.decode(o.token_ids, skip_special_tokens=True).strip(), len(o.token_ids), o.stop_reason, job.seed) for o in row]
            for job, row in zip(jobs, outputs, strict=True)
        ]


def _stop_check(tokenizer: Any) -> Callable[[list[int]], str | None]:
    newlines = newline_token_ids(tokenizer)

    def check(tokens: list[int]) -> str | None:
        if tokens[-1] not in newlines:
            return None
        return answer_stop_reason(tokenizer.decode(tokens, skip_special_tokens=True))

    return check
