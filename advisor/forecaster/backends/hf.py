"""The reference backend: transformers ``model.generate`` in batches.

Greedy decoding batches prompts together (left padding, sorted by length so little is padded).
Sampling draws K candidates per prompt with ``num_return_sequences``, seeded by the prompt's seed
(``sample_batch=1``), so a prompt's candidates are reproducible whatever else was generated in the
same run; ``sample_batch=n`` samples n prompts per call and seeds from the batch's prompt hashes,
which are recorded with each candidate so the batch can be replayed.

Early stop (on by default) is a stopping criterion that ends a row once
:func:`advisor.forecaster.views.answer_stop_reason` says its answer is complete or looping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advisor.forecaster.backends import PromptJob, RawGeneration
from advisor.forecaster.generation import Decoding, newline_token_ids, prompt_seed
from advisor.forecaster.grounding import compile_grounding, mask_logits
from advisor.forecaster.loading import ModelHandle
from advisor.forecaster.views import answer_stop_reason


class TransformersBackend:
    name = "transformers"
    grounds = True

    def generate(
        self, handle: ModelHandle, jobs: list[PromptJob], decoding: Decoding, on_done: Callable[[int], None]
    ) -> list[list[RawGeneration]]:
        tokenizer = handle.tokenizer
        lengths = [len(tokenizer(j.text, add_special_tokens=False)["input_ids"]) for j in jobs]
        results: list[list[RawGeneration]] = [[] for _ in jobs]
        if decoding.mode == "greedy":
            order = sorted(range(len(jobs)), key=lambda i: -lengths[i])
            for start in range(0, len(order), decoding.batch_size):
                batch = order[start : start + decoding.batch_size]
                outputs = _generate_batch(handle, [jobs[i] for i in batch], decoding, 1, seed=None)
                for i, (text, n_tokens, reason) in zip(batch, outputs, strict=True):
                    results[i] = [RawGeneration(text, n_tokens, reason, decoding.seed)]
                    on_done(i)
            return results
        order = sorted(range(len(jobs)), key=lambda i: (-lengths[i], jobs[i].hash))
        k = decoding.num_candidates
        for start in range(0, len(order), decoding.sample_batch):
            batch = order[start : start + decoding.sample_batch]
            hashes = tuple(jobs[i].hash for i in batch)
            seed = jobs[batch[0]].seed if len(batch) == 1 else prompt_seed(decoding.seed, "|".join(hashes))
            outputs = _generate_batch(handle, [jobs[i] for i in batch], decoding, k, seed=seed)
            for position, i in enumerate(batch):
                rows = outputs[position * k : (position + 1) * k]
                shared = hashes if len(hashes) > 1 else ()
                results[i] = [RawGeneration(t, n, reason, seed, shared) for t, n, reason in rows]
                on_done(i)
        return results


class AnswerStop:
    """A transformers stopping criterion: per sequence, stop when :func:`answer_stop_reason` says so.

    The answer so far is decoded only on steps whose new token contains a newline (the rules look at
    complete lines), so the check costs little next to a decoding step.
    """

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.newline_ids = newline_token_ids(tokenizer)
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


class GroundingProcessor:
    """A transformers logits processor applying each row's :class:`GroundedState` (the engine applies the same)."""

    def __init__(self, states: list[Any], prompt_length: int) -> None:
        self.states = states
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] > self.prompt_length:
            for state, token in zip(self.states, input_ids[:, -1].tolist(), strict=True):
                if state is not None:
                    state.advance(int(token))
        return mask_logits(scores, [s.allowed() if s is not None else None for s in self.states])


def _generate_batch(
    handle: ModelHandle, jobs: list[PromptJob], decoding: Decoding, num_return_sequences: int, seed: int | None
) -> list[tuple[str, int, str]]:
    """Generate for one batch; returns (text, new tokens, stop reason) per sequence."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList


    tokenizer = handle.tokenizer
    encoded = tokenizer([j.text for j in jobs], return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = encoded["input_ids"].shape[1]
    stop = AnswerStop(tokenizer, prompt_len) if decoding.early_stop else None
    requests = [compile_grounding(j.grounding, tokenizer) for j in jobs]
    states = [r.state() if r is not None else None for r in requests for _ in range(num_return_sequences)]
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
        if any(s is not None for s in states):
            kwargs["logits_processor"] = LogitsProcessorList([GroundingProcessor(states, prompt_len)])
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
