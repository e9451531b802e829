"""Ambiguity weighting: contested prompts get more of the gradient.

w(x) = 1 + lambda_t * H(p)/log K + gamma * EMA_JSD(x), renormalised to mean 1 over the (global) batch so the
learning rate keeps its meaning. lambda_t warms up linearly from 0 (uniform weights) over ``warmup_steps``.
The dynamic term (gamma > 0) also up-weights prompts on which the policy is still far from p, tracked as an EMA of
the per-prompt JS distance between the policy's label distribution and p.
Weights multiply each prompt's loss *after* advantage normalisation: a constant factor on a prompt's rewards
would cancel under std scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from shala_pl.metrics.distribution import entropy, jensen_shannon_distance
from shala_pl import checks
from shala_pl.rl.ranks import all_gathered, global_sum


@dataclass
class AmbiguityWeighting:
    """w(x) = 1 + lambda_t H(p)/log K + gamma EMA_JSD(x), renormalised to mean 1 over the global batch.

    Args:
        strength: lambda, the weight of the normalised vote entropy; 0 disables the entropy term.
        warmup_steps: Optimizer steps over which lambda rises linearly from 0.
        dynamic_strength: gamma, the weight of the per-prompt policy gap (EMA of JS distance to p); 0 disables it.
        ema_decay: Decay of the per-prompt policy-gap EMA.
    """

    strength: float = 1.0
    warmup_steps: int = 0
    dynamic_strength: float = 0.0
    ema_decay: float = 0.8

    def __post_init__(self) -> None:
        checks.non_negative("weighting.strength", self.strength)
        checks.non_negative_int("weighting.warmup_steps", self.warmup_steps)
        checks.non_negative("weighting.dynamic_strength", self.dynamic_strength)
        checks.fraction_below_one("weighting.ema_decay", self.ema_decay)

    @property
    def enabled(self) -> bool:
        return self.strength > 0 or self.dynamic_strength > 0

    def strength_at(self, step: int) -> float:
        if self.warmup_steps <= 0:
            return self.strength
        return self.strength * min(1.0, step / self.warmup_steps)


def batch_weights(settings: AmbiguityWeighting, human: Tensor, policy_probs: Tensor, indices: Tensor, step: int,
                  policy_gap: "PolicyGapTracker | None", strategy) -> Tensor:
    """The ambiguity weight of each prompt [B], mean 1 over the global batch (one all-reduce); all ones when
    weighting is off. With the dynamic term, ``policy_gap`` first takes this batch's JS distances between the
    policy's label distribution ``policy_probs`` and p (every rank's: each keeps the same table)."""
    if not settings.enabled:
        return torch.ones(human.shape[0], device=human.device)
    gap = None
    if policy_gap is not None:
        # JS distance is at most sqrt(ln 2); scaled to [0, 1] like the entropy term
        current_gap = jensen_shannon_distance(human, policy_probs).float() / math.sqrt(math.log(2))
        policy_gap.update(all_gathered(strategy, indices), all_gathered(strategy, current_gap))
        gap = policy_gap.read(indices)
    weights = raw_weights(normalized_entropy(human), gap, settings.strength_at(step), settings.dynamic_strength)
    total = global_sum(strategy, torch.stack([weights.sum(), weights.new_tensor(float(weights.numel()))]))
    return normalize_to_mean_one(weights, total[0], total[1])


def normalized_entropy(human: Tensor) -> Tensor:
    """Entropy of each row of p [B, K] divided by log K, in [0, 1]."""
    return entropy(human, rescale=False) / math.log(human.shape[-1])


def raw_weights(entropy_term: Tensor, gap_term: Tensor | None, strength: float, dynamic_strength: float) -> Tensor:
    """Unnormalised weights [B]: 1 + strength * entropy_term (+ dynamic_strength * gap_term)."""
    weights = 1.0 + strength * entropy_term
    if gap_term is not None and dynamic_strength > 0:
        weights = weights + dynamic_strength * gap_term
    return weights


def normalize_to_mean_one(weights: Tensor, global_sum: Tensor, global_count: Tensor) -> Tensor:
    """Scale so the mean over the global batch (all ranks) is 1."""
    return weights * (global_count / global_sum.clamp(min=1e-12))


class PolicyGapTracker(torch.nn.Module):
    """EMA of each training example's JS distance between policy and human distribution, by dataset index.

    A buffer, so it is saved in checkpoints and restored on resume. Unseen examples read as the mean of the seen.
    """

    def __init__(self, num_examples: int, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema", torch.full((num_examples,), float("nan")))

    def read(self, indices: Tensor) -> Tensor:
        values = self.ema[indices]
        seen = ~torch.isnan(self.ema)
        fallback = self.ema[seen].mean() if seen.any() else self.ema.new_zeros(())
        return torch.where(torch.isnan(values), fallback, values)

    @torch.no_grad()
    def update(self, indices: Tensor, gaps: Tensor) -> None:
        old = self.ema[indices]
        self.ema[indices] = torch.where(torch.isnan(old), gaps, self.decay * old + (1 - self.decay) * gaps)
