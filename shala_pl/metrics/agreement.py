"""Whether the model tracks *which* examples the humans disagree on, which a mean JSD alone does not say.

A constant prediction can score a good mean JSD while knowing nothing about any one example; these metrics are
about the ranking across examples:

- ``EntropyCorrelation`` (``entropy_corr``): Pearson correlation, across examples, of the model's entropy with the
  human vote entropy (as ``scipy.stats.pearsonr``).
- ``LabelCorrelation`` (``label_corr``): for each label k, the Pearson correlation across examples of the model's
  probability π_k with the human vote share p_k; the mean over the labels where it is defined.
- ``ContestedAUROC`` (``contested_auroc``): AUROC of the model's entropy as a score for telling the contested
  examples — those whose human entropy is in the top third — from the rest (as ``sklearn.metrics.roc_auc_score``,
  ties counted as one half). The top third: every example whose human entropy is at least the ⌈N/3⌉-th largest,
  so examples tied at the boundary are all contested and the result does not depend on the examples' order.

A correlation with a side of zero variance (a constant prediction) is undefined: NaN, as scipy says. So is the
AUROC when every example is contested.

The per-example model and human distributions are kept (concatenated across processes under DDP, so the synced
value is the value on all examples), in float64 whatever the owning module is cast to.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from shala_pl.metrics.distribution import _check_pair, entropy, normalise

CONTESTED_SHARE = 1 / 3


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation of two [N] vectors in float64 (two-pass, centred); NaN when either is constant."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    if x.numel() < 2 or bool(x.eq(x[0]).all()) or bool(y.eq(y[0]).all()):
        return torch.tensor(math.nan, dtype=torch.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = torch.sqrt((dx * dx).sum() * (dy * dy).sum())
    return ((dx * dy).sum() / denominator).clamp(-1.0, 1.0)


def contested_mask(human_entropy: Tensor, share: float = CONTESTED_SHARE) -> Tensor:
    """[N] bool: human entropy at least the ⌈share·N⌉-th largest (ties at the boundary included)."""
    n_top = max(1, math.ceil(share * human_entropy.numel()))
    threshold = torch.sort(human_entropy, descending=True).values[n_top - 1]
    return human_entropy >= threshold


def auroc(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` for ``positive`` [N] bool: the Mann-Whitney statistic with average
    ranks for ties (equals ``sklearn.metrics.roc_auc_score``); NaN when one class is empty."""
    n_pos, n = int(positive.sum()), positive.numel()
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    scores = scores.to(torch.float64)
    values, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    last_rank = counts.cumsum(0).to(torch.float64)  # 1-based rank of each distinct value's last copy
    average_rank = last_rank - (counts.to(torch.float64) - 1) / 2
    rank_sum = average_rank[inverse][positive].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class _PairedDistributions(Metric):
    """Keeps every example's (model, human) distribution pair; subclasses compute one number from all of them."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("probs", [], dist_reduce_fx="cat")
        self.add_state("human", [], dist_reduce_fx="cat")

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()):
        # the kept rows only ever change device: casting the module (e.g. to bfloat16) leaves them float64
        this = super()._apply(fn, exclude_state=(*exclude_state, "probs", "human"))
        device = fn(torch.zeros((), dtype=torch.float64)).device
        for name in ("probs", "human"):
            value = getattr(this, name)
            setattr(this, name, value.to(device) if isinstance(value, Tensor) else [v.to(device) for v in value])
        return this

    def update(self, probs: Tensor, human: Tensor) -> None:
        """``probs``: the model's label distributions [B, K]; ``human``: the vote distributions [B, K]."""
        _check_pair(probs, human)
        self.probs.append(normalise(probs.detach()))
        self.human.append(normalise(human.detach()))

    def _all(self) -> tuple[Tensor, Tensor]:
        def joined(value) -> Tensor:
            if isinstance(value, Tensor):  # already concatenated by the sync
                return value
            return torch.cat(value) if value else torch.zeros(0, 0, dtype=torch.float64)

        return joined(self.probs), joined(self.human)


class EntropyCorrelation(_PairedDistributions):
    """Pearson correlation across examples of the model's entropy with the human vote entropy."""

    higher_is_better = True

    def compute(self) -> Tensor:
        probs, human = self._all()
        return pearson(entropy(probs), entropy(human))


class LabelCorrelation(_PairedDistributions):
    """Mean over labels of the Pearson correlation across examples of π_k with p_k (labels where it is defined)."""

    higher_is_better = True

    def compute(self) -> Tensor:
        probs, human = self._all()
        if probs.numel() == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        per_label = torch.stack([pearson(probs[:, k], human[:, k]) for k in range(probs.shape[1])])
        defined = per_label[~per_label.isnan()]
        return defined.mean() if defined.numel() else torch.tensor(math.nan, dtype=torch.float64)


class ContestedAUROC(_PairedDistributions):
    """AUROC of the model's entropy for telling the examples in the top third of human entropy from the rest."""

    higher_is_better = True

    def compute(self) -> Tensor:
        probs, human = self._all()
        if probs.numel() == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        return auroc(entropy(probs), contested_mask(entropy(human)))
