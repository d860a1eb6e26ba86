"""Preference training that runs each pair's shared prompt once: exact gradients, fewer FLOPs.

A preference batch is ``[chosen_1 .. chosen_B, rejected_1 .. rejected_B]``, right-padded, and pair i's
two rows start with the same prompt (~350 tokens here, against ~100 of view). TRL runs all 2B rows
in full, so every prompt is computed — forward and backward — twice. Here the backbone runs the
common prefix once for the B chosen rows, the cache is tiled to 2B rows (``torch.cat``, so gradient
from both halves flows back into the one prefix), and only the rest of each row runs per row. The
result equals the full forward up to float rounding (tested), gradients included.

On top of that, TRL's fused log-prob head scores *every* position on a CPU (its compact path is for
Triton devices); the DPO head here projects only the completion positions through the 49k-word head.

* :class:`SharedPromptDPOTrainer` — TRL's ``DPOTrainer`` with the model's fused-head forward
  replaced (training steps and the precomputed reference log-probs both go through it);
* :class:`SharedPromptRewardTrainer` — TRL's ``RewardTrainer`` with the pair forward and the score
  read at the last non-padding token, as transformers' sequence classifier reads it.

A batch whose halves do not share a prefix (or share too little) takes the plain path.
"""

from __future__ import annotations

import types
from typing import Any, cast

import torch
import torch.nn.functional as F
from trl import DPOTrainer, RewardTrainer
from trl.trainer.utils import FusedCausalLMOutput

MIN_SHARED_PREFIX = 16


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, limit: torch.Tensor | int | None = None) -> int:
    """Tokens at the start that pair i's chosen and rejected rows share, for every pair, all real tokens."""
    half = input_ids.shape[0] // 2
    if input_ids.shape[0] != 2 * half or half == 0:
        return 0
    same = (input_ids[:half] == input_ids[half:]) & attention_mask[:half].bool() & attention_mask[half:].bool()
    # length of the all-True run at the start of each pair
    run = torch.cumprod(same.long(), dim=1).sum(dim=1)
    n = int(run.min())
    if limit is not None:
        n = min(n, int(limit))
    return n


def paired_hidden_states(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, split: int) -> torch.Tensor:
    """The backbone's last hidden states for positions ``[split, T)`` of every row, the first ``split``
    positions computed once per pair."""
    half = input_ids.shape[0] // 2
    prefix = backbone(input_ids=input_ids[:half, :split], attention_mask=attention_mask[:half, :split], use_cache=True)
    cache = prefix.past_key_values
    for layer in cache.layers:
        layer.keys = torch.cat([layer.keys, layer.keys], dim=0)
        layer.values = torch.cat([layer.values, layer.values], dim=0)
    length = input_ids.shape[1]
    positions = torch.arange(split, length, device=input_ids.device).unsqueeze(0).expand(input_ids.shape[0], -1)
    rest = backbone(input_ids=input_ids[:, split:], attention_mask=attention_mask, position_ids=positions, cache=cache, use_cache=True)
    return rest.last_hidden_state


def _completion_head(lm: Any, hidden: torch.Tensor, labels: torch.Tensor) -> FusedCausalLMOutput:
    """Per-token log-probs (and TRL's metrics) of ``labels`` given ``hidden`` at the positions before them.

    ``hidden`` [n, L, H] holds positions ``[T - L, T)``; ``labels`` [n, T] is -100 outside completions.
    """
    shifted = labels[:, 1:]
    mask = shifted != -100
    offset = shifted.shape[1] - (hidden.shape[1] - 1)  # leading positions not in ``hidden``
    if bool(mask[:, :offset].any()):
        raise ValueError("a labelled position lies in the shared prefix")
    local_mask = mask[:, offset:]
    states = hidden[:, :-1][local_mask]
    targets = shifted[:, offset:][local_mask]
    logits = lm.get_output_embeddings()(states).float()
    log_softmax = F.log_softmax(logits, dim=-1)
    token_logps = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
        mean_logits = logits.mean(-1)
        is_top1 = logits.argmax(-1) == targets

    def spread(values: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        out = torch.zeros(mask.shape, dtype=dtype or values.dtype, device=values.device)
        return out.masked_scatter(mask, values.to(out.dtype))

    log_probs = spread(token_logps)
    loss = -log_probs.sum() / mask.sum().clamp(min=1)
    return FusedCausalLMOutput(
        loss=loss, log_probs=log_probs, entropy=spread(entropy), mean_logits=spread(mean_logits),
        is_top1=spread(is_top1, torch.bool), label_mask=mask, aux_loss=None,
    )


def install_shared_prompt_head(lm: Any) -> None:
    """Replace ``lm``'s fused log-prob forward (the one TRL's ``add_fused_lm_head`` installed)."""
    fused_forward = lm.forward

    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or args or kwargs.get("output_router_logits") or "input_ids" not in kwargs:
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        input_ids, attention_mask = kwargs["input_ids"], kwargs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        backbone = getattr(self, self.base_model_prefix)
        labelled = (labels[:, 1:] != -100).long()
        first_label = int(torch.where(labelled.any(dim=1), labelled.argmax(dim=1), labelled.shape[1]).min())
        split = shared_prefix_length(input_ids, attention_mask, limit=first_label)
        if split >= MIN_SHARED_PREFIX:
            hidden = paired_hidden_states(backbone, input_ids, attention_mask, split)
        else:
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return _completion_head(self, hidden, labels)

    lm.forward = types.MethodType(forward, lm)


class SharedPromptDPOTrainer(DPOTrainer):
    """DPO whose pairs run their prompt once (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._install()

    def _install(self) -> None:
        model: Any = self.model
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not getattr(lm, "_shared_prompt_head", False):
            install_shared_prompt_head(lm)
            lm._shared_prompt_head = True

    def _precompute_ref_logps(self, *args: Any, **kwargs: Any) -> Any:
        # runs inside DPOTrainer.__init__, after TRL installed its fused head: install ours first
        self._install()
        return super()._precompute_ref_logps(*args, **kwargs)


def pair_rewards(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """A sequence classifier's score per row, reading the last non-padding token, the prefix run once per pair."""
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(classifier, classifier.base_model_prefix)
    # transformers' rule: the rightmost token that is not the pad token
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = (positions * (input_ids != pad_token_id)).argmax(dim=-1)
    split = shared_prefix_length(input_ids, attention_mask, limit=int(last.min()))
    if split >= MIN_SHARED_PREFIX:
        hidden = paired_hidden_states(backbone, input_ids, attention_mask, split)
        offset = split
    else:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        offset = 0
    pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last - offset]
    return classifier.score(pooled).squeeze(-1)


class SharedPromptRewardTrainer(RewardTrainer):
    """TRL's reward trainer with each pair's prompt run once; loss and metrics as TRL computes them."""

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        mode = "train" if model.training else "eval"
        pad = cast(Any, self.processing_class).pad_token_id
        args: Any = self.args
        rewards = pair_rewards(model, inputs["input_ids"], inputs["attention_mask"], pad)
        rewards_chosen, rewards_rejected = torch.chunk(rewards, chunks=2)
        margin = inputs.get("margin")
        difference = rewards_chosen - rewards_rejected - (margin if margin is not None else 0.0)
        loss = -F.logsigmoid(difference).mean()
        if args.center_rewards_coefficient is not None:
            loss += args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            every = self.accelerator.gather(rewards)
            self._metrics[mode]["min_reward"].append(every.min().item())
            self._metrics[mode]["mean_reward"].append(every.mean().item())
            self._metrics[mode]["max_reward"].append(every.max().item())
            accuracy = (rewards_chosen > rewards_rejected).float().mean()
            self._metrics[mode]["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
            mean_margin = (rewards_chosen - rewards_rejected).mean()
            self._metrics[mode]["margin"].append(self.accelerator.gather_for_metrics(mean_margin).mean().item())
        if return_outputs:
            return loss, {"logits": rewards.unsqueeze(-1)}
        return loss
