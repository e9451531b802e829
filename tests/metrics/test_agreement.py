"""The agreement metrics: entropy and per-label Pearson correlations and the contested-pair AUROC, against hand-worked
cases and against scipy / sklearn on random data fed in several batches."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from shala_pl.metrics import ContestedAUROC, EntropyCorrelation, LabelCorrelation, build_eval_metrics
from shala_pl.metrics.agreement import auroc, contested_mask, pearson


def dist(*values) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


# six pairs whose human entropy rises with the index: the top third (2 of 6) is pairs 4 and 5
HUMAN = torch.tensor([dist(1, 0, 0), dist(9, 1, 0), dist(8, 1, 1), dist(6, 3, 1), dist(5, 4, 1), dist(1, 1, 1)],
                     dtype=torch.float64)


def scored(metric, probs, human=HUMAN) -> float:
    metric.update(probs, human)
    return metric.compute().item()


def test_pearson_by_hand():
    # x = 1, 2, 3 and y = 1, 3, 2: deviations (-1, 0, 1) and (-1, 1, 0), covariance 1, variances 2 and 2 -> 1/2
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])).item() == pytest.approx(0.5)
    assert math.isnan(pearson(torch.tensor([1.0, 2.0]), torch.tensor([4.0, 4.0])).item())  # no variance


def test_a_model_equal_to_the_humans_correlates_perfectly():
    assert scored(EntropyCorrelation(), HUMAN) == pytest.approx(1.0)
    assert scored(LabelCorrelation(), HUMAN) == pytest.approx(1.0)
    assert scored(ContestedAUROC(), HUMAN) == pytest.approx(1.0)


def test_a_constant_prediction_tracks_nothing():
    constant = torch.tensor([dist(4, 4, 2)] * 6, dtype=torch.float64)
    assert math.isnan(scored(EntropyCorrelation(), constant))  # undefined, as scipy says: not 0 and not 1
    assert math.isnan(scored(LabelCorrelation(), constant))
    assert scored(ContestedAUROC(), constant) == pytest.approx(0.5)  # every pair tied: chance


def test_contested_auroc_by_hand():
    # model entropies ranking pair 5 first, then pair 0 (a clear pair), then pair 4: of the 2 x 4 (contested, clear)
    # pairs, pair 5 is above all 4 clear ones and pair 4 above 3 of them -> 7/8
    probs = torch.tensor([dist(5, 4, 1), dist(1, 0, 0), dist(9, 1, 0), dist(8, 1, 1), dist(6, 3, 1), dist(1, 1, 1)],
                         dtype=torch.float64)
    assert scored(ContestedAUROC(), probs) == pytest.approx(7 / 8)
    reversed_order = torch.flip(HUMAN, dims=[0])
    assert scored(ContestedAUROC(), reversed_order) == pytest.approx(0.0)
    assert scored(EntropyCorrelation(), reversed_order) < -0.5


def test_pairs_tied_at_the_top_third_boundary_are_all_contested():
    entropies = torch.tensor([0.1, 0.5, 0.5, 0.9])  # top ceil(4/3) = 2: 0.9 and the first 0.5, and so its tie too
    assert contested_mask(entropies).tolist() == [False, True, True, True]
    assert contested_mask(torch.tensor([0.3, 0.3, 0.3])).all()
    assert math.isnan(auroc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([True, True, True])).item())


def random_pairs(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    human = torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), -1)
    human = torch.round(human * 20) / 20 + 1e-3  # 20-vote-like shares: ties in human entropy
    probs = 0.5 * torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64), -1) + 0.5 * human
    return probs.float(), (human / human.sum(-1, keepdim=True)).double()


@pytest.mark.parametrize("seed,n,k", [(0, 40, 3), (1, 61, 2), (2, 90, 5)])
def test_against_scipy_and_sklearn_over_several_batches(seed, n, k):
    probs, human = random_pairs(seed, n, k)
    metrics = {"entropy_corr": EntropyCorrelation(), "label_corr": LabelCorrelation(),
               "contested_auroc": ContestedAUROC()}
    for start in range(0, n, 17):
        for metric in metrics.values():
            metric.update(probs[start:start + 17], human[start:start + 17])
    p, h = probs.double().numpy(), human.double().numpy()
    p = p / p.sum(-1, keepdims=True)
    model_entropy, human_entropy = scipy_entropy(p, axis=-1), scipy_entropy(h, axis=-1)
    top = np.sort(human_entropy)[::-1][math.ceil(n / 3) - 1]
    expected = {
        "entropy_corr": pearsonr(model_entropy, human_entropy).statistic,
        "label_corr": np.mean([pearsonr(p[:, j], h[:, j]).statistic for j in range(k)]),
        "contested_auroc": roc_auc_score(human_entropy >= top, model_entropy),
    }
    for name, metric in metrics.items():
        assert metric.compute().item() == pytest.approx(expected[name], abs=1e-9), name


def test_in_the_eval_collection_sharing_one_state_and_kept_float64_under_a_bfloat16_cast():
    probs, human = random_pairs(3, 30, 3)
    collection = build_eval_metrics(3).to(torch.bfloat16)
    collection.update(probs, human, human.argmax(-1))
    values = collection.compute()
    alone = EntropyCorrelation()
    alone.update(probs, human)
    assert values["entropy_corr"].item() == pytest.approx(alone.compute().item(), abs=1e-12)
    assert {"entropy_corr", "label_corr", "contested_auroc"} <= set(values)
    assert collection["entropy_corr"].probs[0].dtype == torch.float64
    collection.reset()
    collection.update(probs[:10], human[:10], human[:10].argmax(-1))
    assert sum(len(rows) for rows in collection["contested_auroc"].human) == 10  # reset empties the shared rows
