"""Log-probabilities from a causal LM over left-padded prompts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions that skip left padding, as ``generate`` computes them, so scoring matches sampling."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


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
