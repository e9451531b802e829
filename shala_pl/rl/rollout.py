"""Group rollouts: G answers per prompt, as free text or as labels sampled from the exact label distribution."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, get_args

import torch
from torch import Tensor

from shala_pl.models.shared_prefix import prefill_prompts, shared_prefix_cache, supports_shared_prefix
from shala_pl import checks
from shala_pl.rl.answer_parsing import AnswerParser

RolloutMode = Literal["generate", "label"]


@dataclass
class RolloutSettings:
    """How the G answers per prompt are drawn.

    Args:
        mode: ``label``: labels sampled from the policy's exact distribution over the label words (one forward
            per prompt); ``generate``: free-text answers sampled and parsed into labels.
        num_generations: G, answers per prompt.
        max_new_tokens: Generate mode: the longest answer, in tokens.
        temperature: Generate mode: sampling temperature (> 0); answers are scored at the same temperature.
        top_p: Generate mode: nucleus sampling's probability mass.
        min_new_tokens: The end token is blocked until this many tokens exist (= max_new_tokens: fixed-length
            answers).
        mask_truncated_completions: Generate mode: answers that reach max_new_tokens without an end token get
            no loss and count as invalid.
    """

    mode: RolloutMode = "label"
    num_generations: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    min_new_tokens: int = 0
    mask_truncated_completions: bool = False

    def __post_init__(self) -> None:
        checks.one_of("rollout.mode", self.mode, get_args(RolloutMode))
        checks.positive_int("rollout.num_generations", self.num_generations)
        checks.positive_int("rollout.max_new_tokens", self.max_new_tokens)
        checks.positive("rollout.temperature", self.temperature, note="answers are scored at logits / temperature; "
                        "greedy decoding (0) gives them no log-probabilities")
        checks.probability("rollout.top_p", self.top_p)
        checks.non_negative_int("rollout.min_new_tokens", self.min_new_tokens)
        checks.require(self.min_new_tokens <= self.max_new_tokens, "rollout.min_new_tokens",
                       f"at most rollout.max_new_tokens ({self.max_new_tokens})", self.min_new_tokens)
        if self.mask_truncated_completions:
            checks.require(self.min_new_tokens < self.max_new_tokens, "rollout.min_new_tokens",
                           "below rollout.max_new_tokens with mask_truncated_completions (room for an end token)",
                           self.min_new_tokens)
        if self.mode == "label" and (self.temperature != 1.0 or self.top_p != 1.0):
            warnings.warn("rollout.temperature and rollout.top_p do not apply in label mode (it samples the "
                          "policy's exact label distribution); they are ignored", stacklevel=2)


@dataclass
class Rollout:
    """One batch of group rollouts. B prompts, G answers each, N = B * G, T completion tokens."""

    choices: Tensor  # [B, G] label index of each answer, -1 when unparseable
    policy_probs: Tensor  # [B, K] the policy's label distribution at rollout time (exact, or the group histogram)
    prompt_ids: Tensor = None  # [B, L] each prompt once, left-padded (its G answers share it)
    prompt_mask: Tensor = None  # [B, L]
    completion_ids: Optional[Tensor] = None  # [N, T]
    completion_mask: Optional[Tensor] = None  # [N, T] 1 up to and including the first EOS
    truncated: Optional[Tensor] = None  # [B, G] no end token within max_new_tokens
    loss_mask: Optional[Tensor] = None  # [N, T] completion_mask, zero for answers that get no loss (truncated ones)
    old_logp: Optional[Tensor] = None  # [N, T] (or [N, 1] in label mode); only when num_iterations > 1
    ref_logp: Optional[Tensor] = None  # [N, T] (or [N, 1]); only when beta > 0
    texts: list[str] = field(default_factory=list)  # N decoded answers, generate mode

    def __post_init__(self) -> None:
        if self.loss_mask is None:
            self.loss_mask = self.completion_mask


def end_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the model's ``generation_config.eos_token_id`` (an int or a list: Llama-3's
    ``<|eot_id|>``, Gemma's ``<end_of_turn>``, chat models whose turn end is not EOS) and the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = _as_id_list(configured)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def _as_id_list(ids: int | Sequence[int] | None) -> list[int]:
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


def truncated_answers(completion_ids: Tensor, end_ids: Sequence[int]) -> Tensor:
    """[N] True for answers without an end token: they reached ``max_new_tokens`` (sampling stops early only once
    every answer has ended)."""
    return ~torch.isin(completion_ids, completion_ids.new_tensor(list(end_ids))).any(-1)


def completion_mask_from_eos(completion_ids: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """1 for every token up to and including the first end token (any of ``eos_token_id``; everything when there is
    none)."""
    is_eos = torch.isin(completion_ids, completion_ids.new_tensor(_as_id_list(eos_token_id)))
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # number of EOS strictly before each position
    return (eos_before == 0).long()


@torch.no_grad()
def generate_answers(model, tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, settings: RolloutSettings,
                     num_return_sequences: int, synced_gpus: bool = False) -> tuple[Tensor, Tensor]:
    """Sample answers with the KV cache: completion ids and mask, [B * n, T], grouped by prompt; an answer ends at
    the first of any ``end_token_ids``."""
    ends = end_token_ids(model, tokenizer)
    completion_ids = sample_completions(
        model, prompt_ids, prompt_mask, num_return_sequences, settings.max_new_tokens,
        temperature=settings.temperature, top_p=settings.top_p, min_new_tokens=settings.min_new_tokens,
        eos_token_id=ends, pad_token_id=tokenizer.pad_token_id, synced_gpus=synced_gpus,
    )
    return completion_ids, completion_mask_from_eos(completion_ids, ends)


@torch.no_grad()
def sample_completions(
    model,
    prompt_ids: Tensor,  # [B, L] left-padded
    prompt_mask: Tensor,  # [B, L]
    num_return_sequences: int,  # n answers per prompt
    max_new_tokens: int,
    *,
    eos_token_id: int | Sequence[int] | None,  # one end id or several; None: always max_new_tokens
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    synced_gpus: bool = False,
) -> Tensor:
    """Sample n answers per prompt, [B * n, T] grouped by prompt, T <= max_new_tokens.

    What ``model.generate(..., num_return_sequences=n)`` samples (the same distribution; the same tokens for greedy
    decoding), with less work: ``generate`` copies every prompt n times before its first forward pass, so each
    prompt is run n times and every decoding step reads n copies of its keys and values. Here each prompt is run
    once and its keys and values are held once for its n answers (``shala_pl.models.shared_prefix``); the answers'
    own keys and values go into storage allocated once for the whole answer, written in place (a ``DynamicCache``
    copies the whole cache at every step and layer). Models that ``supports_shared_prefix`` rejects get the prompt
    cache repeated n times in an ordinary growing cache. Answers that ended (EOS) continue with
    ``pad_token_id``; sampling stops when all have ended, or, with ``synced_gpus`` (sharded models), only after
    ``max_new_tokens`` so that every rank runs the same number of forward passes. ``min_new_tokens`` blocks EOS
    until that many tokens exist.
    """
    n = num_return_sequences
    batch, prompt_len = prompt_ids.shape
    rows = batch * n
    tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=prompt_ids.device)
    if max_new_tokens <= 0:
        return tokens
    logits, cache = prefill_prompts(model, prompt_ids, prompt_mask)
    logits = logits.float().repeat_interleave(n, dim=0)  # [N, V]
    if supports_shared_prefix(model):
        cache = shared_prefix_cache(cache, prompt_mask, n, capacity=max_new_tokens)
    else:  # rare (sliding-window, soft-capped, ... attention): the prompt cache repeated, grown by concatenation
        cache.batch_repeat_interleave(n)
    mask = torch.cat([prompt_mask.repeat_interleave(n, dim=0), prompt_mask.new_ones(rows, max_new_tokens)], dim=1)
    # the position of answer token t: the number of real prompt tokens + t (left padding skipped, as generate does)
    first_position = prompt_mask.long().sum(-1, keepdim=True).repeat_interleave(n, dim=0)  # [N, 1]
    finished = torch.zeros(rows, dtype=torch.bool, device=prompt_ids.device)
    length = max_new_tokens
    ends = torch.tensor(_as_id_list(eos_token_id), dtype=torch.long, device=prompt_ids.device)
    can_end = ends.numel() > 0
    for t in range(max_new_tokens):
        if t > 0:
            logits = model(input_ids=tokens[:, t - 1 : t], attention_mask=mask[:, : prompt_len + t],
                           position_ids=first_position + (t - 1), past_key_values=cache, use_cache=True).logits
            logits = logits[:, -1].float()
        if can_end and t < min_new_tokens:
            logits[:, ends] = -float("inf")
        next_tokens = _next_tokens(logits, temperature, top_p, do_sample)
        if can_end:
            next_tokens = next_tokens.masked_fill(finished, pad_token_id)
            finished |= torch.isin(next_tokens, ends)
        tokens[:, t] = next_tokens
        # one host sync per token, as generate's stopping check; a sharded model keeps all ranks in step
        if can_end and not synced_gpus and bool(finished.all()):
            length = t + 1
            break
    return tokens[:, :length]


def _next_tokens(logits: Tensor, temperature: float, top_p: float, do_sample: bool) -> Tensor:
    """One token per row from next-token logits [N, V]: greedy, or sampled after temperature and top-p."""
    if not do_sample or temperature <= 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_p < 1.0:
        # nucleus: drop the least likely tokens whose total probability is at most 1 - top_p (never the top token)
        ascending, order = logits.sort(dim=-1)
        drop_sorted = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        drop_sorted[:, -1] = False
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -float("inf"))
    return sample_categorical(logits.softmax(dim=-1))


def sample_categorical(probs: Tensor) -> Tensor:
    """One index per row of ``probs`` [N, V], drawn with probability ``probs[n, v]``, by inverting the CDF.

    What ``torch.multinomial(probs, 1)`` draws, in a fraction of its time on a CPU with a 49k vocabulary (one cumsum
    and one binary search per row). Each token's interval in the float32 CDF is its probability to within one
    rounding of the running sum (< 1e-7); tokens of probability 0 are never drawn.
    """
    cdf = probs.float().cumsum(dim=-1)  # [N, V]
    u = torch.rand(probs.shape[0], 1, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=probs.shape[-1] - 1)


@dataclass
class SampledAnswers:
    """n free-text answers per prompt and the labels they parse into. N = B * n, grouped by prompt."""

    completion_ids: Tensor  # [N, T]
    completion_mask: Tensor  # [N, T] 1 up to and including the first end token
    choices: Tensor  # [B, n] label index of each answer, -1 when it does not parse
    texts: list[str]  # N decoded answers


def sample_answers(model, tokenizer, parser: AnswerParser, prompt_ids: Tensor, prompt_mask: Tensor,
                   settings: RolloutSettings, n: int, synced_gpus: bool = False) -> SampledAnswers:
    """Generate -> decode -> parse: what both a generate-mode rollout and the sampling readout start from."""
    completion_ids, completion_mask = generate_answers(model, tokenizer, prompt_ids, prompt_mask, settings, n,
                                                       synced_gpus=synced_gpus)
    choices, texts = parse_answers(tokenizer, parser, completion_ids, completion_mask)
    return SampledAnswers(completion_ids, completion_mask, choices.view(-1, n), texts)


def parse_answers(tokenizer, parser: AnswerParser, completion_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, list[str]]:
    """Decode and parse [N, T] completions -> label indices [N] and the texts."""
    texts = tokenizer.batch_decode(completion_ids * completion_mask + tokenizer.pad_token_id * (1 - completion_mask),
                                   skip_special_tokens=True)
    choices = torch.tensor([parser(text) for text in texts], dtype=torch.long, device=completion_ids.device)
    return choices, texts
