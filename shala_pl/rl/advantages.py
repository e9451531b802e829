"""Advantages: group-relative for sampled answers (GRPO), or every label's in closed form (the exact objective)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from shala_pl.rl.rewards import log_score_reward

AdvantageScaling = Literal["group", "batch", "none"]


def group_advantages(
    rewards: Tensor, scaling: AdvantageScaling, batch_std: Tensor | None = None, eps: float = 1e-4
) -> Tensor:
    """``rewards`` [B, G] -> advantages [B, G]: reward minus its prompt's group mean, optionally scaled.

    ``group`` divides by each group's std (GRPO), ``batch`` by the std of the whole batch (under DDP pass
    ``batch_std`` computed over all ranks), ``none`` keeps the raw difference (Dr. GRPO). Dividing by a small
    group std inflates prompts on which the policy is already nearly deterministic, which pushes policies towards
    over-confidence on stochastic targets.
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scaling == "none":
        return centred
    if scaling == "group":
        std = rewards.std(dim=1, keepdim=True)
    elif scaling == "batch":
        std = rewards.std() if batch_std is None else batch_std
    else:
        raise ValueError(f"unknown advantage scaling {scaling!r}; expected group, batch or none")
    # A group whose rewards are all equal (or a group of one) carries no signal: advantage 0, never NaN.
    return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))


def exact_label_advantages(human: Tensor, policy_probs: Tensor, eps: float = 1e-3) -> Tensor:
    """Every label's log-score advantage under the policy, [B, K]: r_k - sum_j pi_j r_j.

    The closed form of what G sampled labels with group-mean baselines estimate: sum_k pi_k A_k grad log pi_k
    = sum_k r_k grad pi_k is the exact policy gradient of E_{k~pi}[r_k] = -KL(pi || p) (up to eps).
    """
    num_labels = human.shape[1]
    every_label = torch.arange(num_labels, device=human.device).expand(human.shape[0], num_labels)  # [B, K]
    reward = log_score_reward(every_label, human, policy_probs, eps)  # [B, K]
    return reward - (policy_probs * reward).sum(-1, keepdim=True)
