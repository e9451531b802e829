"""``tools/generate_fixed_point.py``: the exact expected update of generate mode's log score, and where it leads on
the synthetic task."""

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from generate_fixed_point import ESTIMATORS, ExpectedUpdate, synthetic  # noqa: E402


def test_the_update_for_several_distributions_is_the_mean_of_their_updates():
    humans = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.0, 0.5, 0.5]], dtype=torch.float64)
    policy = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    for estimator in ESTIMATORS.values():
        together = ExpectedUpdate(humans, 4, estimator)(policy)
        one_by_one = torch.stack([ExpectedUpdate(h, 4, estimator)(policy) for h in humans]).mean(0)
        torch.testing.assert_close(together, one_by_one)
        assert together.abs().max() > 1e-3  # pi is far from these p's: a real update, not zero


def test_on_the_synthetic_task_the_shipped_estimator_lands_within_the_noise_floor():
    """Each concept's examples carry 20 votes from its true distribution: the shipped estimator's fixed point for a
    concept is close to the truth, well inside the votes' own noise; the plug-in histogram's is not at G = 4."""
    floor, means = synthetic([4], steps=300, n_examples=240)
    assert 0.05 < floor < 0.2
    assert means[4, "shipped"] < floor / 2  # 10 examples a concept: their pooled votes still miss the truth
    assert means[4, "plug-in"] > floor
