"""The GRPO-family loss terms, checked against numbers worked out by hand."""

import math

import pytest
import torch

from shala_pl.rl.losses import LossSettings, aggregate, clipped_surrogate, grpo_loss, k3_kl


def test_surrogate_is_minus_advantage_when_policy_equals_rollout_policy():
    logp = torch.tensor([[-1.0, -2.0]])
    per_token, clipped = clipped_surrogate(logp, logp, torch.tensor([0.5]), 0.2, 0.28)
    assert torch.allclose(per_token, torch.tensor([[-0.5, -0.5]]))
    assert not clipped.any()


def test_surrogate_clips_ratio_above_one_plus_eps_high_for_positive_advantage():
    # ratio = e^{0.5} = 1.6487 > 1.28: the clipped term 1.28 * 1 is the minimum, so loss = -1.28
    per_token, clipped = clipped_surrogate(torch.tensor([[0.0]]), torch.tensor([[-0.5]]), torch.tensor([1.0]), 0.2, 0.28)
    assert per_token.item() == pytest.approx(-1.28)
    assert clipped.all()


def test_surrogate_clips_ratio_below_one_minus_eps_low_for_negative_advantage():
    # ratio = e^{-1} = 0.3679; with A = -2: unclipped -0.7358, clipped 0.8 * -2 = -1.6; min is -1.6 -> loss 1.6
    per_token, clipped = clipped_surrogate(torch.tensor([[-1.0]]), torch.tensor([[0.0]]), torch.tensor([-2.0]), 0.2, 0.28)
    assert per_token.item() == pytest.approx(1.6)
    assert clipped.all()


def test_surrogate_does_not_clip_in_the_pessimistic_direction():
    # ratio 0.3679 with A = +1: unclipped 0.3679 < clipped 0.8, min keeps the unclipped value
    per_token, clipped = clipped_surrogate(torch.tensor([[-1.0]]), torch.tensor([[0.0]]), torch.tensor([1.0]), 0.2, 0.28)
    assert per_token.item() == pytest.approx(-math.exp(-1.0))
    assert not clipped.any()


def test_k3_is_zero_at_equal_policies_and_matches_formula():
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0
    # r = ref - logp = -0.5: e^{-0.5} + 0.5 - 1 = 0.10653
    assert k3_kl(torch.tensor([0.0]), torch.tensor([-0.5])).item() == pytest.approx(math.exp(-0.5) - 0.5)


def test_aggregations_on_unequal_lengths():
    values = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # grpo: mean of per-sequence means = (2 + 2) / 2
    assert aggregate(values, mask, "grpo").item() == pytest.approx(2.0)
    # dr_grpo: sum 6 / (2 sequences * max length 4)
    assert aggregate(values, mask, "dr_grpo", max_length=4).item() == pytest.approx(0.75)
    # dapo: sum 6 / 3 tokens; over a larger batch (other micro-batches, other ranks) of 12 tokens: 6 / 12
    assert aggregate(values, mask, "dapo").item() == pytest.approx(2.0)
    assert aggregate(values, mask, "dapo", num_tokens=torch.tensor(12.0)).item() == pytest.approx(0.5)
    # bnpo: these rows' own token mean whatever the batch
    assert aggregate(values, mask, "bnpo").item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(values, mask, "mean")


def test_grpo_loss_weights_sequences_and_adds_beta_kl():
    logp = torch.tensor([[-1.0], [-1.0]], requires_grad=True)
    ref = torch.tensor([[-1.5], [-1.0]])
    out = grpo_loss(logp, logp.detach(), ref, torch.tensor([1.0, -1.0]), torch.tensor([2.0, 1.0]),
                    torch.ones(2, 1, dtype=torch.long), LossSettings(beta=0.1, aggregation="dapo"))
    # policy: (-1*2 + 1*1) / 2 = -0.5 ; kl: (e^{-0.5} + 0.5 - 1 + 0) / 2
    kl = (math.exp(-0.5) - 0.5) / 2
    assert out.kl.item() == pytest.approx(kl)
    assert out.loss.item() == pytest.approx(-0.5 + 0.1 * kl)
    out.loss.backward()
    # d/dlogp of -A*w*ratio at ratio 1 is -A*w / 2 (dapo mean over 2 tokens), plus the kl term
    assert logp.grad[1, 0].item() == pytest.approx(0.5)


def test_beta_zero_needs_no_reference():
    out = grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), None, torch.ones(1), torch.ones(1),
                    torch.ones(1, 1), LossSettings(beta=0.0))
    assert out.kl.item() == 0.0
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), None, torch.ones(1), torch.ones(1), torch.ones(1, 1),
                  LossSettings(beta=0.1))


def test_clip_ratio_splits_into_low_and_high():
    # token 1: A > 0, ratio e^0.5 > 1.28 (clipped high); token 2: A < 0, ratio e^-1 < 0.8 (clipped low);
    # token 3: A > 0, ratio e^-1 (pessimistic side, not clipped); token 4: masked out
    logp = torch.tensor([[0.0], [-1.0], [-1.0], [0.0]])
    old = torch.tensor([[-0.5], [0.0], [0.0], [-0.5]])
    out = grpo_loss(logp, old, None, torch.tensor([1.0, -2.0, 1.0, 1.0]), torch.ones(4),
                    torch.tensor([[1], [1], [1], [0]]), LossSettings())
    assert out.clip_ratio.item() == pytest.approx(2 / 3)
    assert out.clip_ratio_low.item() == pytest.approx(1 / 3)
    assert out.clip_ratio_high.item() == pytest.approx(1 / 3)
