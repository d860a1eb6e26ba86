"""Generation with recorded decoding settings and seeds, through whichever backend is configured.

:func:`generate` is the one entry point: it seeds each prompt, shows progress, and hands the work to
the backend that :func:`advisor.forecaster.backends.select_backend` picks (the fast engine, the
transformers reference, or an OpenAI-compatible server); callers never branch on the backend.

Sampling seeds each prompt from ``seed`` and the prompt hash, so a prompt's candidates are
reproducible from what is stored (seed, decoding settings, backend, model version) whatever else
was generated in the same run.

Each sequence stops at the end-of-turn token, at the token limit, or (``early_stop``, on by default)
as soon as :func:`advisor.forecaster.views.answer_stop_reason` says the answer is complete or the
model is repeating itself. On a CPU a looping sequence would otherwise cost tokens up to the limit;
the untuned base model loops on every prompt. The reason is stored with each view.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from advisor.errors import ConfigError
from advisor.forecaster.backends import PromptJob, select_backend
from advisor.forecaster.loading import ModelHandle

if TYPE_CHECKING:
    from advisor.forecaster.backends import GenerationBackend
    from advisor.forecaster.grounding import Grounding


@dataclass(frozen=True)
class Decoding:
    mode: Literal["greedy", "sample"] = "greedy"
    max_new_tokens: int = 160  # answers are ~100 tokens; a looping model is cut off here
    temperature: float = 0.9
    top_p: float = 0.95
    num_candidates: int = 1
    seed: int = 0
    batch_size: int = 16  # transformers backend: prompts per batch (the engine's width is the `slots` setting)
    sample_batch: int = 1  # transformers backend: prompts sampled together (see backends/hf.py)
    early_stop: bool = True  # stop a sequence once its answer is complete or it repeats itself
    grounded: bool = True  # list only the window's facts and write the analysis from them (advisor.forecaster.grounding)

    def __post_init__(self) -> None:
        if self.mode not in ("greedy", "sample"):
            raise ConfigError(f"decoding mode must be greedy or sample, not {self.mode!r}")
        if self.mode == "greedy" and self.num_candidates != 1:
            raise ConfigError("greedy decoding gives one candidate per prompt; use sampling for several")
        if self.num_candidates < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.sample_batch < 1:
            raise ConfigError("num_candidates, max_new_tokens, batch_size and sample_batch must be at least 1")
        if self.mode == "sample" and not (0 < self.temperature <= 5 and 0 < self.top_p <= 1):
            raise ConfigError("sampling needs 0 < temperature <= 5 and 0 < top_p <= 1")

    def record(self, dtype: str, backend: str = "transformers") -> dict[str, Any]:
        """What is stored with each forecast (everything that changes the output)."""
        settings = asdict(self)
        settings["backend"] = backend
        settings.pop("batch_size")
        if self.mode == "greedy" or backend != "transformers":
            settings.pop("sample_batch")
        if self.mode == "greedy":
            settings.pop("temperature")
            settings.pop("top_p")
        settings["dtype"] = dtype
        return settings


@dataclass(frozen=True)
class Generation:
    text: str
    seed: int
    candidate_index: int
    new_tokens: int
    finished: bool  # ended before the token limit (end-of-turn token or an early-stop rule)
    batch_prompts: tuple[str, ...] = ()  # prompt hashes sampled in the same call (sample_batch > 1)
    stop_reason: str = "eos"  # eos | length | answer_complete | repetition
    backend: str = "transformers"  # which backend wrote it (recorded with the decoding settings)


def prompt_seed(seed: int, prompt_hash: str) -> int:
    return int(hashlib.sha256(f"{seed}:{prompt_hash}".encode()).hexdigest()[:8], 16) % (2**31 - 1)


def generate(
    handle: ModelHandle,
    prompt_texts: list[str],
    prompt_hashes: list[str],
    decoding: Decoding,
    *,
    progress: bool = True,
    description: str = "generating views",
    on_progress: Callable[[int, int], None] | None = None,
    backend: GenerationBackend | str | None = None,
    groundings: Sequence[Grounding | None] | None = None,
) -> list[list[Generation]]:
    """Generate for each prompt; returns, per prompt, ``decoding.num_candidates`` generations.

    ``groundings`` (one per prompt, used when ``decoding.grounded`` and the backend grounds): the
    facts each view may state.
    """
    if len(prompt_texts) != len(prompt_hashes):
        raise ValueError("one hash per prompt")
    if not prompt_texts:
        return [[] for _ in prompt_texts]
    chosen = backend if backend is not None and not isinstance(backend, str) else select_backend(handle, backend)
    if groundings is not None and len(groundings) != len(prompt_texts):
        raise ValueError("one grounding (or None) per prompt")
    use = groundings if groundings is not None and decoding.grounded and chosen.grounds else [None] * len(prompt_texts)
    jobs = [
        PromptJob(text, digest, decoding.seed if decoding.mode == "greedy" else prompt_seed(decoding.seed, digest), grounding)
        for text, digest, grounding in zip(prompt_texts, prompt_hashes, use, strict=True)
    ]
    with tqdm(total=len(jobs), desc=description, unit="prompt", disable=not progress) as bar:

        def done(_: int) -> None:
            bar.update(1)
            if on_progress:
                on_progress(bar.n, len(jobs))

        raw = chosen.generate(handle, jobs, decoding, done)
    return [
        [
            Generation(g.text, g.seed, c, g.new_tokens, g.stop_reason != "length", g.batch_prompts, g.stop_reason, chosen.name)
            for c, g in enumerate(row)
        ]
        for row in raw
    ]


# Per tokenizer, computed once (a pass over the vocabulary); weak keys, so a freed tokenizer's entry
# goes with it and a new tokenizer at the same address never inherits it.
_NEWLINE_IDS: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def newline_token_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids whose text contains a newline (the early-stop rules look at complete lines)."""
    if tokenizer not in _NEWLINE_IDS:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        _NEWLINE_IDS[tokenizer] = frozenset(
            i for i, piece in enumerate(vocab) if piece is not None and "\n" in tokenizer.convert_tokens_to_string([piece])
        )
    return _NEWLINE_IDS[tokenizer]
