"""Agreement with the majority label, and multi-label F1, from integer count states.

Predictions are either probabilities [B, K], reduced to a label by ``torch.argmax`` (on an exact tie the lowest
label index wins), or label indices [B] already chosen, e.g. ChaosNLI's ``predicted_label`` field.

F1 follows ``sklearn.metrics.f1_score(y, y_hat, labels=range(K), average=..., zero_division=0)``: per label
F1 = 2·TP / (2·TP + FP + FN), 0 when the label never occurs in either targets or predictions. "macro" averages
over all K labels, so a label absent from the evaluated data counts as F1 = 0 and lowers the macro score;
"weighted" weights each label by its number of true examples; "micro" pools the counts (for single-label
predictions it equals accuracy).

States are counts summed across processes, so synced values are exact under DDP with uneven shards.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

Average = Literal["macro", "micro", "weighted"]


def predicted_labels(preds: Tensor) -> Tensor:
    """[B, K] scores -> argmax [B] (first index on ties); [B] label indices pass through."""
    if preds.ndim == 2:
        return preds.argmax(dim=-1)
    if preds.ndim == 1 and not preds.is_floating_point():
        return preds.long()
    raise ValueError(f"expected probabilities [B, K] or integer label indices [B], got {preds.dtype} "
                     f"of shape {tuple(preds.shape)}")


def f1_from_counts(tp: Tensor, fp: Tensor, fn: Tensor, average: str) -> Tensor:
    """F1 from per-label true positive / false positive / false negative counts [K], with zero_division=0."""
    tp, fp, fn = tp.to(torch.float64), fp.to(torch.float64), fn.to(torch.float64)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(denominator))
    if average == "micro":
        return f1
    if average == "macro":
        return f1.mean()
    if average == "weighted":
        support = tp + fn
        total = support.sum()
        return (f1 * support).sum() / total if total > 0 else total
    raise ValueError(f"average must be 'macro', 'micro' or 'weighted', got {average!r}")


class MajorityAccuracy(MulticlassAccuracy):
    """Share of examples whose predicted label is the source's majority label: torchmetrics'
    ``MulticlassAccuracy(average="micro")`` (its tp/fn count states, summed across processes), fed
    ``(preds, majority)`` as the collection routes them, with this module's input checks, computed in float64."""

    def __init__(self, **kwargs) -> None:
        # micro accuracy only counts preds == target: the number of classes does not enter it
        super().__init__(num_classes=None, average="micro", validate_args=False, **kwargs)

    def update(self, preds: Tensor, majority: Tensor) -> None:
        """``preds``: probabilities [B, K] or label indices [B]; ``majority``: majority label indices [B]."""
        labels = predicted_labels(preds)
        if labels.shape != majority.shape:
            raise ValueError(f"got {labels.shape[0]} predictions for {tuple(majority.shape)} majority labels")
        super().update(labels, majority)

    def compute(self) -> Tensor:
        tp, fn = self.tp.sum(), self.fn.sum()
        return tp.to(torch.float64) / (tp + fn)


# Macro-F1 stays hand-written: torchmetrics' MulticlassF1Score(average="macro") leaves out labels absent from both
# targets and predictions, while sklearn's f1_score(labels=range(K)) counts them as F1 = 0. ChaosNLI results are
# reported the sklearn way, so this one averages over all K labels.
class MajorityF1(Metric):
    """F1 of the predicted label against the majority label (macro, micro or weighted over all K labels)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_labels: int, average: Average = "macro", **kwargs) -> None:
        super().__init__(**kwargs)
        if average not in ("macro", "micro", "weighted"):
            raise ValueError(f"average must be 'macro', 'micro' or 'weighted', got {average!r}")
        self.num_labels, self.average = num_labels, average
        # confusion[target, predicted]
        self.add_state("confusion", torch.zeros(num_labels, num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, majority: Tensor) -> None:
        """``preds``: probabilities [B, K] or label indices [B]; ``majority``: majority label indices [B]."""
        labels = predicted_labels(preds)
        if labels.shape != majority.shape:
            raise ValueError(f"got {labels.shape[0]} predictions for {tuple(majority.shape)} majority labels")
        k = self.num_labels
        for name, index in (("majority", majority), ("predicted", labels)):
            if index.numel() and (index.min() < 0 or index.max() >= k):
                raise ValueError(f"{name} label index outside [0, {k}): {index.tolist()}")
        cells = majority.long() * k + labels
        self.confusion += torch.bincount(cells, minlength=k * k).reshape(k, k)

    def compute(self) -> Tensor:
        tp = self.confusion.diagonal()
        return f1_from_counts(tp, self.confusion.sum(0) - tp, self.confusion.sum(1) - tp, self.average)


class MultiLabelF1(Metric):
    """F1 over label sets: a label is predicted when its probability is >= ``threshold``.

    Targets are multi-hot [B, K] (GoEmotions: labels chosen by at least two raters). Matches sklearn's
    ``f1_score`` on multilabel indicator arrays with ``zero_division=0``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_labels: int, threshold: float = 0.3, average: Literal["macro", "micro"] = "macro",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if average not in ("macro", "micro"):
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
        self.num_labels, self.threshold, self.average = num_labels, threshold, average
        for name in ("true_positive", "false_positive", "false_negative"):
            self.add_state(name, torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: Tensor, multilabel_target: Tensor) -> None:
        """``probs``: [B, K]; ``multilabel_target``: 0/1 [B, K]."""
        if probs.shape != multilabel_target.shape or probs.shape[-1] != self.num_labels:
            raise ValueError(f"expected probs and multilabel_target of shape [B, {self.num_labels}], got "
                             f"{tuple(probs.shape)} and {tuple(multilabel_target.shape)}")
        predicted = probs >= self.threshold
        target = multilabel_target.bool()
        self.true_positive += (predicted & target).sum(0)
        self.false_positive += (predicted & ~target).sum(0)
        self.false_negative += (~predicted & target).sum(0)

    def compute(self) -> Tensor:
        return f1_from_counts(self.true_positive, self.false_positive, self.false_negative, self.average)
