"""Group rollouts: G answers per prompt, as free text or as labels sampled from the exact label distribution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
from torch import Tensor

from shala_pl.rl.answer_parsing import AnswerParser

RolloutMode = Literal["generate", "label"]


@dataclass
class RolloutSettings:
    mode: RolloutMode = "label"
    num_generations: int = 8  # G answers per prompt
    max_new_tokens: int = 16
    temperature: float = 1.0  # generate mode only; label mode samples the policy's exact distribution
    top_p: float = 1.0


@dataclass
class Rollout:
    """One batch of group rollouts. B prompts, G answers each, N = B * G, T completion tokens."""

    choices: Tensor  # [B, G] label index of each answer, -1 when unparseable
    policy_probs: Tensor  # [B, K] the policy's label distribution at rollout time (exact, or the group histogram)
    prompt_ids: Tensor = None  # [N, L] generate mode (each prompt repeated G times); [B, L] label mode
    prompt_mask: Tensor = None  # same shape as prompt_ids
    completion_ids: Optional[Tensor] = None  # [N, T]
    completion_mask: Optional[Tensor] = None  # [N, T] 1 up to and including the first EOS
    old_logp: Optional[Tensor] = None  # [N, T] (or [N, 1] in label mode); only when num_iterations > 1
    ref_logp: Optional[Tensor] = None  # [N, T] (or [N, 1]); only when beta > 0
    texts: list[str] = field(default_factory=list)  # N decoded answers, generate mode


def completion_mask_from_eos(completion_ids: Tensor, eos_token_id: int) -> Tensor:
    """1 for every token up to and including the first EOS (everything when there is none)."""
    is_eos = completion_ids == eos_token_id
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # number of EOS strictly before each position
    return (eos_before == 0).long()


@torch.no_grad()
def generate_answers(model, tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, settings: RolloutSettings,
                     num_return_sequences: int, synced_gpus: bool = False) -> tuple[Tensor, Tensor]:
    """Sample answers with the KV cache: completion ids and mask, [B * n, T], grouped by prompt."""
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        max_new_tokens=settings.max_new_tokens,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        synced_gpus=synced_gpus,
    )
    completion_ids = out[:, prompt_ids.shape[1] :]
    return completion_ids, completion_mask_from_eos(completion_ids, tokenizer.eos_token_id)


def parse_answers(tokenizer, parser: AnswerParser, completion_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, list[str]]:
    """Decode and parse [N, T] completions -> label indices [N] and the texts."""
    texts = tokenizer.batch_decode(completion_ids * completion_mask + tokenizer.pad_token_id * (1 - completion_mask),
                                   skip_special_tokens=True)
    choices = torch.tensor([parser(text) for text in texts], dtype=torch.long, device=completion_ids.device)
    return choices, texts
