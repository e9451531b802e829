"""Evaluation metrics: distance to the human vote distribution, agreement with the majority label, and whether the
model tracks which examples the humans disagree on."""

from shala_pl.metrics.agreement import ContestedAUROC, EntropyCorrelation, LabelCorrelation
from shala_pl.metrics.classification import MajorityAccuracy, MajorityF1, MultiLabelF1
from shala_pl.metrics.collection import EvalMetrics, build_eval_metrics, compute_flat
from shala_pl.metrics.distribution import (EntropyBinnedJSD, HumanEntropy, JensenShannonDistance, KLDivergence,
                                           ModelEntropy)

__all__ = [
    "ContestedAUROC",
    "EntropyBinnedJSD",
    "EntropyCorrelation",
    "EvalMetrics",
    "HumanEntropy",
    "JensenShannonDistance",
    "KLDivergence",
    "LabelCorrelation",
    "MajorityAccuracy",
    "MajorityF1",
    "ModelEntropy",
    "MultiLabelF1",
    "build_eval_metrics",
    "compute_flat",
]
