"""Evaluation metrics: distance to the human vote distribution, and agreement with the majority label."""

from shala_pl.metrics.classification import MajorityAccuracy, MajorityF1, MultiLabelF1
from shala_pl.metrics.collection import EvalMetrics, build_eval_metrics, compute_flat
from shala_pl.metrics.distribution import (EntropyBinnedJSD, HumanEntropy, JensenShannonDistance, KLDivergence,
                                           ModelEntropy)

__all__ = [
    "EntropyBinnedJSD",
    "EvalMetrics",
    "HumanEntropy",
    "JensenShannonDistance",
    "KLDivergence",
    "MajorityAccuracy",
    "MajorityF1",
    "ModelEntropy",
    "MultiLabelF1",
    "build_eval_metrics",
    "compute_flat",
]
