"""Policy-gradient loss terms of the GRPO family, as pure functions of log-probabilities.

Shapes: N completions (prompts x group size), T completion tokens. ``mask`` marks real completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from shala_pl import checks

Aggregation = Literal["grpo", "dr_grpo", "dapo", "bnpo"]


@dataclass
class LossSettings:
    """The clipped policy-gradient loss.

    Args:
        clip_eps_low: The ratio is clipped below at 1 - clip_eps_low (negative advantages).
        clip_eps_high: The ratio is clipped above at 1 + clip_eps_high (DAPO's clip-higher: lets unlikely labels
            gain probability faster).
        beta: KL-to-reference coefficient; 0 skips the reference forward pass entirely.
        aggregation: How per-token losses become one: ``grpo`` (mean per answer, then over answers),
            ``dr_grpo`` (sum / (answers x max length)), ``dapo`` (sum / the whole optimizer batch's tokens on all
            ranks) or ``bnpo`` (sum / each micro-batch's tokens); see ``aggregate``.
    """

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.28
    beta: float = 0.0
    aggregation: Aggregation = "dr_grpo"

    def __post_init__(self) -> None:
        checks.fraction_below_one("loss.clip_eps_low", self.clip_eps_low)
        checks.non_negative("loss.clip_eps_high", self.clip_eps_high)
        checks.non_negative("loss.beta", self.beta)
        checks.one_of("loss.aggregation", self.aggregation, get_args(Aggregation))


def clipped_surrogate(
    logp: Tensor,  # [N, T] current policy
    old_logp: Tensor,  # [N, T] policy that generated the rollout
    advantages: Tensor,  # [N]
    clip_eps_low: float,
    clip_eps_high: float,
) -> tuple[Tensor, Tensor]:
    """Per-token PPO surrogate loss (to minimise) and a mask of tokens where clipping was active."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    is_clipped = clipped < unclipped
    return per_token, is_clipped


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(policy || reference) per token: exp(r) - r - 1 with r = ref - policy."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def aggregate(per_token: Tensor, mask: Tensor, mode: Aggregation, max_length: int | None = None,
              num_tokens: Tensor | None = None) -> Tensor:
    """Reduce per-token values [N, T] to a scalar.

    ``grpo``: mean over each sequence's tokens, then over sequences (length-biased: short answers weigh more).
    ``dr_grpo``: sum over tokens / (N * max_length), the constant Dr. GRPO uses to remove that bias.
    ``dapo``: sum over tokens / ``num_tokens``, the number of answer tokens in the whole optimizer batch (all
    micro-batches, all ranks; these N rows' own count when not given), so every token weighs the same.
    ``bnpo``: sum over tokens / these N rows' token count (TRL's ``bnpo``: a token mean per micro-batch).
    """
    mask = mask.to(per_token.dtype)
    masked = per_token * mask
    if mode == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if mode == "dr_grpo":
        length = max_length if max_length is not None else per_token.shape[-1]
        return masked.sum() / (per_token.shape[0] * length)
    if mode == "dapo" and num_tokens is not None:
        return masked.sum() / num_tokens.to(per_token.dtype).clamp(min=1.0)
    if mode in ("dapo", "bnpo"):
        return masked.sum() / mask.sum().clamp(min=1.0)
    raise ValueError(f"unknown aggregation {mode!r}; expected grpo, dr_grpo, dapo or bnpo")


@dataclass
class LossOutput:
    loss: Tensor  # scalar, to minimise: the policy loss + beta * kl
    kl: Tensor  # scalar (0 when beta == 0)
    clip_ratio: Tensor  # fraction of completion tokens with active clipping
    clip_ratio_low: Tensor  # ... clipped at 1 - clip_eps_low (negative advantage)
    clip_ratio_high: Tensor  # ... clipped at 1 + clip_eps_high (positive advantage)


def _with_kl_penalty(policy_loss: Tensor, ref_logp: Tensor | None, settings: LossSettings,
                     kl_to: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """The loss to minimise and the KL term: ``policy_loss + beta * kl_to(ref_logp)``; with beta 0 the policy loss
    alone and a zero KL (no reference log-probs needed)."""
    if settings.beta == 0:
        return policy_loss, policy_loss.new_zeros(())
    if ref_logp is None:
        raise ValueError("beta > 0 needs reference log-probabilities")
    kl = kl_to(ref_logp)
    return policy_loss + settings.beta * kl, kl


def grpo_loss(
    logp: Tensor,  # [N, T]
    old_logp: Tensor,  # [N, T]
    ref_logp: Tensor | None,  # [N, T], None when beta == 0
    advantages: Tensor,  # [N]
    sample_weights: Tensor,  # [N] ambiguity weight of each completion's prompt
    mask: Tensor,  # [N, T]
    settings: LossSettings,
    max_length: int | None = None,
    num_tokens: Tensor | None = None,  # ``dapo``: answer tokens in the whole optimizer batch
) -> LossOutput:
    per_token, is_clipped = clipped_surrogate(logp, old_logp, advantages, settings.clip_eps_low, settings.clip_eps_high)
    per_token = per_token * sample_weights.unsqueeze(-1)
    policy_loss = aggregate(per_token, mask, settings.aggregation, max_length, num_tokens)
    loss, kl = _with_kl_penalty(policy_loss, ref_logp, settings,
                                lambda ref: aggregate(k3_kl(logp, ref), mask, settings.aggregation, max_length,
                                                      num_tokens))
    mask_f = mask.to(per_token.dtype)
    token_share = lambda flags: ((flags.to(per_token.dtype) * mask_f).sum() / mask_f.sum().clamp(min=1.0)).detach()  # noqa: E731
    negative = (advantages < 0).unsqueeze(-1)  # [N, 1]: a clipped token with A < 0 sits at the low bound
    return LossOutput(loss=loss, kl=kl.detach(), clip_ratio=token_share(is_clipped),
                      clip_ratio_low=token_share(is_clipped & negative),
                      clip_ratio_high=token_share(is_clipped & ~negative))


def exact_label_loss(
    logp: Tensor,  # [B, K] current policy's label log-probs (normalised over the K labels)
    old_logp: Tensor,  # [B, K] the policy's at rollout time
    ref_logp: Tensor | None,  # [B, K] the reference's, None when beta == 0
    advantages: Tensor,  # [B, K] every label's advantage (``exact_label_advantages``)
    sample_weights: Tensor,  # [B] ambiguity weight of each prompt
    settings: LossSettings,
    num_prompts: Tensor | None = None,  # prompts in the whole optimizer batch (all ranks); None: these B
) -> LossOutput:
    """The clipped surrogate's expectation over k ~ pi_old in closed form, instead of its mean over G samples.

    Per prompt: -sum_k pi_old_k min(rho_k A_k, clip(rho_k) A_k), rho_k = pi_k / pi_old_k; at the first iteration
    (rho = 1) its gradient is -sum_k A_k grad pi_k, which the sampled estimator's gradient equals in expectation
    up to its group-mean factor (G-1)/G. The KL to the reference is exact too: sum_k pi_k (log pi_k - log ref_k).
    """
    num_labels = logp.shape[1]
    per_label, is_clipped = clipped_surrogate(logp.reshape(-1, 1), old_logp.reshape(-1, 1), advantages.reshape(-1),
                                              settings.clip_eps_low, settings.clip_eps_high)
    old_probs = old_logp.exp().detach()  # [B, K]
    per_prompt = (old_probs * per_label.view(-1, num_labels)).sum(-1)  # [B]
    denominator = num_prompts.to(logp.dtype).clamp(min=1.0) if num_prompts is not None else logp.new_tensor(
        float(logp.shape[0]))
    policy_loss = (per_prompt * sample_weights).sum() / denominator
    loss, kl = _with_kl_penalty(policy_loss, ref_logp, settings,  # exact KL(pi || ref) over the K labels
                                lambda ref: (logp.exp() * (logp - ref)).sum(-1).sum() / denominator)
    clipped = is_clipped.view(-1, num_labels).to(old_probs.dtype)  # [B, K]
    negative = (advantages < 0).to(old_probs.dtype)
    share = lambda flags: ((old_probs * flags).sum() / old_probs.sum().clamp(min=1e-12)).detach()  # noqa: E731
    return LossOutput(loss=loss, kl=kl.detach(), clip_ratio=share(clipped),
                      clip_ratio_low=share(clipped * negative), clip_ratio_high=share(clipped * (1 - negative)))
