"""Group rollouts that run each prompt once compute exactly what repeating the prompt G times computes.

Checked on tiny real models (Qwen2 with grouped-query attention, Llama) against the plain implementations:
``completion_log_probs`` on prompts repeated G times (values and gradients) and ``transformers``' ``generate``
(greedy tokens). A model the shared-prefix attention cannot serve (sliding-window layers) takes the fallback path
and still matches ``generate``.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from shala_pl.models.loading import load_tokenizer
from shala_pl.models.scoring import completion_log_probs, shared_prompt_completion_log_probs
from shala_pl.models.shared_prefix import supports_shared_prefix
from shala_pl.rl.rollout import _next_tokens, sample_completions

PROMPTS = ["Premise: a man plays a guitar. Hypothesis: a person makes music. Answer:",
           "Is it fine?", "Two dogs run across a snowy field while a child watches from the porch. Label:"]
GROUP = 3


def tiny(tiny_model_dir, architecture: str, **overrides):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    if architecture == "llama":
        from transformers import LlamaConfig

        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")})
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    return model


@pytest.fixture
def batch(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert (encoded["attention_mask"] == 0).any()  # left padding is part of what is checked
    return tokenizer, encoded["input_ids"], encoded["attention_mask"]


def random_answers(tokenizer, rows: int, length: int, seed: int = 1):
    """Answers [rows, length]; some end early with EOS followed by padding, as rollouts do."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(tokenizer), (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for row, end in [(0, 2), (4, 5)]:
        ids[row, end] = tokenizer.eos_token_id
        ids[row, end + 1:] = tokenizer.pad_token_id
        mask[row, end + 1:] = 0
    return ids, mask


@pytest.mark.parametrize("architecture,kv_heads", [("qwen2", 2), ("llama", 4)])
def test_shared_prompt_scoring_equals_repeated_prompt_scoring(tiny_model_dir, batch, architecture, kv_heads):
    tokenizer, prompt_ids, prompt_mask = batch
    model = tiny(tiny_model_dir, architecture, num_key_value_heads=kv_heads)
    answers, answer_mask = random_answers(tokenizer, len(PROMPTS) * GROUP, 7)

    def scored(fn, *prompt_args):
        model.zero_grad(set_to_none=True)
        logp = fn(model, *prompt_args, answers, answer_mask, temperature=0.7)
        (logp * answer_mask).sum().backward()
        return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    repeated, repeated_grads = scored(completion_log_probs, prompt_ids.repeat_interleave(GROUP, 0),
                                      prompt_mask.repeat_interleave(GROUP, 0))
    shared, shared_grads = scored(shared_prompt_completion_log_probs, prompt_ids, prompt_mask)
    keep = answer_mask.bool()  # tokens after an answer's EOS are not scored
    torch.testing.assert_close(shared[keep], repeated[keep], atol=2e-5, rtol=1e-4)
    for name, grad in repeated_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=2e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("architecture,overrides,shared", [
    ("qwen2", {"num_key_value_heads": 2}, True),
    ("llama", {}, True),
    # sliding-window layers: the shared-prefix attention declines, the prompt cache is repeated instead
    ("qwen2", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 0,
               "layer_types": ["sliding_attention", "sliding_attention"]}, False),
])
def test_greedy_sampling_equals_generate(tiny_model_dir, batch, architecture, overrides, shared):
    tokenizer, prompt_ids, prompt_mask = batch
    model = tiny(tiny_model_dir, architecture, **overrides)
    assert supports_shared_prefix(model) is shared
    ours = sample_completions(model, prompt_ids, prompt_mask, GROUP, 12, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, do_sample=False)
    with torch.no_grad():
        # greedy generate refuses num_return_sequences > 1: give it the prompts repeated, as it would repeat them
        reference = model.generate(input_ids=prompt_ids.repeat_interleave(GROUP, 0),
                                   attention_mask=prompt_mask.repeat_interleave(GROUP, 0), do_sample=False,
                                   max_new_tokens=12, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
    torch.testing.assert_close(ours, reference[:, prompt_ids.shape[1]:], rtol=0, atol=0)


def test_min_new_tokens_gives_fixed_length_answers_and_eos_pads_the_rest(tiny_model_dir, batch):
    tokenizer, prompt_ids, prompt_mask = batch
    model = tiny(tiny_model_dir, "qwen2")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    fixed = sample_completions(model, prompt_ids, prompt_mask, GROUP, 6, eos_token_id=eos, pad_token_id=pad,
                               min_new_tokens=6)
    assert fixed.shape == (len(PROMPTS) * GROUP, 6) and not (fixed == eos).any()

    # make EOS the likeliest token: answers end at once and the rest is padding; sampling stops early
    def favour_eos(module, inputs, logits):
        logits[..., eos] += 100.0
        return logits

    model.lm_head.register_forward_hook(favour_eos)
    early = sample_completions(model, prompt_ids, prompt_mask, GROUP, 6, eos_token_id=eos, pad_token_id=pad,
                               do_sample=False)
    assert early.shape[1] == 1 and (early[:, 0] == eos).all()
    blocked = sample_completions(model, prompt_ids, prompt_mask, GROUP, 6, eos_token_id=eos, pad_token_id=pad,
                                 do_sample=False, min_new_tokens=2)
    assert not (blocked[:, :2] == eos).any() and (blocked[:, 2] == eos).all() and blocked.shape[1] == 3


def test_top_p_keeps_only_the_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log().repeat(4000, 1)
    torch.manual_seed(0)
    drawn = _next_tokens(logits, temperature=1.0, top_p=0.7, do_sample=True)
    assert set(drawn.tolist()) == {1, 3}  # 0.5 + 0.3 >= 0.7: the two likeliest tokens only
    share = (drawn == 1).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.03  # renormalised within the nucleus
    assert (_next_tokens(logits[:2], 1.0, 1.0, do_sample=False) == 1).all()


def test_inverse_cdf_sampling_draws_each_token_at_its_probability():
    from shala_pl.rl.rollout import sample_categorical

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3], [1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.manual_seed(0)
    drawn = torch.stack([sample_categorical(probs) for _ in range(20000)])  # [draws, 2]
    shares = torch.bincount(drawn[:, 0], minlength=5).float() / len(drawn)
    torch.testing.assert_close(shares, probs[0], atol=0.012, rtol=0)  # ~3.5 standard errors at 20000 draws
    assert shares[0] == 0 and shares[2] == 0 and (drawn[:, 1] == 0).all()  # probability 0: never drawn
