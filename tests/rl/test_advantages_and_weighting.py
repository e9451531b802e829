"""Group-relative advantages and ambiguity weights."""

import math

import pytest
import torch

from shala_pl.rl.advantages import group_advantages
from shala_pl.rl.weighting import (
    AmbiguityWeighting,
    PolicyGapTracker,
    normalize_to_mean_one,
    normalized_entropy,
    raw_weights,
)

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])


def test_advantages_subtract_the_group_mean():
    adv = group_advantages(REWARDS, "none")
    assert adv.tolist() == [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]


def test_group_scaling_divides_by_each_groups_sample_std():
    adv = group_advantages(REWARDS, "group", eps=0.0)
    std = math.sqrt(1 / 3)  # sample std of [1, 0, 0, 1]
    assert adv[0, 0].item() == pytest.approx(0.5 / std)
    assert adv[1].abs().sum().item() == 0.0


def test_batch_scaling_uses_a_given_global_std():
    adv = group_advantages(REWARDS, "batch", batch_std=torch.tensor(2.0), eps=0.0)
    assert adv[0, 0].item() == pytest.approx(0.25)


def test_normalized_entropy_is_zero_for_one_hot_and_one_for_uniform():
    h = normalized_entropy(torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]]))
    assert h.tolist() == [pytest.approx(0.0), pytest.approx(1.0), pytest.approx(math.log(2) / math.log(3))]


def test_weights_grow_with_entropy_and_have_mean_one():
    entropy = torch.tensor([0.0, 0.5, 1.0])
    w = raw_weights(entropy, None, strength=2.0, dynamic_strength=0.0)
    assert w.tolist() == [1.0, 2.0, 3.0]
    normalised = normalize_to_mean_one(w, w.sum(), torch.tensor(3.0))
    assert normalised.mean().item() == pytest.approx(1.0)
    assert normalised.tolist() == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]


def test_dynamic_term_adds_the_policy_gap():
    w = raw_weights(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.5]), strength=1.0, dynamic_strength=2.0)
    assert w.tolist() == [1.0, 2.0]


def test_strength_warms_up_linearly():
    schedule = AmbiguityWeighting(strength=2.0, warmup_steps=10)
    assert [schedule.strength_at(s) for s in (0, 5, 10, 20)] == [0.0, 1.0, 2.0, 2.0]
    assert not AmbiguityWeighting(strength=0.0).enabled


def test_policy_gap_tracker_is_an_ema_per_example_and_unseen_read_the_mean():
    tracker = PolicyGapTracker(4, decay=0.5)
    tracker.update(torch.tensor([0, 1]), torch.tensor([0.2, 0.4]))
    tracker.update(torch.tensor([0]), torch.tensor([0.6]))
    assert tracker.read(torch.tensor([0, 1])).tolist() == [pytest.approx(0.4), pytest.approx(0.4)]
    assert tracker.read(torch.tensor([3])).item() == pytest.approx(0.4)  # mean of seen
    assert "ema" in tracker.state_dict()
