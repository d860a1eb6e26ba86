"""Batched generation with recorded decoding settings and seeds.

Greedy decoding batches prompts together (left padding, sorted by length so little is padded).
Sampling draws K candidates per prompt seeded by ``seed`` and the prompt hash, so by default
(``sample_batch=1``) a prompt's candidates are reproducible from what is stored (seed, decoding
settings, model version) whatever else was generated in the same run. ``sample_batch=n`` samples n
prompts per call for speed; the seed then derives from the batch's prompt hashes, which are recorded
with each candidate, so the batch can be replayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tqdm.auto import tqdm

from advisor.errors import ConfigError
from advisor.forecaster.loading import ModelHandle


@dataclass(frozen=True)
class Decoding:
    mode: Literal["greedy", "sample"] = "greedy"
    max_new_tokens: int = 256
    temperature: float = 0.9
    top_p: float = 0.95
    num_candidates: int = 1
    seed: int = 0
    batch_size: int = 8
    sample_batch: int = 1  # prompts sampled together (see module docstring)

    def __post_init__(self) -> None:
        if self.mode not in ("greedy", "sample"):
            raise ConfigError(f"decoding mode must be greedy or sample, not {self.mode!r}")
        if self.mode == "greedy" and self.num_candidates != 1:
            raise ConfigError("greedy decoding gives one candidate per prompt; use sampling for several")
        if self.num_candidates < 1 or self.max_new_tokens < 1 or self.batch_size < 1 or self.sample_batch < 1:
            raise ConfigError("num_candidates, max_new_tokens, batch_size and sample_batch must be at least 1")
        if self.mode == "sample" and not (0 < self.temperature <= 5 and 0 < self.top_p <= 1):
            raise ConfigError("sampling needs 0 < temperature <= 5 and 0 < top_p <= 1")

    def record(self, dtype: str) -> dict[str, Any]:
        """What is stored with each forecast (everything that changes the output)."""
        settings = asdict(self)
        settings.pop("batch_size")
        if self.mode == "greedy":
            settings.pop("temperature")
            settings.pop("top_p")
            settings.pop("sample_batch")
        settings["dtype"] = dtype
        return settings


@dataclass(frozen=True)
class Generation:
    text: str
    seed: int
    candidate_index: int
    new_tokens: int
    finished: bool  # ended with the end-of-turn token rather than the token limit
    batch_prompts: tuple[str, ...] = ()  # prompt hashes sampled in the same call (sample_batch > 1)


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
) -> list[list[Generation]]:
    """Generate for each prompt; returns, per prompt, ``decoding.num_candidates`` generations."""
    if len(prompt_texts) != len(prompt_hashes):
        raise ValueError("one hash per prompt")
    results: list[list[Generation]] = [[] for _ in prompt_texts]
    if not prompt_texts:
        return results
    tokenizer = handle.tokenizer
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompt_texts]
    with tqdm(total=len(prompt_texts), desc=description, unit="prompt", disable=not progress) as bar:
        if decoding.mode == "greedy":
            order = sorted(range(len(prompt_texts)), key=lambda i: -lengths[i])
            for start in range(0, len(order), decoding.batch_size):
                batch = order[start : start + decoding.batch_size]
                outputs = _generate_batch(handle, [prompt_texts[i] for i in batch], decoding, 1, seed=None)
                for i, (text, n_tokens, finished) in zip(batch, outputs, strict=True):
                    results[i] = [Generation(text, decoding.seed, 0, n_tokens, finished)]
                bar.update(len(batch))
                if on_progress:
                    on_progress(bar.n, len(prompt_texts))
        else:
            order = sorted(range(len(prompt_texts)), key=lambda i: (-lengths[i], prompt_hashes[i]))
            for start in range(0, len(order), decoding.sample_batch):
                batch = order[start : start + decoding.sample_batch]
                hashes = tuple(prompt_hashes[i] for i in batch)
                seed = prompt_seed(decoding.seed, hashes[0] if len(hashes) == 1 else "|".join(hashes))
                outputs = _generate_batch(handle, [prompt_texts[i] for i in batch], decoding, decoding.num_candidates, seed=seed)
                k = decoding.num_candidates
                for position, i in enumerate(batch):
                    rows = outputs[position * k : (position + 1) * k]
                    results[i] = [Generation(t, seed, c, n, f, hashes if len(hashes) > 1 else ()) for c, (t, n, f) in enumerate(rows)]
                bar.update(len(batch))
                if on_progress:
                    on_progress(bar.n, len(prompt_texts))
    return results


def _generate_batch(
    handle: ModelHandle, texts: list[str], decoding: Decoding, num_return_sequences: int, seed: int | None
) -> list[tuple[str, int, bool]]:
    import torch

    tokenizer = handle.tokenizer
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with handle.activate() as model:
        device = handle.base.device
        encoded = {k: v.to(device) for k, v in encoded.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "num_return_sequences": num_return_sequences,
        }
        if decoding.mode == "sample":
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
            torch.manual_seed(seed if seed is not None else decoding.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs)
    prompt_len = encoded["input_ids"].shape[1]
    new = output[:, prompt_len:]
    decoded = []
    for row in new:
        ids = row.tolist()
        finished = tokenizer.eos_token_id in ids
        if finished:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids.pop()
        decoded.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), finished))
    return decoded
