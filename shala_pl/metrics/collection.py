"""The evaluation metric set used for every stage and by ``shala_pl.commands.evaluate``.

Usage in a LightningModule::

    self.val_metrics = build_eval_metrics(num_labels)           # an nn.Module attribute: moves with the model
    ...
    self.val_metrics.update(probs, human, majority)              # in validation_step
    ...
    self.log_dict(self.val_metrics.compute())                    # in on_validation_epoch_end (synced over DDP)
    self.val_metrics.reset()

``compute()`` returns only scalar tensors: the binned JSD is flattened into ``jsd_bin0``, ``jsd_bin1``, ... and
its per-bin example counts (as floats) into ``n_bin0``, ... Log the ``compute()`` dict, not the collection object
itself (Lightning would then call the binned metric's own ``compute``, which returns a vector).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor
from torchmetrics import MetricCollection

from shala_pl.metrics.agreement import ContestedAUROC, EntropyCorrelation, LabelCorrelation
from shala_pl.metrics.classification import MajorityAccuracy, MajorityF1, MultiLabelF1
from shala_pl.metrics.distribution import (EntropyBinnedJSD, HumanEntropy, JensenShannonDistance, KLDivergence,
                                           ModelEntropy, NonFinitePredictions)

BINNED_JSD = "jsd_binned"
NONFINITE = "nonfinite_predictions"  # rows whose probabilities are not a distribution: they make jsd and kl NaN


class EvalMetrics(MetricCollection):
    """A MetricCollection whose ``update`` routes each input to the metrics that take it and whose ``compute``
    returns a flat dict of scalars."""

    def update(self, probs: Tensor, human: Tensor, majority: Tensor, predicted: Optional[Tensor] = None,
               multilabel_target: Optional[Tensor] = None) -> None:
        """``probs``: model distributions [B, K]; ``human``: vote distributions [B, K]; ``majority``: [B] indices.

        ``predicted``: label indices [B] when the prediction was chosen some other way than argmax of ``probs``
        (e.g. a file's ``predicted_label``); ``multilabel_target``: multi-hot [B, K], required when the collection
        has ``f1_multilabel``.
        """
        inputs = {"probs": probs, "human": human, "majority": majority,
                  "preds": probs if predicted is None else predicted}
        if multilabel_target is not None:
            inputs["multilabel_target"] = multilabel_target
        elif "f1_multilabel" in self.keys(keep_base=True):
            raise ValueError("this collection has f1_multilabel: pass multilabel_target")
        super().update(**inputs)

    def compute(self) -> dict[str, Tensor]:
        results = super().compute()
        binned_key = self._set_name(BINNED_JSD)
        if binned_key in results:
            per_bin = results.pop(binned_key)
            counts = getattr(self, BINNED_JSD).bin_counts().to(per_bin.dtype)  # Lightning reduces floats only
            for i in range(per_bin.shape[0]):
                results[self._set_name(f"jsd_bin{i}")] = per_bin[i]
                results[self._set_name(f"n_bin{i}")] = counts[i]
        return results


def build_eval_metrics(num_labels: int, multilabel: bool = False, entropy_bins: int = 3) -> EvalMetrics:
    """Keys: jsd, kl, accuracy, f1_macro, f1_micro, f1_weighted, entropy_model, entropy_human, entropy_corr,
    label_corr, contested_auroc, nonfinite_predictions, (f1_multilabel), and, when ``entropy_bins`` > 0, the binned
    JSD (flattened by ``compute``)."""
    # the three per-example agreement metrics keep the same (model, human) rows: one state for all three
    agreement = {"entropy_corr": EntropyCorrelation(), "label_corr": LabelCorrelation(),
                 "contested_auroc": ContestedAUROC()}
    metrics = {
        "jsd": JensenShannonDistance(),
        "kl": KLDivergence(),
        "accuracy": MajorityAccuracy(),
        "f1_macro": MajorityF1(num_labels, average="macro"),
        "f1_micro": MajorityF1(num_labels, average="micro"),
        "f1_weighted": MajorityF1(num_labels, average="weighted"),
        "entropy_model": ModelEntropy(),
        "entropy_human": HumanEntropy(),
        **agreement,
        NONFINITE: NonFinitePredictions(),
    }
    if multilabel:
        metrics["f1_multilabel"] = MultiLabelF1(num_labels)
    if entropy_bins > 0:
        metrics[BINNED_JSD] = EntropyBinnedJSD(entropy_bins, num_labels)
    # Explicit groups: automatic grouping would merge any two metrics whose states happen to match after the
    # first batch (e.g. JSD and KL when the model equals the humans), sharing state from then on.
    return EvalMetrics(metrics, compute_groups=[["f1_macro", "f1_micro", "f1_weighted"], list(agreement)])


def compute_flat(metrics: EvalMetrics) -> dict[str, float]:
    """``metrics.compute()`` as plain floats (for JSON output)."""
    return {name: value.item() for name, value in metrics.compute().items()}
