"""Log-probabilities from a causal LM over left-padded prompts, with logits only where they are scored.

Every path asks the model for the logits of the positions it scores (``logits_to_keep``, or a pass over the answer
tokens alone on top of the prompts' cache) and turns them into log-probs of the chosen tokens with a selective
log-softmax: the chosen token's logit minus the log-sum-exp over the vocabulary, in float32 rows of at most
``ROW_CHUNK`` at a time, so no [rows, positions, vocab] float32 copy is made for the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from shala_pl.models.shared_prefix import (
    position_ids_from_mask,
    prefill_prompts,
    shared_prefix_cache,
    supports_shared_prefix,
)

__all__ = ["completion_log_probs", "shared_prompt_completion_log_probs", "label_log_probs", "verbalizer_log_probs",
           "selective_log_softmax", "position_ids_from_mask"]

ROW_CHUNK = 16  # rows of logits converted to float32 at a time


def selective_log_softmax(logits: Tensor, index: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature, -1).gather(-1, index)`` without the full log-softmax.

    ``logits`` [..., V], ``index`` [..., C] (C chosen tokens per distribution) -> [..., C], in float32, computed
    ``ROW_CHUNK`` rows of the first dimension at a time.
    """
    out = []
    for rows, chosen in zip(logits.split(ROW_CHUNK), index.split(ROW_CHUNK)):
        rows = rows.float()
        if temperature != 1.0:
            rows = rows / temperature
        out.append(rows.gather(-1, chosen) - torch.logsumexp(rows, dim=-1, keepdim=True))
    return torch.cat(out)


def completion_log_probs(
    model,
    prompt_ids: Tensor,  # [N, L] left-padded
    prompt_mask: Tensor,  # [N, L]
    completion_ids: Tensor,  # [N, T]
    completion_mask: Tensor,  # [N, T]
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs of the completions [N, T] on whole [prompt; completion] rows (no cache).

    The reference implementation, and the path for models ``supports_shared_prefix`` rejects.
    """
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    length = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                   use_cache=False, logits_to_keep=length + 1).logits[:, :-1]  # [N, T, V]: predict tokens 0..T-1
    return selective_log_softmax(logits, completion_ids.unsqueeze(-1), temperature).squeeze(-1)


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
    through it on top of the prompts' keys and values, which are held once per prompt (``shared_prefix``).
    Gradients of the G answers add up on their shared prompt. The values of the tokens up to each answer's first
    EOS equal ``completion_log_probs`` on the prompts repeated G times, up to floating-point rounding, for
    (G - 1) / G less prompt work in the forward and the backward pass. Models the shared attention cannot serve
    take ``completion_log_probs`` on repeated prompts.
    """
    batch, prompt_len = prompt_ids.shape
    rows, length = completion_ids.shape
    if rows % batch:
        raise ValueError(f"{rows} completions do not split into groups over {batch} prompts")
    group = rows // batch
    if not supports_shared_prefix(model):
        return completion_log_probs(model, prompt_ids.repeat_interleave(group, dim=0),
                                    prompt_mask.repeat_interleave(group, dim=0), completion_ids, completion_mask,
                                    temperature)
    first_logits, cache = prefill_prompts(model, prompt_ids, prompt_mask)  # [B, V]
    # answer token 0 of each of a prompt's G answers, from the prompt's one next-token distribution
    first = selective_log_softmax(first_logits, completion_ids[:, 0].view(batch, group), temperature).view(rows, 1)
    if length == 1:
        return first
    mask = torch.cat([prompt_mask.repeat_interleave(group, dim=0), completion_mask], dim=1)
    positions = position_ids_from_mask(mask)[:, prompt_len : prompt_len + length - 1]
    rest = model(input_ids=completion_ids[:, :-1], attention_mask=mask[:, : prompt_len + length - 1],
                 position_ids=positions, past_key_values=shared_prefix_cache(cache, prompt_mask, group),
                 use_cache=True).logits  # [N, T-1, V]
    rest = selective_log_softmax(rest, completion_ids[:, 1:].unsqueeze(-1), temperature).squeeze(-1)
    return torch.cat([first, rest], dim=1)


def label_log_probs(model, prompt_ids: Tensor, prompt_mask: Tensor, verbalizer_ids: list[list[int]]) -> Tensor:
    """log pi(k | x) over the K labels [B, K]: each verbalizer's summed token log-probs, normalised over labels."""
    return torch.log_softmax(verbalizer_log_probs(model, prompt_ids, prompt_mask, verbalizer_ids), dim=-1)


def verbalizer_log_probs(
    model,
    prompt_ids: Tensor,  # [B, L] left-padded
    prompt_mask: Tensor,  # [B, L]
    verbalizer_ids: list[list[int]],  # token ids of each label's verbalizer (K lists)
) -> Tensor:
    """log P(verbalizer_k | x) under the full vocabulary, [B, K] (sum over a verbalizer's tokens).

    Each prompt runs once; the K verbalizers are scored as K answers sharing it. One-token verbalizers need only
    the prompt's next-token distribution.
    """
    batch, num_labels = prompt_ids.shape[0], len(verbalizer_ids)
    device = prompt_ids.device
    if all(len(tokens) == 1 for tokens in verbalizer_ids):
        logits = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                       use_cache=False, logits_to_keep=1).logits[:, -1]  # [B, V]
        first_tokens = torch.tensor([t[0] for t in verbalizer_ids], device=device)
        return selective_log_softmax(logits, first_tokens.expand(batch, -1))
    longest = max(len(t) for t in verbalizer_ids)
    verb = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    verb_mask = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    for k, tokens in enumerate(verbalizer_ids):
        verb[k, : len(tokens)] = torch.tensor(tokens, device=device)
        verb_mask[k, : len(tokens)] = 1
    verb, verb_mask = verb.repeat(batch, 1), verb_mask.repeat(batch, 1)  # [B * K, longest], grouped by prompt
    token_logp = shared_prompt_completion_log_probs(model, prompt_ids, prompt_mask, verb, verb_mask)
    return (token_logp * verb_mask).sum(-1).view(batch, num_labels)
