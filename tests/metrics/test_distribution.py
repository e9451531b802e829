"""Distribution metrics equal scipy's per-example values averaged over examples (ChaosNLI's definitions)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from shala_pl.metrics import (EntropyBinnedJSD, HumanEntropy, JensenShannonDistance, KLDivergence, ModelEntropy,
                              build_eval_metrics)
from shala_pl.metrics.distribution import floor_model_probs, jensen_shannon_distance, scored_jensen_shannon_distance

TOL = 1e-6


def random_pairs(seed: int, n: int, k: int, zero_share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Model and human distributions [n, k] with some exact zeros on both sides."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(2):
        x = torch.rand(n, k, generator=g) ** 3
        x[torch.rand(n, k, generator=g) < zero_share] = 0.0
        x[:, 0] += 1e-3  # no all-zero row
        pairs.append(x / x.sum(-1, keepdim=True))
    return pairs[0], pairs[1]


def reference_floor(q: np.ndarray) -> np.ndarray:
    """ChaosNLI's normalize_dist: |q_i| < 1e-15 -> 1e-15, then renormalise."""
    q = np.where(np.abs(q) < 1e-15, 1e-15, q)
    return q / q.sum()


def reference(name: str, probs: torch.Tensor, human: torch.Tensor) -> float:
    p, h = probs.double().numpy(), human.double().numpy()
    if name == "jsd":
        values = [jensenshannon(a, b) for a, b in zip(h, p)]
        values = [0.0 if np.isnan(v) else v for v in values]
    elif name == "jsd_bits":
        values = [jensenshannon(a, b, base=2) for a, b in zip(h, p)]
    elif name == "kl":
        values = [scipy_entropy(a, reference_floor(b)) for a, b in zip(h, p)]
    elif name == "entropy_model":
        values = [scipy_entropy(b) for b in p]
    else:
        values = [scipy_entropy(a) for a in h]
    return float(np.mean(values))


METRICS = {
    "jsd": JensenShannonDistance,
    "jsd_bits": lambda: JensenShannonDistance(base=2),
    "kl": KLDivergence,
    "entropy_model": ModelEntropy,
    "entropy_human": HumanEntropy,
}


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("k", [2, 3, 28])
def test_random_batches_match_scipy(name, k):
    probs, human = random_pairs(seed=k, n=53, k=k)
    metric = METRICS[name]()
    for start, stop in [(0, 20), (20, 21), (21, 53)]:  # uneven batches, one of a single example
        metric.update(probs[start:stop], human[start:stop])
    assert metric.compute().item() == pytest.approx(reference(name, probs, human), abs=TOL)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_float32_inputs_match_scipy(name):
    probs, human = random_pairs(seed=7, n=16, k=3)
    metric = METRICS[name]()
    metric.update(probs.float(), human.float())
    assert metric.compute().item() == pytest.approx(reference(name, probs.float(), human.float()), abs=TOL)


EDGE_CASES = {
    # name: (human, model)
    "identical one-hot": ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
    "disjoint one-hot": ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
    "zero in model only": ([0.5, 0.3, 0.2], [0.6, 0.4, 0.0]),
    "zero in human only": ([0.7, 0.3, 0.0], [0.5, 0.25, 0.25]),
    "zeros on both sides": ([0.0, 0.5, 0.5], [0.5, 0.5, 0.0]),
    "uniform vs one-hot": ([1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]),
    "unnormalised rows": ([76.0, 20.0, 4.0], [2.0, 1.0, 1.0]),  # scipy rescales both sides
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("name", sorted(METRICS))
def test_edge_cases_match_scipy(name, case):
    human, model = (torch.tensor([row], dtype=torch.float64) for row in EDGE_CASES[case])
    metric = METRICS[name]()
    metric.update(model, human)
    value = metric.compute().item()
    assert math.isfinite(value)
    assert value == pytest.approx(reference(name, model, human), abs=TOL)


def test_closed_form_values():
    # JSD([1,0,0], [0,1,0]): m = [1/2, 1/2, 0]; each KL to m is ln 2, so JSD = sqrt(ln 2) nats, 1 bit.
    human, model = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    assert jensen_shannon_distance(human, model).item() == pytest.approx(math.sqrt(math.log(2)), abs=1e-12)
    assert jensen_shannon_distance(human, model, base=2).item() == pytest.approx(1.0, abs=1e-12)
    # KL([1,0,0] || [0,1,0]) with the floor: q = [1e-15, 1, 1e-15] / (1 + 2e-15), KL = ln(1/q_0) ~ 15 ln 10.
    kl = KLDivergence()
    kl.update(model, human)
    assert kl.compute().item() == pytest.approx(15 * math.log(10), abs=1e-9)


def test_nan_example_counts_as_zero():
    # Almost identical rows: the divergence rounds to about -1e-16, scipy returns NaN and ChaosNLI counts 0.
    human = [0.39546198954297845, 0.5930180594914135, 0.011519950965607977]
    model = [0.3954619895429785, 0.5930180594914135, 0.011519950965607977]
    with np.errstate(invalid="ignore"):
        assert np.isnan(jensenshannon(human, model))
    metric = JensenShannonDistance()
    metric.update(torch.tensor([model, [0.0, 1.0, 0.0]], dtype=torch.float64),
                  torch.tensor([human, [1.0, 0.0, 0.0]], dtype=torch.float64))
    assert metric.compute().item() == pytest.approx(math.sqrt(math.log(2)) / 2, abs=1e-12)


@pytest.mark.parametrize("bad_row", [[math.nan] * 3, [math.inf, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -0.5, 1.0]],
                         ids=["nan", "inf", "all zero", "negative"])
def test_a_prediction_that_is_not_a_distribution_is_nan_and_counted_never_zero(bad_row):
    # A float16 model that diverged gives NaN probabilities; ChaosNLI's "NaN counts as 0" must not score it perfect.
    human = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    model = torch.tensor([bad_row, [0.0, 1.0, 0.0]], dtype=torch.float64)
    distances = scored_jensen_shannon_distance(human, model)
    assert math.isnan(distances[0].item()) and distances[1].item() == pytest.approx(math.sqrt(math.log(2)))
    metrics = build_eval_metrics(num_labels=3)
    metrics.update(model, human, human.argmax(-1))
    results = metrics.compute()
    assert results["nonfinite_predictions"].item() == 1
    assert math.isnan(results["jsd"].item()) and math.isnan(results["jsd_bin0"].item() + results["jsd_bin1"].item()
                                                             + results["jsd_bin2"].item())


def test_human_votes_that_are_not_a_distribution_give_nan_not_zero():
    human = torch.tensor([[math.inf, 1.0, 0.0]], dtype=torch.float64)
    model = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    assert math.isnan(scored_jensen_shannon_distance(human, model).item())


def test_the_count_is_zero_for_distributions_and_summed_over_batches():
    probs, human = random_pairs(seed=3, n=10, k=3)
    metrics = build_eval_metrics(num_labels=3)
    metrics.update(probs, human, human.argmax(-1))
    assert metrics.compute()["nonfinite_predictions"].item() == 0
    probs[2:5] = math.nan
    metrics.update(probs, human, human.argmax(-1))
    assert metrics.compute()["nonfinite_predictions"].item() == 3


def test_mean_of_distances_not_distance_of_means():
    human = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    model = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    metric = JensenShannonDistance()
    metric.update(model, human)
    assert metric.compute().item() == pytest.approx(math.sqrt(math.log(2)))  # the means would both be [.5, .5]


def test_floor_matches_chaosnli():
    q = torch.tensor([[0.7, 0.3, 0.0], [1.0, 1e-16, -1e-16]], dtype=torch.float64)
    expected = np.stack([reference_floor(row) for row in q.numpy()])
    assert torch.allclose(floor_model_probs(q), torch.from_numpy(expected), rtol=0, atol=1e-18)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        JensenShannonDistance().update(torch.rand(4, 3), torch.rand(4, 2))


def test_states_stay_float64_when_the_module_is_cast():
    probs, human = random_pairs(seed=3, n=10, k=3)
    metric = JensenShannonDistance()
    metric.update(probs[:5], human[:5])
    torch.nn.ModuleDict({"m": metric}).to(torch.bfloat16)  # what Lightning's bf16-true precision does
    assert metric.value_sum.dtype == torch.float64
    metric.update(probs[5:], human[5:])
    assert metric.compute().item() == pytest.approx(reference("jsd", probs, human), abs=1e-12)


# --- entropy-binned JSD ------------------------------------------------------------------------------------------

def reference_bins(probs: torch.Tensor, human: torch.Tensor, num_bins: int) -> tuple[list, list]:
    k = human.shape[1]
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    sums, counts = [0.0] * num_bins, [0] * num_bins
    for h, p in zip(human.double().numpy(), probs.double().numpy()):
        normalised_entropy = scipy_entropy(h) / math.log(k)
        index = next((i for i in range(num_bins) if edges[i] <= normalised_entropy < edges[i + 1]), num_bins - 1)
        sums[index] += jensenshannon(h, p)
        counts[index] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts)], counts


@pytest.mark.parametrize("k,num_bins", [(3, 3), (2, 4), (28, 5)])
def test_binned_jsd_matches_reference(k, num_bins):
    probs, human = random_pairs(seed=11 + k, n=60, k=k, zero_share=0.3)
    metric = EntropyBinnedJSD(num_bins=num_bins, num_labels=k)
    metric.update(probs[:25], human[:25])
    metric.update(probs[25:], human[25:])
    expected_means, expected_counts = reference_bins(probs, human, num_bins)
    assert metric.bin_counts().tolist() == expected_counts
    np.testing.assert_allclose(metric.compute().numpy(), expected_means, atol=TOL)


def test_binned_jsd_edges_and_empty_bins():
    human = torch.tensor([[1.0, 0.0, 0.0],  # entropy 0: first bin
                          [1 / 3, 1 / 3, 1 / 3],  # normalised entropy 1: the last bin is closed
                          [0.5, 0.5, 0.0]])  # ln 2 / ln 3 = 0.63: second bin
    probs = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    metric = EntropyBinnedJSD(num_bins=3, num_labels=3)
    metric.update(probs, human)
    assert metric.bin_counts().tolist() == [1, 1, 1]
    means = metric.compute()
    assert means[0].item() == pytest.approx(math.sqrt(math.log(2)))
    assert means[1].item() == pytest.approx(0.0, abs=1e-12)
    assert means[2].item() == pytest.approx(jensenshannon(human[1].numpy(), probs[1].numpy()))

    only_certain = EntropyBinnedJSD(num_bins=2, num_labels=3)
    only_certain.update(probs[:1], human[:1])
    assert only_certain.bin_counts().tolist() == [1, 0]
    assert math.isnan(only_certain.compute()[1].item())


# --- the collection ----------------------------------------------------------------------------------------------

def test_collection_keys_and_flat_scalars():
    probs, human = random_pairs(seed=5, n=12, k=3)
    majority = human.argmax(-1)
    metrics = build_eval_metrics(num_labels=3, multilabel=True, entropy_bins=3)
    metrics.update(probs, human, majority, multilabel_target=(human >= 0.3).long())
    results = metrics.compute()
    assert set(results) == {"jsd", "kl", "accuracy", "f1_macro", "f1_micro", "f1_weighted", "entropy_model",
                            "entropy_human", "entropy_corr", "label_corr", "contested_auroc", "nonfinite_predictions",
                            "f1_multilabel",
                            "jsd_bin0", "jsd_bin1", "jsd_bin2", "n_bin0", "n_bin1", "n_bin2"}
    assert all(value.ndim == 0 for value in results.values())
    assert sum(results[f"n_bin{i}"].item() for i in range(3)) == 12
    assert results["jsd"].item() == pytest.approx(reference("jsd", probs, human), abs=TOL)

    prefixed = metrics.clone(prefix="val/")
    assert "val/jsd_bin2" in prefixed.compute()


def test_collection_without_bins_or_multilabel():
    metrics = build_eval_metrics(num_labels=4, entropy_bins=0)
    probs, human = random_pairs(seed=9, n=5, k=4)
    metrics.update(probs, human, human.argmax(-1))
    assert "jsd_bin0" not in metrics.compute() and "f1_multilabel" not in metrics.compute()
    with pytest.raises(ValueError, match="multilabel_target"):
        build_eval_metrics(num_labels=4, multilabel=True).update(probs, human, human.argmax(-1))


def test_collection_does_not_merge_metrics_that_agree_on_the_first_batch():
    # A first batch where the model equals the humans makes JSD's and KL's states both zero; automatic compute
    # groups would then tie the two metrics together for good.
    probs, human = random_pairs(seed=2, n=20, k=3)
    metrics = build_eval_metrics(num_labels=3)
    metrics.update(human[:4], human[:4], human[:4].argmax(-1))
    metrics.update(probs[4:], human[4:], human[4:].argmax(-1))
    all_probs = torch.cat([human[:4], probs[4:]])
    results = metrics.compute()
    assert results["jsd"].item() == pytest.approx(reference("jsd", all_probs, human), abs=TOL)
    assert results["kl"].item() == pytest.approx(reference("kl", all_probs, human), abs=TOL)
    assert results["entropy_model"].item() == pytest.approx(reference("entropy_model", all_probs, human), abs=TOL)
