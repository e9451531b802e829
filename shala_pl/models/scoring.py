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
    ATTENTION_PREFIX,
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

    One forward pass: one-token verbalizers need only the prompt's next-token distribution; longer ones ride along
    after the prompt in the same pass (``_one_pass_verbalizer_log_probs``). Attention implementations that take no
    hand-made mask (flash attention) score them as K answers on the prompt's cache, a second pass.
    """
    batch, num_labels = prompt_ids.shape[0], len(verbalizer_ids)
    device = prompt_ids.device
    if all(len(tokens) == 1 for tokens in verbalizer_ids):
        logits = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                       use_cache=False, logits_to_keep=1).logits[:, -1]  # [B, V]
        first_tokens = torch.tensor([t[0] for t in verbalizer_ids], device=device)
        return selective_log_softmax(logits, first_tokens.expand(batch, -1))
    mask_kind = _tree_mask_kind(model)
    if mask_kind is not None:
        return _one_pass_verbalizer_log_probs(model, prompt_ids, prompt_mask, verbalizer_ids, mask_kind)
    longest = max(len(t) for t in verbalizer_ids)
    verb = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    verb_mask = torch.zeros(num_labels, longest, dtype=torch.long, device=device)
    for k, tokens in enumerate(verbalizer_ids):
        verb[k, : len(tokens)] = torch.tensor(tokens, device=device)
        verb_mask[k, : len(tokens)] = 1
    verb, verb_mask = verb.repeat(batch, 1), verb_mask.repeat(batch, 1)  # [B * K, longest], grouped by prompt
    token_logp = shared_prompt_completion_log_probs(model, prompt_ids, prompt_mask, verb, verb_mask)
    return (token_logp * verb_mask).sum(-1).view(batch, num_labels)


def _tree_mask_kind(model) -> str | None:
    """How a hand-made 4D attention mask is given to ``model``'s attention: ``bool`` (sdpa), ``additive`` (eager),
    or None where one cannot be (flash attention, and what ``supports_shared_prefix`` rejects)."""
    if not supports_shared_prefix(model):
        return None
    base = model.config._attn_implementation or "eager"
    base = base.removeprefix(ATTENTION_PREFIX)
    return {"sdpa": "bool", "eager": "additive"}.get(base)


def _one_pass_verbalizer_log_probs(model, prompt_ids: Tensor, prompt_mask: Tensor, verbalizer_ids: list[list[int]],
                                   mask_kind: str) -> Tensor:
    """``verbalizer_log_probs`` of multi-token words in one forward pass, [B, K].

    Each row is its prompt followed by every word's tokens but the last (the "branches"); a branch token attends to
    the prompt's real tokens and to the earlier tokens of its own word only, at the positions it would have right
    after the prompt. The prompt's last position predicts every word's first token, a branch token the next token of
    its word. The same numbers as scoring the words as answers on the prompt's cache, without a second pass
    through the model.
    """
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    branch = [(k, j, tokens[j]) for k, tokens in enumerate(verbalizer_ids) for j in range(len(tokens) - 1)]
    word = torch.tensor([k for k, _, _ in branch], device=device)  # [M] the word each branch token belongs to
    depth = torch.tensor([j for _, j, _ in branch], device=device)  # [M] its index in the word
    inputs = torch.tensor([token for _, _, token in branch], device=device)  # [M]
    targets = torch.tensor([verbalizer_ids[k][j + 1] for k, j, _ in branch], device=device)  # [M] what it predicts
    size = prompt_len + len(branch)

    ids = torch.cat([prompt_ids, inputs.expand(batch, -1)], dim=1)  # [B, L + M]
    real = prompt_mask.bool()
    positions = torch.cat([position_ids_from_mask(prompt_mask),
                           real.sum(-1, keepdim=True) + depth], dim=1)  # [B, L + M]
    visible = torch.zeros(batch, size, size, dtype=torch.bool, device=device)
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    visible[:, :prompt_len, :prompt_len] = causal & real[:, None, :]
    visible[:, prompt_len:, :prompt_len] = real[:, None, :]
    same_word_before = (word[:, None] == word[None, :]) & (depth[None, :] <= depth[:, None])  # [M, M]
    visible[:, prompt_len:, prompt_len:] = same_word_before
    visible |= torch.eye(size, dtype=torch.bool, device=device)  # a padding query sees itself: no empty row
    mask = visible[:, None]  # [B, 1, L + M, L + M]
    if mask_kind == "additive":
        dtype = model.get_input_embeddings().weight.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)

    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                   logits_to_keep=len(branch) + 1).logits  # [B, 1 + M, V]: the prompt's last position, the branches
    first_tokens = torch.tensor([t[0] for t in verbalizer_ids], device=device)
    scores = selective_log_softmax(logits[:, 0], first_tokens.expand(batch, -1))  # [B, K]
    rest = selective_log_softmax(logits[:, 1:], targets.expand(batch, -1).unsqueeze(-1)).squeeze(-1)  # [B, M]
    return scores.index_add(1, word, rest)
