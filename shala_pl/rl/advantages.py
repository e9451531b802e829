"""Group-relative advantages."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

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
