"""Rewards against the human distribution, and which optimum each one has."""

import itertools
import math

import pytest
import torch

from shala_pl.metrics.distribution import jensen_shannon_distance
from shala_pl.rl.advantages import group_advantages
from shala_pl.rl.rewards import (
    answer_histogram,
    compute_rewards,
    group_jsd_reward,
    leave_one_out_histogram,
    log_score_reward,
    majority_reward,
    truncated_log,
    vote_share_reward,
)

HUMAN = torch.tensor([[0.6, 0.3, 0.1]])


def test_log_score_is_log_vote_share_minus_log_policy():
    policy = torch.tensor([[0.5, 0.25, 0.25]])
    r = log_score_reward(torch.tensor([[0, 2]]), HUMAN, policy, eps=0.0)
    assert r[0, 0].item() == pytest.approx(math.log(0.6 / 0.5))
    assert r[0, 1].item() == pytest.approx(math.log(0.1 / 0.25))


def test_expected_log_score_is_maximised_by_matching_p_not_the_mode():
    """E_pi[log p - log pi] = -KL(pi || p): zero at pi = p, negative at the mode."""
    def expected(policy):
        choices = torch.arange(3).view(1, 3)
        return (policy * log_score_reward(choices, HUMAN, policy, eps=0.0)).sum().item()

    assert expected(HUMAN) == pytest.approx(0.0, abs=1e-7)
    near_mode = torch.tensor([[0.98, 0.01, 0.01]])
    assert expected(near_mode) < -0.3


def test_vote_share_and_majority_rewards_are_maximised_at_the_mode():
    choices = torch.arange(3).view(1, 3)
    for reward in (vote_share_reward(choices, HUMAN), majority_reward(choices, torch.tensor([0]))):
        mode_value = reward[0, 0].item()
        matched_value = (HUMAN * reward).sum().item()
        assert mode_value > matched_value


def test_group_jsd_rewards_answers_that_move_the_histogram_toward_p():
    human = torch.tensor([[0.5, 0.5, 0.0]])
    choices = torch.tensor([[0, 0, 0, 1]])  # histogram 0.75/0.25; label 1 is under-represented
    r = group_jsd_reward(choices, human)
    assert r[0, 3] > 0  # removing the only "1" would make the histogram worse
    assert r[0, 0] < 0  # each extra "0" pulls away from p
    # hand check of the last answer: JSD([1,0,0], p) - JSD([.75,.25,0], p)
    expected = jensen_shannon_distance(torch.tensor([1.0, 0, 0]), human[0]) - jensen_shannon_distance(
        torch.tensor([0.75, 0.25, 0]), human[0])
    assert r[0, 3].item() == pytest.approx(expected.item(), abs=1e-6)


def test_histogram_ignores_invalid_answers_and_is_uniform_when_all_invalid():
    hist = answer_histogram(torch.tensor([[0, 0, -1, 2], [-1, -1, -1, -1]]), 3)
    assert torch.allclose(hist[0], torch.tensor([2 / 3, 0.0, 1 / 3]))
    assert torch.allclose(hist[1], torch.full((3,), 1 / 3))


def test_invalid_answers_get_the_lowest_valid_reward_and_format_component_separates_them():
    choices = torch.tensor([[0, 1, -1]])
    total, parts = compute_rewards({"vote_share": 1.0, "format": 0.5}, choices, HUMAN, torch.tensor([0]),
                                   torch.full((1, 3), 1 / 3))
    assert parts["vote_share"].tolist() == [[pytest.approx(0.6), pytest.approx(0.3), pytest.approx(0.3)]]
    assert parts["format"].tolist() == [[1.0, 1.0, 0.0]]
    assert total[0].tolist() == [pytest.approx(1.1), pytest.approx(0.8), pytest.approx(0.3)]


def test_explicit_invalid_reward_and_unknown_names():
    total, _ = compute_rewards({"majority": 1.0}, torch.tensor([[-1, 0]]), HUMAN, torch.tensor([0]),
                               HUMAN, invalid_reward=-1.0)
    assert total.tolist() == [[-1.0, 1.0]]
    with pytest.raises(ValueError, match="unknown reward"):
        compute_rewards({"accuracy": 1.0}, torch.tensor([[0]]), HUMAN, torch.tensor([0]), HUMAN)


def test_group_jsd_is_zero_without_a_rest_of_the_group():
    human = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]])
    # one valid answer (the mode, or the minority label), then none: nothing to compare with, reward 0
    choices = torch.tensor([[0, -1, -1], [1, -1, -1], [-1, -1, -1]])
    assert group_jsd_reward(choices, human).tolist() == [[0.0, 0.0, 0.0]] * 3
    # two valid answers: leave-one-out is defined again, and the mode is worth more than the minority label
    two = group_jsd_reward(torch.tensor([[0, 1, -1]]), human[:1])
    assert two[0, 0] > two[0, 1] and two[0, 2] == 0.0


def test_leave_one_out_histogram_by_hand():
    """Each answer sees the other answers of its group plus 1/K pseudo-count per label (K=3: 1/3 each)."""
    loo = leave_one_out_histogram(torch.tensor([[0, 0, 1, 2], [0, -1, 0, 0]]), 3)  # [B, G, K]
    third = 1 / 3
    # answer 0 (label 0): others 0, 1, 2 -> counts (1, 1, 1) + 1/3, over 3 + 1
    assert torch.allclose(loo[0, 0], torch.tensor([4 * third / 4] * 3))
    # answer 2 (label 1): others 0, 0, 2 -> (2 + 1/3, 1/3, 1 + 1/3) / 4
    assert torch.allclose(loo[0, 2], torch.tensor([7 / 12, 1 / 12, 4 / 12]))
    # an invalid answer is not in anyone's histogram; its own row is all three valid answers
    assert torch.allclose(loo[1, 0], torch.tensor([(2 + third) / 3, third / 3, third / 3]))
    assert torch.allclose(loo[1, 1], torch.tensor([(3 + third) / 4, third / 4, third / 4]))


def test_leave_one_out_estimate_does_not_depend_on_the_scored_answer():
    """What answer g said never changes the estimate its own reward uses."""
    base = torch.tensor([[0, 1, 1, 2, 0, 0, 1, 2]])
    for label in range(3):
        changed = base.clone()
        changed[0, 3] = label
        assert torch.equal(leave_one_out_histogram(changed, 3)[0, 3], leave_one_out_histogram(base, 3)[0, 3])


def test_generate_mode_log_score_by_hand():
    """One estimate per answer (generate mode): r = T_{n-1}(p_k) - (H_c - H_n), n the other valid answers, c those
    of them with the same label, T_m(p) = -sum_{j<=m} (1-p)^j / j; an invalid answer is nobody's 'other'."""
    choices = torch.tensor([[0, 0, 1, 2], [0, -1, 0, 2]])
    human = HUMAN.expand(2, 3)
    r = log_score_reward(choices, human, leave_one_out_histogram(choices, 3))
    t2 = lambda p: -((1 - p) + (1 - p) ** 2 / 2)  # noqa: E731  (n = 3 others)
    t1 = lambda p: -(1 - p)  # noqa: E731  (n = 2 others)
    h = [0.0, 1.0, 1.5, 11 / 6]  # H_0 .. H_3
    expected = [[t2(0.6) - (h[1] - h[3]), t2(0.6) - (h[1] - h[3]), t2(0.3) - (h[0] - h[3]), t2(0.1) - (h[0] - h[3])],
                [t1(0.6) - (h[1] - h[2]), 0.0, t1(0.6) - (h[1] - h[2]), t1(0.1) - (h[0] - h[2])]]
    valid = choices >= 0
    torch.testing.assert_close(r[valid], torch.tensor(expected)[valid])


def test_generate_mode_log_score_does_not_depend_on_the_scored_answer_beyond_its_label():
    """Answer g's policy term comes from the others: changing another answer to g's label lowers g's reward,
    changing g itself to another label changes only the label it is scored at."""
    base = torch.tensor([[0, 1, 1, 2, 0, 0, 1, 2]])
    human = HUMAN
    r = log_score_reward(base, human, leave_one_out_histogram(base, 3))
    crowded = base.clone()
    crowded[0, 1] = 0  # one more other answer says label 0
    assert log_score_reward(crowded, human, leave_one_out_histogram(crowded, 3))[0, 0] < r[0, 0]


def _expected_logit_update(human: torch.Tensor, policy: torch.Tensor, group: int, rewards=None) -> torch.Tensor:
    """E over all K^G outcomes of the sampled update direction w.r.t. the logits (mean over the group of
    advantage x grad log pi), through the real reward and advantage code; ``rewards`` maps (outcomes, human)
    to [O, G] (default: the shipped generate-mode log score)."""
    num_labels = human.shape[0]
    outcomes = torch.tensor(list(itertools.product(range(num_labels), repeat=group)))  # [O, G]
    probability = policy[outcomes].prod(-1)  # [O]
    humans = human.expand(len(outcomes), num_labels)
    if rewards is None:
        value, _ = compute_rewards({"log_score": 1.0}, outcomes, humans, humans.argmax(-1),
                                   leave_one_out_histogram(outcomes, num_labels).double())
    else:
        value = rewards(outcomes, humans)
    advantages = group_advantages(value, "none")  # [O, G]
    score = torch.nn.functional.one_hot(outcomes, num_labels).double() - policy  # [O, G, K]: d log pi_k / d z
    return (probability[:, None] * (advantages.unsqueeze(-1) * score).mean(1)).sum(0)


def _plug_in_log_score(outcomes, humans, eps=1e-3):
    """The estimator generate mode used before: log(p_k + eps) - log(leave-one-out histogram_k + eps)."""
    loo = leave_one_out_histogram(outcomes, humans.shape[1]).double()
    chosen = loo.gather(2, outcomes.unsqueeze(-1)).squeeze(-1)
    return torch.log(humans.gather(1, outcomes) + eps) - torch.log(chosen + eps)


SMALL_LABELS = [(0.9, 0.08, 0.02), (0.5, 0.45, 0.05), (0.6, 0.3, 0.1), (0.97, 0.02, 0.01)]


@pytest.mark.parametrize("group", [3, 4, 8])
@pytest.mark.parametrize("human", SMALL_LABELS)
def test_generate_mode_log_score_leaves_p_exactly_stationary(human, group):
    """At pi = p the expected update is 0, labels under 1/(K G) included; the plug-in histogram estimate's is not."""
    p = torch.tensor(human, dtype=torch.float64)
    assert _expected_logit_update(p, p, group).abs().max() < 1e-12
    if group > 3:
        assert _expected_logit_update(p, p, group, _plug_in_log_score).abs().max() > 1e-3


def test_generate_mode_expected_update_is_the_gradient_of_a_divergence_minimised_at_p():
    """Away from p, the expected update is (G-1)/G times the gradient of -D(pi || p), D the Bregman divergence
    generated by T_{G-2}: sum_k (T(p_k) - T(pi_k)) grad pi_k."""
    group = 5
    p = torch.tensor([0.7, 0.25, 0.05], dtype=torch.float64)
    logits = torch.tensor([0.4, -0.3, 0.9], dtype=torch.float64, requires_grad=True)
    policy = torch.softmax(logits, -1)
    terms = torch.full((3,), float(group - 2), dtype=torch.float64)
    gap = truncated_log(p, terms, group - 2) - truncated_log(policy.detach(), terms, group - 2)  # [K]
    (divergence_gradient,) = torch.autograd.grad((policy * gap).sum(), logits)
    update = _expected_logit_update(p, policy.detach(), group)
    torch.testing.assert_close(update, (group - 1) / group * divergence_gradient)


def test_generate_mode_log_score_flows_to_p_where_the_plug_in_estimate_drops_small_labels():
    """Following the expected update from uniform (G = 4, natural-gradient steps on the logits): the shipped
    estimator ends at p = (.9, .08, .02); the plug-in histogram ends with the 0.02 label gone."""
    p = torch.tensor([0.9, 0.08, 0.02], dtype=torch.float64)
    ends = {}
    for name, rewards in (("shipped", None), ("plug-in", _plug_in_log_score)):
        logits = torch.zeros(3, dtype=torch.float64)
        for _ in range(600):
            policy = torch.softmax(logits, -1)
            logits = logits + _expected_logit_update(p, policy, 4, rewards) / policy
        ends[name] = torch.softmax(logits, -1)
    torch.testing.assert_close(ends["shipped"], p, atol=1e-4, rtol=0)
    assert ends["plug-in"][2] < 0.005 and jensen_shannon_distance(ends["plug-in"], p) > 0.1


def test_generate_mode_log_score_carries_nothing_of_p_with_two_answers():
    """With one other answer the estimate of log pi carries nothing of p: the expected update is 0 for every pi
    (so GRPOModule refuses G = 2 with it, tests/rl/test_config_checks.py)."""
    p = torch.tensor([0.7, 0.25, 0.05], dtype=torch.float64)
    assert _expected_logit_update(p, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), 2).abs().max() < 1e-12


def test_forward_kl_reward_has_forward_kl_as_its_expected_gradient():
    """Enumerating every label k ~ pi: E[r_k grad log pi_k] = -grad KL(p || pi), soft-label cross-entropy's
    gradient, and not the reverse direction's."""
    from shala_pl.rl.rewards import forward_kl_reward

    logits = torch.tensor([[0.3, -1.2, 0.8]], dtype=torch.float64, requires_grad=True)
    human = HUMAN.double()
    policy = torch.softmax(logits, -1)
    every_label = torch.arange(3).view(1, 3)
    reward = forward_kl_reward(every_label, human, policy.detach(), eps=0.0)  # [1, K]: r for each label
    surrogate = (policy.detach() * reward * torch.log_softmax(logits, -1)).sum()  # sum_k pi_k r_k log pi_k
    (expected_gradient,) = torch.autograd.grad(surrogate, logits)

    forward_kl = (human * (torch.log(human) - torch.log_softmax(logits, -1))).sum()
    (forward_gradient,) = torch.autograd.grad(-forward_kl, logits)
    torch.testing.assert_close(expected_gradient, forward_gradient)
    reverse_kl = (policy * (torch.log_softmax(logits, -1) - torch.log(human))).sum()
    (reverse_gradient,) = torch.autograd.grad(-reverse_kl, logits)
    assert (expected_gradient - reverse_gradient).abs().max() > 0.05
    assert (policy.detach() * reward).sum().item() == pytest.approx(1.0)  # E[r] = 1: a baseline changes nothing
