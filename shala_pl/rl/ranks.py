"""Batch statistics over all processes of a data-parallel run (the process's own on one process)."""

from __future__ import annotations

import torch
from torch import Tensor


def global_sum(strategy, value: Tensor) -> Tensor:
    """``value`` summed over ranks: one all-reduce, none on one process (``strategy`` None: not attached)."""
    if strategy is not None and strategy.world_size > 1:
        return strategy.reduce(value, reduce_op="sum")
    return value


def global_std(strategy, values: Tensor) -> Tensor:
    """The sample std of ``values`` over all ranks' elements, from one all-reduce of sum, sum of squares, count."""
    stats = global_sum(strategy, torch.stack([values.sum(), (values**2).sum(), values.new_tensor(values.numel())]))
    mean = stats[0] / stats[2]
    return ((stats[1] / stats[2] - mean**2).clamp(min=0) * stats[2] / (stats[2] - 1).clamp(min=1)).sqrt()


def all_gathered(strategy, value: Tensor) -> Tensor:
    """Every rank's ``value``, concatenated into one flat tensor, the same on every rank (``value`` itself on one
    process)."""
    if strategy is not None and strategy.world_size > 1:
        return strategy.all_gather(value).reshape(-1)
    return value
