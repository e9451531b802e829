"""Log-probabilities from a causal LM over left-padded prompts."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from shala_pl.models.shared_prefix import (
    position_ids_from_mask,
    prefill_prompts,
    shared_prefix_attention_for,
    shared_prefix_cache,
    supports_shared_prefix,
)

__all__ = ["completion_log_probs", "shared_prompt_completion_log_probs", "label_log_probs", "verbalizer_log_probs",
           "position_ids_from_mask"]


def completion_log_probs(
    model,
    prompt_ids: Tensor,  # [N, L] left-padded
    prompt_mask: Tensor,  # [N, L]
    completion_ids: Tensor,  # [N, T]
    completion_mask: Tensor,  # [N, T]
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs of the completions [N, T] (the sampling temperature applied, as in rollouts)."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    prompt_len = prompt_ids.shape[1]
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)


def shared_prompt_completion_log_probs(
    model,
    prompt_ids: Tensor,  # [B, L] left-padded, each prompt once
    prompt_mask: Tensor,  # [B, L]
    completion_ids: Tensor,  # [B * G, T] grouped by prompt: rows b*G .. b*G+G-1 answer prompt b
    completion_mask: Tensor,  # [B * G, T]
    temperature: float = 1.0,
) -> Tensor:
    """``completion_log_probs`` of G answers per prompt, with each prompt run through the model once.

    The B prompts go through the model once (only the last position's logits are computed), then the answers go
    through it on top of the prompts' keys and values, which are held once per prompt (``shared_prefix``; models it
    does not support get them repeated G times, a differentiable copy). Gradients of the G answers add up on their
    shared prompt. The values of the tokens up to each answer's first EOS equal ``completion_log_probs`` on the
    prompts repeated G times, up to floating-point rounding, for (G - 1) / G less prompt work in the forward and the
    backward pass.
    """
    batch, prompt_len = prompt_ids.shape
    rows, length = completion_ids.shape
    if rows % batch:
        raise ValueError(f"{rows} completions do not split into groups over {batch} prompts")
    group = rows // batch
    first_logits, cache = prefill_prompts(model, prompt_ids, prompt_mask)  # [B, V]
    logits = first_logits.unsqueeze(1).repeat_interleave(group, dim=0)  # [N, 1, V]: predicts answer token 0
    if length > 1:
        mask = torch.cat([prompt_mask.repeat_interleave(group, dim=0), completion_mask], dim=1)
        positions = position_ids_from_mask(mask)[:, prompt_len : prompt_len + length - 1]
        if supports_shared_prefix(model, cache):
            cache, attention = shared_prefix_cache(cache, prompt_mask, group), shared_prefix_attention_for(model)
        else:
            cache.batch_repeat_interleave(group)
            attention = nullcontext()
        with attention:
            rest = model(input_ids=completion_ids[:, :-1], attention_mask=mask[:, : prompt_len + length - 1],
                         position_ids=positions, past_key_values=cache, use_cache=True).logits  # [N, T-1, V]
        logits = torch.cat([logits, rest], dim=1)
    logits = logits.float() / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)


def label_log_probs(model, prompt_ids: Tensor, prompt_mask: Tensor, verbalizer_ids: list[list[int]]) -> Tensor:
    """log pi(k | x) over the K labels [B, K]: each verbalizer's summed token log-probs, normalised over labels."""
    return F.log_softmax(verbalizer_log_probs(model, prompt_ids, prompt_mask, verbalizer_ids), dim=-1)


def verbalizer_log_probs(
    model,
    prompt_ids: Tensor,  # [B, L] left-padded
    prompt_mask: Tensor,  # [B, L]
    verbalizer_ids: list[list[int]],  # token ids of each label's verbalizer (K lists)
) -> Tensor:
    """log P(verbalizer_k | x) under the full vocabulary, [B, K] (sum over a verbalizer's tokens)."""
    if all(len(tokens) == 1 for tokens in verbalizer_ids):
        # One forward pass: the next-token distribution after the prompt already scores every label.
        logits = model(
            input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask)
        ).logits[:, -1].float()
        first_tokens = torch.tensor([t[0] for t in verbalizer_ids], device=prompt_ids.device)
        return F.log_softmax(logits, dim=-1)[:, first_tokens]
    return _multi_token_scores(model, prompt_ids, prompt_mask, verbalizer_ids)


def _multi_token_scores(model, prompt_ids: Tensor, prompt_mask: Tensor, verbalizer_ids: list[list[int]]) -> Tensor:
    batch, num_labels = prompt_ids.shape[0], len(verbalizer_ids)
    longest = max(len(t) for t in verbalizer_ids)
    device = prompt_ids.device
    verb = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    verb_mask = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    for k, tokens in enumerate(verbalizer_ids):
        verb[k, : len(tokens)] = torch.tensor(tokens, device=device)
        verb_mask[k, : len(tokens)] = 1
    token_logp = completion_log_probs(
        model,
        prompt_ids.repeat_interleave(num_labels, dim=0),
        prompt_mask.repeat_interleave(num_labels, dim=0),
        verb.repeat(batch, 1),
        verb_mask.repeat(batch, 1),
    )  # [B*K, longest]
    return (token_logp * verb_mask.repeat(batch, 1)).sum(-1).view(batch, num_labels)
