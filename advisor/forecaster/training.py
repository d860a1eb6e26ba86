"""Training plumbing shared by the fine-tuning entry points: devices, precision, faster SFT losses.

:class:`CompletionLogitsSFTTrainer` is TRL's ``SFTTrainer`` with the loss computed where it matters:

* the language-model head and the log-softmax run only at the positions whose next token is in the
  loss (the answer), through transformers' ``logits_to_keep``: the 49k-word softmax over every prompt
  position was the largest single cost of a step on CPU; the loss is identical (tested);
* with ``detach_prompt`` (an option; off by default), each example's prompt (~350 tokens, three quarters
  of it) runs once without gradient and only the answer (~110 tokens) runs with it, attending to the
  prompt's cached keys and values. The loss value is exactly the same; the gradient leaves out the
  path through the prompt's keys and values (the adapter still acts on the prompt in the forward
  pass, and its projections are trained through the answer tokens). That path is most of a step's
  backward cost. Measured in ``bench/bench_sft.py`` (30 steps of 4, bf16 CPU): 1.43x faster steps,
  but held-out answer loss 0.367 against 0.316 with the exact gradient, so it is not the default.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from advisor.forecaster.loading import cpu_has_native_bf16

# transformers' own Trainer reads its deprecated ``gradient_checkpointing`` names internally and warns on every
# training run, whatever the caller passes; the warnings say nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)


@dataclass(frozen=True)
class Precision:
    """Mixed precision for training: bf16 autocast where the hardware has native bf16 units."""

    use_cpu: bool
    bf16: bool

    @classmethod
    def auto(cls) -> Precision:
        if torch.cuda.is_available():
            return cls(use_cpu=False, bf16=torch.cuda.is_bf16_supported())
        return cls(use_cpu=True, bf16=cpu_has_native_bf16())


FLOAT32_SDPA = "sdpa_float32"


def training_attention() -> str:
    """The attention implementation to load a model for training with.

    On a CPU under bf16 autocast the query, key and value reach PyTorch's CPU flash-attention kernel in
    bfloat16, where it was a third of a training step here (1.57 s backward + 0.74 s forward of a 6.4 s
    step, 4 x 490 tokens). The same kernel in float32 is faster on this CPU (one step 6.4 -> 6.0 s)
    and more precise, so attention runs in float32 and its output is cast back; everything else stays
    under autocast. On a GPU, or without bf16, transformers' own ``sdpa``.
    """
    if torch.cuda.is_available() or not Precision.auto().bf16:
        return "sdpa"
    register_float32_sdpa()
    return FLOAT32_SDPA


def register_float32_sdpa() -> None:
    """Register the float32 attention under :data:`FLOAT32_SDPA`, with the masks transformers builds for ``sdpa``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if FLOAT32_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(FLOAT32_SDPA, _sdpa_in_float32)
    if FLOAT32_SDPA not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        ALL_MASK_ATTENTION_FUNCTIONS.register(FLOAT32_SDPA, sdpa_mask)


def _sdpa_in_float32(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    dtype = query.dtype
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(dtype), weights


def completion_loss(model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean next-token loss over labelled positions, computing logits only where needed.

    Returns (loss, number of correct next-token predictions, number of labelled tokens).
    """
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.nonzero((targets != -100).any(dim=0)).flatten()
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.float()
    kept_targets = targets[:, keep]
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept_targets.reshape(-1), ignore_index=-100, reduction="sum")
    mask = kept_targets != -100
    count = int(mask.sum())
    denominator = num_items_in_batch if num_items_in_batch is not None else count
    loss = loss_sum / torch.as_tensor(denominator, dtype=loss_sum.dtype, device=loss_sum.device).clamp(min=1)
    with torch.no_grad():
        correct = (logits.argmax(-1)[mask] == kept_targets[mask]).sum()
    return loss, correct, count


def detached_prompt_loss(model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`completion_loss` with each prompt run once without gradient (see module docstring).

    Rows are run one at a time without padding: the prompt (all tokens before the one whose next
    token is the first answer token) under ``no_grad`` into a KV cache, then the rest with gradient.
    """
    input_ids, labels = inputs["input_ids"], inputs["labels"]
    attention = inputs.get("attention_mask")
    loss_sum = torch.zeros((), device=input_ids.device)
    correct = torch.zeros((), dtype=torch.long, device=input_ids.device)
    count = 0
    for row in range(input_ids.shape[0]):
        keep = attention[row].bool() if attention is not None else torch.ones_like(input_ids[row], dtype=torch.bool)
        ids, targets = input_ids[row][keep], labels[row][keep][1:]
        answer = torch.nonzero(targets != -100).flatten()
        if answer.numel() == 0:
            continue
        first = int(answer[0])
        cache = None
        if first > 0:
            with torch.no_grad():
                cache = model(input_ids=ids[None, :first], use_cache=True).cache
        logits = model(input_ids=ids[None, first:-1], cache=cache, use_cache=cache is not None).logits[0].float()
        row_targets = targets[first:]
        loss_sum = loss_sum + F.cross_entropy(logits, row_targets, ignore_index=-100, reduction="sum")
        mask = row_targets != -100
        count += int(mask.sum())
        with torch.no_grad():
            correct = correct + (logits.argmax(-1)[mask] == row_targets[mask]).sum()
    denominator = num_items_in_batch if num_items_in_batch is not None else count
    loss = loss_sum / torch.as_tensor(denominator, dtype=loss_sum.dtype, device=loss_sum.device).clamp(min=1)
    return loss, correct, count


class CompletionLogitsSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss computes logits only on the answer, optionally with the prompt detached."""

    def __init__(self, *args: Any, detach_prompt: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detach_prompt = detach_prompt

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        loss_fn = detached_prompt_loss if self.detach_prompt and model.training else completion_loss
        loss, correct, count = loss_fn(model, inputs, num_items_in_batch)
        mode = "train" if model.training else "eval"
        if count:
            self._metrics[mode]["mean_token_accuracy"].append(float(correct) / count)
        return (loss, None) if return_outputs else loss
