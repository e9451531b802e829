"""Majority-label accuracy and F1, and multi-label F1, equal scikit-learn's values."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from shala_pl.metrics import MajorityAccuracy, MajorityF1, MultiLabelF1

TOL = 1e-6
BATCHES = [(0, 17), (17, 18), (18, 40)]  # several updates, one of a single example


def random_case(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(n, k, generator=g), dim=-1)
    majority = torch.randint(0, k, (n,), generator=g)
    return probs, majority


def sklearn_f1(majority, predicted, k, average):
    return f1_score(np.asarray(majority), np.asarray(predicted), labels=list(range(k)), average=average,
                    zero_division=0)


@pytest.mark.parametrize("k", [2, 3, 28])
def test_accuracy_matches_sklearn(k):
    probs, majority = random_case(seed=k, n=40, k=k)
    metric = MajorityAccuracy()
    for start, stop in BATCHES:
        metric.update(probs[start:stop], majority[start:stop])
    assert metric.compute().item() == pytest.approx(accuracy_score(majority, probs.argmax(-1)), abs=TOL)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("k", [2, 3, 28])
def test_f1_matches_sklearn(k, average):
    probs, majority = random_case(seed=100 + k, n=40, k=k)  # with k=28 most labels never occur: F1 0 each
    metric = MajorityF1(num_labels=k, average=average)
    for start, stop in BATCHES:
        metric.update(probs[start:stop], majority[start:stop])
    expected = sklearn_f1(majority, probs.argmax(-1), k, average)
    assert metric.compute().item() == pytest.approx(expected, abs=TOL)


def test_macro_f1_averages_over_all_labels_even_absent_ones():
    # Labels 0 and 1 are predicted perfectly; label 2 never occurs, so its F1 is 0 and macro-F1 is 2/3.
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    majority = torch.tensor([0, 1])
    metric = MajorityF1(num_labels=3, average="macro")
    metric.update(probs, majority)
    assert metric.compute().item() == pytest.approx(2 / 3)
    assert sklearn_f1([0, 1], [0, 1], 3, "macro") == pytest.approx(2 / 3)


def test_argmax_ties_take_the_first_label():
    probs = torch.tensor([[0.4, 0.4, 0.2], [0.25, 0.375, 0.375], [1 / 3, 1 / 3, 1 / 3]])
    accuracy = MajorityAccuracy()
    accuracy.update(probs, torch.tensor([0, 1, 0]))
    assert accuracy.compute().item() == 1.0
    accuracy.reset()
    accuracy.update(probs, torch.tensor([1, 2, 2]))
    assert accuracy.compute().item() == 0.0


@pytest.mark.parametrize("metric_factory", [MajorityAccuracy, lambda: MajorityF1(3, "weighted")])
def test_label_indices_are_used_as_given(metric_factory):
    # A prediction chosen elsewhere (e.g. ChaosNLI's predicted_label) need not be the argmax of the probabilities.
    majority = torch.tensor([0, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2])
    from_indices, from_probs = metric_factory(), metric_factory()
    from_indices.update(predicted, majority)
    from_probs.update(torch.nn.functional.one_hot(predicted, 3).float(), majority)
    assert from_indices.compute().item() == pytest.approx(from_probs.compute().item())


def test_single_example():
    probs, majority = torch.tensor([[0.1, 0.7, 0.2]]), torch.tensor([2])
    for average in ("macro", "micro", "weighted"):
        metric = MajorityF1(num_labels=3, average=average)
        metric.update(probs, majority)
        assert metric.compute().item() == pytest.approx(sklearn_f1([2], [1], 3, average), abs=TOL)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="average"):
        MajorityF1(num_labels=3, average="samples")
    with pytest.raises(ValueError, match="outside"):
        MajorityF1(num_labels=3).update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="label indices"):
        MajorityAccuracy().update(torch.tensor([0.2, 0.8]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="predictions"):
        MajorityAccuracy().update(torch.rand(3, 2), torch.tensor([1, 1]))


# --- multi-label (GoEmotions) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("average", ["macro", "micro"])
@pytest.mark.parametrize("k", [2, 28])
def test_multilabel_f1_matches_sklearn(k, average):
    g = torch.Generator().manual_seed(k)
    probs = torch.softmax(2 * torch.randn(40, k, generator=g), dim=-1)
    probs[:, 0] = torch.rand(40, generator=g)  # some values on both sides of the threshold even for k = 28
    target = (torch.rand(40, k, generator=g) < 0.15).long()
    metric = MultiLabelF1(num_labels=k, threshold=0.3, average=average)
    for start, stop in BATCHES:
        metric.update(probs[start:stop], target[start:stop])
    expected = f1_score(target.numpy(), (probs >= 0.3).long().numpy(), average=average, zero_division=0)
    assert metric.compute().item() == pytest.approx(expected, abs=TOL)


def test_multilabel_threshold_is_inclusive():
    probs = torch.tensor([[0.3, 0.7, 0.0]])
    target = torch.tensor([[1, 1, 0]])
    metric = MultiLabelF1(num_labels=3, threshold=0.3, average="micro")
    metric.update(probs, target)
    assert metric.compute().item() == 1.0


def test_multilabel_no_labels_anywhere_scores_zero():
    metric = MultiLabelF1(num_labels=3)
    metric.update(torch.full((2, 3), 0.1), torch.zeros(2, 3, dtype=torch.long))
    assert metric.compute().item() == 0.0
    assert f1_score(np.zeros((2, 3)), np.zeros((2, 3)), average="macro", zero_division=0) == 0.0
