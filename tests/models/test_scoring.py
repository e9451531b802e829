"""Scoring computes what the plain computation computes, with less work, with and without gradient checkpointing.

The plain computation, written out here: the prompt repeated once per answer (or label), the whole
[prompt; answer] row through the model, logits at every position, a full-vocabulary log-softmax. Checked on tiny
real models (Qwen2 with grouped-query attention, Llama), left-padded prompts, values and gradients in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from shala_pl.models.loading import enable_gradient_checkpointing, load_tokenizer
from shala_pl.models.scoring import (
    label_log_probs,
    selective_log_softmax,
    shared_prompt_completion_log_probs,
    verbalizer_log_probs,
)
from shala_pl.models.shared_prefix import position_ids_from_mask

PROMPTS = ["Premise: a man plays a guitar. Hypothesis: a person makes music. Answer:",
           "Is it fine?", "Two dogs run across a snowy field while a child watches from the porch. Label:"]
VERBALIZERS = {"one_token": [[11], [12], [13]], "one_to_four_tokens": [[11], [12, 40, 41], [13, 50, 51, 52], [14, 60]],
               "shared_first_tokens": [[12, 40], [12, 41, 42], [13]]}


def tiny(model_dir, architecture: str, checkpointing=False, lora: bool = False, attention: str = "sdpa"):
    """``checkpointing``: False, True (the model option: transformers' checkpointing) or "wrapper" (torch's
    ``checkpoint_wrapper`` around each decoder layer, what the FSDP strategy's activation-checkpointing policy
    applies)."""
    config = AutoConfig.from_pretrained(model_dir)
    if architecture == "llama":
        config = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")})
    else:
        config.num_key_value_heads = 2  # grouped-query attention
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    if checkpointing == "wrapper":
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        layer_class = type(model.model.layers[0])
        apply_activation_checkpointing(model, check_fn=lambda module: isinstance(module, layer_class))
    elif checkpointing:
        enable_gradient_checkpointing(model)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    return model.train()


@pytest.fixture(scope="module")
def prompts(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert (encoded["attention_mask"] == 0).any()  # left padding is part of what is checked
    return encoded["input_ids"], encoded["attention_mask"]


def plain_token_log_probs(model, prompt_ids, prompt_mask, answers, answer_mask, temperature=1.0):
    ids, mask = torch.cat([prompt_ids, answers], 1), torch.cat([prompt_mask, answer_mask], 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    logits = logits[:, prompt_ids.shape[1] - 1 : -1] / temperature
    return F.log_softmax(logits, -1).gather(2, answers.unsqueeze(-1)).squeeze(-1)


def plain_verbalizer_log_probs(model, prompt_ids, prompt_mask, verbalizer_ids):
    batch, labels, longest = prompt_ids.shape[0], len(verbalizer_ids), max(map(len, verbalizer_ids))
    verb = torch.tensor([t + [0] * (longest - len(t)) for t in verbalizer_ids]).repeat(batch, 1)
    verb_mask = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for t in verbalizer_ids]).repeat(batch, 1)
    logp = plain_token_log_probs(model, prompt_ids.repeat_interleave(labels, 0),
                                 prompt_mask.repeat_interleave(labels, 0), verb, verb_mask)
    return (logp * verb_mask).sum(-1).view(batch, labels)


def values_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    value = fn(model)
    torch.manual_seed(1)
    (value * torch.randn_like(value)).sum().backward()  # a loss that weighs every entry differently
    wrapper = "._checkpoint_wrapped_module"  # the name torch's checkpoint_wrapper adds to the layers' parameters
    return value.detach(), {n.replace(wrapper, ""): p.grad.clone() for n, p in model.named_parameters()
                            if p.grad is not None}


def assert_same(a, b, atol=1e-5):
    (value_a, grads_a), (value_b, grads_b) = a, b
    torch.testing.assert_close(value_a, value_b, atol=atol, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=1e-3, msg=name)


def test_selective_log_softmax_equals_the_full_one():
    torch.manual_seed(0)
    logits = torch.randn(40, 3, 50, dtype=torch.bfloat16)  # more rows than one chunk
    index = torch.randint(0, 50, (40, 3, 2))
    full = F.log_softmax(logits.float() / 0.7, -1).gather(-1, index)
    torch.testing.assert_close(selective_log_softmax(logits, index, temperature=0.7), full)


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
@pytest.mark.parametrize("words", sorted(VERBALIZERS))
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # the one-pass mask as a boolean and as an additive mask
def test_labels_scored_on_the_shared_prompt_equal_the_plain_scores(tiny_model_dir, prompts, architecture, words,
                                                                   checkpointing, attention):
    """Multi-token words are scored in one pass over the prompt and the words' tokens (each word sees the prompt and
    its own earlier tokens): the same values and gradients as the prompt repeated once per word."""
    verbalizer_ids = VERBALIZERS[words]
    plain = values_and_grads(tiny(tiny_model_dir, architecture),
                             lambda m: plain_verbalizer_log_probs(m, *prompts, verbalizer_ids))
    ours = values_and_grads(tiny(tiny_model_dir, architecture, checkpointing, attention=attention),
                            lambda m: verbalizer_log_probs(m, *prompts, verbalizer_ids))
    assert_same(ours, plain)
    normalised = label_log_probs(tiny(tiny_model_dir, architecture), *prompts, verbalizer_ids)
    torch.testing.assert_close(normalised, plain[0].log_softmax(-1), atol=1e-5, rtol=1e-4)


def answers_for(prompt_ids, group: int, length: int, eos: int):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 200, (prompt_ids.shape[0] * group, length), generator=generator)
    mask = torch.ones_like(ids)
    ids[0, 2], mask[0, 3:] = eos, 0  # one answer ends early
    return ids, mask


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("path", ["generate", "label", "sft"])
@pytest.mark.parametrize("checkpointing", [True, "wrapper"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, prompts, architecture, lora, path,
                                                         checkpointing):
    """Each scoring path with checkpointing on equals itself with it off (LoRA and full fine-tuning), with the
    model option and with the FSDP policy's wrapper."""
    if checkpointing == "wrapper" and lora:
        pytest.skip("the wrapper goes around the base model's layers; LoRA is covered by the model option")
    answers, answer_mask = answers_for(prompts[0], group=3, length=6, eos=1)
    verbalizer_ids = VERBALIZERS["one_to_four_tokens"]
    if path == "generate":
        def score(m):
            return shared_prompt_completion_log_probs(m, *prompts, answers, answer_mask, temperature=0.8) * answer_mask
    elif path == "label":  # GRPO label mode: log pi(k|x) of sampled labels
        def score(m):
            return label_log_probs(m, *prompts, verbalizer_ids).gather(1, torch.tensor([[0, 2], [1, 1], [3, 0]]))
    else:  # SFT: the soft-label loss's per-label terms
        def score(m):
            return verbalizer_log_probs(m, *prompts, verbalizer_ids)
    plain = values_and_grads(tiny(tiny_model_dir, architecture, lora=lora), score)
    model = tiny(tiny_model_dir, architecture, checkpointing=checkpointing, lora=lora)
    mlp = next(m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")).mlp
    calls = []
    mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    checkpointed = values_and_grads(model, score)
    assert_same(checkpointed, plain)
    # generate: the prompts' pass and the answers' pass; labels: one pass over the prompts and the words' tokens;
    # each run again in the backward pass
    assert len(calls) == (4 if path == "generate" else 2)
