"""How far the model's label distribution is from the human vote distribution, averaged over examples.

Conventions follow ChaosNLI's evaluator (easonnie/ChaosNLI, ``src/evaluation/tools.py``,
``calculate_divergence_bwt_model_human_simplify``): per example ``scipy.spatial.distance.jensenshannon(human,
model)`` (natural log, i.e. the JS *distance*, the square root of the divergence) and
``scipy.stats.entropy(human, model)`` = KL(human || model), each averaged over examples. Both scipy functions
first rescale their inputs to sum to 1, and so do the functions here.

Every metric keeps per-example sums and counts (``dist_reduce_fx="sum"``), so the synced value under DDP is the
exact mean over all examples however unevenly they are sharded. Sums are float64 and stay float64 even when the
owning module is cast (``module.to(torch.bfloat16)`` as Lightning's true-half precision does).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

MODEL_PROB_FLOOR = 1e-15  # ChaosNLI raises model probabilities below this before KL, then renormalises


def normalise(dist: Tensor) -> Tensor:
    """Rows rescaled to sum to 1, in float64 (what scipy does to its inputs)."""
    dist = dist.to(torch.float64)
    return dist / dist.sum(-1, keepdim=True)


def floor_model_probs(probs: Tensor, floor: float = MODEL_PROB_FLOOR) -> Tensor:
    """ChaosNLI's ``normalize_dist``: entries with ``|p| < floor`` become ``floor``, then rows renormalise."""
    probs = probs.to(torch.float64)
    probs = torch.where(probs.abs() < floor, torch.full_like(probs, floor), probs)
    return probs / probs.sum(-1, keepdim=True)


def relative_entropy(p: Tensor, q: Tensor) -> Tensor:
    """Elementwise ``scipy.special.rel_entr``: p·log(p/q) where both are > 0, 0 where p = 0 <= q, NaN where
    either is NaN, +inf otherwise."""
    both_positive = (p > 0) & (q > 0)
    ratio = torch.where(both_positive, p / torch.where(both_positive, q, torch.ones_like(q)), torch.ones_like(p))
    terms = torch.where(both_positive, p * torch.log(ratio), torch.zeros_like(p))
    terms = torch.where(both_positive | ((p == 0) & (q >= 0)), terms, torch.full_like(p, math.inf))
    return torch.where(p.isnan() | q.isnan(), torch.full_like(p, math.nan), terms)


def is_distribution(dist: Tensor) -> Tensor:
    """Per row, [..., K] -> [...] bool: finite, non-negative entries with a finite positive sum, i.e. a row that
    rescales to a distribution. NaN or infinite probabilities (a diverged float16 model) are not."""
    dist = dist.to(torch.float64)
    total = dist.sum(-1)
    return torch.isfinite(dist).all(-1) & (dist >= 0).all(-1) & torch.isfinite(total) & (total > 0)


def jensen_shannon_distance(human: Tensor, model: Tensor, base: Optional[float] = None) -> Tensor:
    """Per-row ``scipy.spatial.distance.jensenshannon(human, model, base)``, [..., K] -> [...] float64.

    A NaN row counts as 0, as in ChaosNLI: the rounding case (the divergence of two near-identical rows comes out
    as a tiny negative number), and also a row that is no distribution, which the training rewards pass on purpose
    (an empty leave-one-out histogram) and mask. Scores use ``scored_jensen_shannon_distance`` instead.
    """
    p, q = normalise(human), normalise(model)
    m = 0.5 * (p + q)
    divergence = (relative_entropy(p, m) + relative_entropy(q, m)).sum(-1)
    if base is not None:
        divergence = divergence / math.log(base)
    return torch.nan_to_num(torch.sqrt(divergence / 2.0), nan=0.0)


def scored_jensen_shannon_distance(human: Tensor, model: Tensor, base: Optional[float] = None) -> Tensor:
    """``jensen_shannon_distance`` for evaluation: 0 for ChaosNLI's rounding case only; NaN where either row is
    not a distribution (``is_distribution``), so that a NaN prediction can never score a perfect 0."""
    both = is_distribution(human) & is_distribution(model)
    distance = jensen_shannon_distance(human, model, base)
    return torch.where(both, distance, torch.full_like(distance, math.nan))


def kl_divergence(human: Tensor, model: Tensor) -> Tensor:
    """Per-row KL(human || model) in nats after ChaosNLI's floor on the model side, [..., K] -> [...] float64.

    Equals ``scipy.stats.entropy(human, floor_model_probs(model))``.
    """
    return relative_entropy(normalise(human), floor_model_probs(model)).sum(-1)


def entropy(dist: Tensor, rescale: bool = True) -> Tensor:
    """Per-row Shannon entropy in nats (0·log 0 = 0), [..., K] -> [...]; the one entropy of the project.

    ``rescale=True`` (evaluation): rows rescaled to sum to 1 in float64, as scipy does. ``rescale=False`` (training:
    the ambiguity weights, the logged policy entropy): rows taken as they are, in their own dtype.
    """
    p = normalise(dist) if rescale else dist
    return -relative_entropy(p, torch.ones_like(p)).sum(-1)


def _check_pair(probs: Tensor, human: Tensor) -> None:
    if probs.ndim != 2 or probs.shape != human.shape:
        raise ValueError(f"expected probs and human of the same shape [B, K], got {tuple(probs.shape)} "
                         f"and {tuple(human.shape)}")


class _Float64StateMetric(Metric):
    """Floating states only ever change device: ``module.to(torch.bfloat16)`` leaves their float64 sums intact."""

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()):
        floating = [name for name, default in self._defaults.items()
                    if isinstance(default, Tensor) and default.is_floating_point()]
        this = super()._apply(fn, exclude_state=(*exclude_state, *floating))
        for name in floating:
            device = fn(torch.zeros((), dtype=torch.float64, device=this._defaults[name].device)).device
            this._defaults[name] = this._defaults[name].to(device)
            setattr(this, name, getattr(this, name).to(device))
        return this


class _ExampleMean(_Float64StateMetric):
    """Mean over examples of a per-example value computed from (probs, human)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("value_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("example_count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def per_example(self, probs: Tensor, human: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, probs: Tensor, human: Tensor) -> None:
        """``probs``: the model's label distributions [B, K]; ``human``: the vote distributions [B, K]."""
        _check_pair(probs, human)
        self.value_sum += self.per_example(probs, human).sum()
        self.example_count += probs.shape[0]

    def compute(self) -> Tensor:
        """The mean over every example seen (NaN before any)."""
        return self.value_sum / self.example_count


class JensenShannonDistance(_ExampleMean):
    """Mean per-example JS distance between human and model (``base=None``: nats; ``base=2``: bits)."""

    higher_is_better = False

    def __init__(self, base: Optional[float] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base = base

    def per_example(self, probs: Tensor, human: Tensor) -> Tensor:
        return scored_jensen_shannon_distance(human, probs, self.base)


class KLDivergence(_ExampleMean):
    """Mean per-example KL(human || model) in nats, model probabilities floored at 1e-15 first."""

    higher_is_better = False

    def per_example(self, probs: Tensor, human: Tensor) -> Tensor:
        return kl_divergence(human, probs)


class ModelEntropy(_ExampleMean):
    """Mean entropy (nats) of the model's distributions: how much uncertainty the model expresses."""

    higher_is_better = None

    def per_example(self, probs: Tensor, human: Tensor) -> Tensor:
        return entropy(probs)


class HumanEntropy(_ExampleMean):
    """Mean entropy (nats) of the human vote distributions: the reference level for ``ModelEntropy``."""

    higher_is_better = None

    def per_example(self, probs: Tensor, human: Tensor) -> Tensor:
        return entropy(human)


class NonFinitePredictions(Metric):
    """How many rows of the model's probabilities are not a distribution (``is_distribution``: NaN, infinite,
    negative or all zero). Any such row makes the JSD and KL means NaN; this says how many there were."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: Tensor, human: Tensor) -> None:
        _check_pair(probs, human)
        self.count += (~is_distribution(probs)).sum()

    def compute(self) -> Tensor:
        return self.count.clone()


class EntropyBinnedJSD(_Float64StateMetric):
    """Mean JS distance (nats) per bin of human disagreement.

    An example's bin comes from its human entropy divided by log K (so in [0, 1]); the bins split [0, 1] into
    ``num_bins`` equal widths, each closed on the left and open on the right except the last, which is closed.
    ``compute`` gives the per-bin mean JSD [num_bins] (NaN for an empty bin); ``bin_counts`` the examples per bin.
    (ChaosNLI's own binned tables use edges from the data's min-max entropy range or its quantiles instead.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_bins: int = 3, num_labels: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        self.num_bins, self.num_labels = num_bins, num_labels
        self.add_state("jsd_sum", torch.zeros(num_bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_count", torch.zeros(num_bins, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def bin_edges(self) -> Tensor:
        return torch.linspace(0.0, 1.0, self.num_bins + 1, dtype=torch.float64)

    def bin_index(self, human: Tensor) -> Tensor:
        """The bin of each row's normalised human entropy, [B, K] -> [B] long."""
        normalised_entropy = entropy(human) / math.log(self.num_labels)
        edges = self.bin_edges.to(normalised_entropy.device)
        index = torch.searchsorted(edges, normalised_entropy, right=True) - 1
        return index.clamp(0, self.num_bins - 1)  # entropy of exactly 1 (or 1 + rounding) joins the last bin

    def update(self, probs: Tensor, human: Tensor) -> None:
        _check_pair(probs, human)
        if human.shape[1] != self.num_labels:
            raise ValueError(f"expected {self.num_labels} labels, got {human.shape[1]}")
        index = self.bin_index(human)
        self.jsd_sum.index_add_(0, index, scored_jensen_shannon_distance(human, probs))
        self.bin_count.index_add_(0, index, torch.ones_like(index))

    def compute(self) -> Tensor:
        return self.jsd_sum / self.bin_count

    def bin_counts(self) -> Tensor:
        """Examples per bin, summed over all processes."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                               should_unsync=self._should_unsync):
            return self.bin_count.clone()
