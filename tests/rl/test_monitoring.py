"""What a training step reports (``shala_pl/rl/monitoring.py``)."""

import torch

from shala_pl.rl.monitoring import correlation, zero_std_groups


def test_groups_without_reward_spread_are_counted():
    rewards = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.5, 0.5], [-1.0, -1.0, -1.0]])
    assert zero_std_groups(rewards).tolist() == [True, False, True]


def test_weight_entropy_correlation_is_pearsons():
    a, b = torch.tensor([1.0, 2.0, 4.0, 3.0]), torch.tensor([0.1, 0.5, 0.2, 0.9])
    torch.testing.assert_close(correlation(a, b), torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert float(correlation(torch.ones(3), b[:3])) == 0.0  # constant weights: 0, not NaN
