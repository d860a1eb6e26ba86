"""The shared-prompt pair forward equals the full forward: values and LoRA gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf.shared_prompt import install_shared_prompt_head, pair_rewards, shared_prefix_length


def _pairs(tokenizer, n_pairs: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[chosen..., rejected...] right-padded, each pair with its own prompt, and DPO-style labels."""
    torch.manual_seed(0)
    rows, completion = [], []
    prompts = [torch.randint(10, 4000, (24 + 7 * i,)).tolist() for i in range(n_pairs)]
    chosen = [torch.randint(10, 4000, (5 + i,)).tolist() for i in range(n_pairs)]
    rejected = [torch.randint(10, 4000, (9 - i,)).tolist() for i in range(n_pairs)]
    for answers in (chosen, rejected):
        for prompt, answer in zip(prompts, answers, strict=True):
            rows.append(prompt + answer)
            completion.append([0] * len(prompt) + [1] * len(answer))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    comp = torch.tensor([c + [0] * (width - len(c)) for c in completion])
    return ids, mask, ids.masked_fill(comp == 0, -100)


def _lora_causal_lm(path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    return peft_model


def _lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_prefix_length_is_what_both_rows_of_every_pair_share(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    ids, mask, labels = _pairs(AutoTokenizer.from_pretrained(tiny_model_dir))
    assert shared_prefix_length(ids, mask) == 24  # the shortest prompt
    assert shared_prefix_length(ids, mask, limit=10) == 10
    assert shared_prefix_length(ids[:3], mask[:3]) == 0  # odd batch: not pairs


def test_dpo_head_matches_the_full_forward_and_its_gradients(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    ids, mask, labels = _pairs(AutoTokenizer.from_pretrained(tiny_model_dir))
    reference = _lora_causal_lm(tiny_model_dir)
    expected = reference(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    (expected.log_probs.sum(dim=1) * torch.arange(1.0, 7.0)).sum().backward()

    shared = _lora_causal_lm(tiny_model_dir)
    install_shared_prompt_head(shared.get_base_model())
    got = shared(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    (got.log_probs.sum(dim=1) * torch.arange(1.0, 7.0)).sum().backward()

    torch.testing.assert_close(got.log_probs, expected.log_probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.entropy, expected.entropy, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.is_top1, expected.is_top1)
    expected_grads, got_grads = _lora_grads(reference), _lora_grads(shared)
    assert expected_grads.keys() == got_grads.keys() and expected_grads
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], atol=1e-5, rtol=1e-3, msg=name)


def test_reward_scores_match_the_sequence_classifier(tiny_model_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, mask, _ = _pairs(tokenizer)
    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS", init_lora_weights=False))
    expected = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    expected.sum().backward()
    expected_grads = _lora_grads(model)
    model.zero_grad()
    got = pair_rewards(model, ids, mask, tokenizer.pad_token_id)
    got.sum().backward()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    for name, grad in _lora_grads(model).items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("n_pairs", [1, 2])
def test_unshared_batches_take_the_plain_path(tiny_model_dir, n_pairs) -> None:
    from transformers import AutoTokenizer

    ids, mask, labels = _pairs(AutoTokenizer.from_pretrained(tiny_model_dir), n_pairs)
    ids[n_pairs:, :3] = 7  # rejected rows no longer share the start of their prompt
    reference = _lora_causal_lm(tiny_model_dir)
    expected = reference(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs
    shared = _lora_causal_lm(tiny_model_dir)
    install_shared_prompt_head(shared.get_base_model())
    got = shared(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_pair_margins_equal_full_log_likelihood_differences(tiny_model_dir, tmp_path) -> None:
    """The evaluation's shared-prefix margin is log p(chosen) - log p(rejected) from two full passes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from advisor.forecaster.loading import ModelSpec, load_model
    from rlhf.evaluate import completion_logprob, pair_logprob_margins

    torch.manual_seed(2)
    adapter = tmp_path / "adapter"
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(adapter)
    handle = load_model(ModelSpec(base=str(tiny_model_dir), adapter=adapter, dtype="float32"), tmp_path / "models")
    prompt = [{"role": "user", "content": "AAPL moved +1.2% last week. Predict next week."}]
    rows = [
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "Positive developments:\n1. up\n\nPrediction: Up by 1-2%"}],
         "rejected": [{"role": "assistant", "content": "Positive developments:\n1. up\n\nPrediction: Down by 2-3%"}]},
        {"prompt": "plain text prompt\n", "chosen": [{"role": "assistant", "content": "short"}],
         "rejected": [{"role": "assistant", "content": "a much longer answer than the other one"}]},
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "same"}], "rejected": [{"role": "assistant", "content": "same"}]},
    ]
    margins = pair_logprob_margins(handle, rows)
    for row, margin in zip(rows, margins, strict=True):
        full = completion_logprob(handle, row["prompt"], row["chosen"][0]["content"]) - completion_logprob(handle, row["prompt"], row["rejected"][0]["content"])
        assert margin == pytest.approx(full, abs=1e-3)
    assert margins[2] == 0.0
