"""Batched generation with recorded decoding settings and seeds.

Greedy decoding batches prompts together (left padding, sorted by length so little is padded).
Sampling draws K candidates per prompt seeded by ``seed`` and the prompt hash, so by default
(``sample_batch=1``) a prompt's candidates are reproducible from what is stored (seed, decoding
settings, model version) whatever else was generated in the same run. ``sample_batch=n`` samples n
prompts per call for speed; the seed then derives from the batch's prompt hashes, which are recorded
with each candidate, so the batch can be replayed.

Each sequence stops at the end-of-turn token, at the token limit, or (``early_stop``, on by default)
as soon as :func:`advisor.forecaster.views.answer_stop_reason` says the answer is complete or the
model is repeating itself. On a CPU a looping sequence would otherwise hold its whole batch to the
token limit; the untuned base model loops on every prompt. The reason is stored with each view.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tqdm.auto import tqdm

from advisor.errors import ConfigError
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.views import answer_stop_reason


@dataclass(frozen=True)
class Decoding:
    mode: Literal["greedy", "sample"] = "greedy"
    max_new_tokens: int = 160  # answers are ~100 tokens; a looping model is cut off here
    temperature: float = 0.9
    top_p: float = 0.95
    num_candidates: int = 1
    seed: int = 0
    batch_size: int = 16  # decoding on a CPU is bound by reading the weights: 16 sequences cost little more than 8
    sample_batch: int = 1  # prompts sampled together (see module docstring)
    early_stop: bool = True  # stop a sequence once its answer is complete or it repeats itself

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
    finished: bool  # ended before the token limit (end-of-turn token or an early-stop rule)
    batch_prompts: tuple[str, ...] = ()  # prompt hashes sampled in the same call (sample_batch > 1)
    stop_reason: str = "eos"  # eos | length | answer_complete | repetition


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
                for i, (text, n_tokens, reason) in zip(batch, outputs, strict=True):
                    results[i] = [Generation(text, decoding.seed, 0, n_tokens, reason != "length", stop_reason=reason)]
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
                    results[i] = [
                        Generation(t, seed, c, n, reason != "length", hashes if len(hashes) > 1 else (), reason)
                        for c, (t, n, reason) in enumerate(rows)
                    ]
                bar.update(len(batch))
                if on_progress:
                    on_progress(bar.n, len(prompt_texts))
    return results


class AnswerStop:
    """A transformers stopping criterion: per sequence, stop when :func:`answer_stop_reason` says so.

    The answer so far is decoded only on steps whose new token contains a newline (the rules look at
    complete lines), so the check costs little next to a decoding step.
    """

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.newline_ids = _newline_token_ids(tokenizer)
        self.reasons: dict[int, str] = {}

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, token in enumerate(last):
            if row in self.reasons:
                done[row] = True
            elif token in self.newline_ids:
                text = self.tokenizer.decode(input_ids[row, self.prompt_length :], skip_special_tokens=True)
                reason = answer_stop_reason(text)
                if reason is not None:
                    self.reasons[row] = reason
                    done[row] = True
        return done


# Per tokenizer, computed once (a pass over the vocabulary); weak keys, so a freed tokenizer's entry
# goes with it and a new tokenizer at the same address never inherits it.
_NEWLINE_IDS: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def _newline_token_ids(tokenizer: Any) -> frozenset[int]:
    if tokenizer not in _NEWLINE_IDS:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        _NEWLINE_IDS[tokenizer] = frozenset(
            i for i, piece in enumerate(vocab) if piece is not None and "\n" in tokenizer.convert_tokens_to_string([piece])
        )
    return _NEWLINE_IDS[tokenizer]


def _generate_batch(
    handle: ModelHandle, texts: list[str], decoding: Decoding, num_return_sequences: int, seed: int | None
) -> list[tuple[str, int, str]]:
    """Generate for one batch; returns (text, new tokens, stop reason) per sequence."""
    import torch
    from transformers import StoppingCriteriaList

    tokenizer = handle.tokenizer
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = encoded["input_ids"].shape[1]
    stop = AnswerStop(tokenizer, prompt_len) if decoding.early_stop else None
    with handle.activate() as model:
        device = handle.base.device
        encoded = {k: v.to(device) for k, v in encoded.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "num_return_sequences": num_return_sequences,
        }
        if stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
        if decoding.mode == "sample":
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
            torch.manual_seed(seed if seed is not None else decoding.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs)
    new = output[:, prompt_len:]
    decoded = []
    for index, row in enumerate(new):
        ids = row.tolist()
        reason = stop.reasons.get(index) if stop is not None else None
        if tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
            reason = reason or "eos"
        while ids and ids[-1] == tokenizer.pad_token_id:
            ids.pop()
        decoded.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), reason or "length"))
    return decoded
