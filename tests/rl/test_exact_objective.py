"""``shala_exact``: label mode's log-score objective in closed form, and what the sampled estimator estimates.

Hand-worked on K=3 labels with fixed logits: every outcome of G sampled labels is enumerated with its probability,
so the sampled estimator's expected gradient is computed exactly (no Monte-Carlo tolerance).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from shala_pl.errors import ConfigValueError
from shala_pl.rl.advantages import group_advantages
from shala_pl.rl.losses import LossSettings, exact_label_loss, grpo_loss
from shala_pl.rl.advantages import exact_label_advantages
from shala_pl.rl.rewards import log_score_reward

HUMAN = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64)  # [B, K]
LOGITS = torch.tensor([[0.3, -0.2, 0.5], [1.0, 0.0, -0.7]], dtype=torch.float64)  # [B, K]
WEIGHTS = torch.tensor([0.8, 1.2], dtype=torch.float64)  # ambiguity weights, mean 1
SETTINGS = LossSettings(aggregation="dr_grpo")


def _exact_gradient(settings: LossSettings = SETTINGS, ref_logp=None) -> tuple[torch.Tensor, object]:
    logits = LOGITS.clone().requires_grad_(True)
    logp = torch.log_softmax(logits, -1)
    advantages = exact_label_advantages(HUMAN, logp.exp().detach())
    out = exact_label_loss(logp, logp.detach(), ref_logp, advantages, WEIGHTS, settings)
    out.loss.backward()
    return logits.grad, out


def _sampled_gradient(choices: torch.Tensor) -> torch.Tensor:
    """The module's sampled path for one outcome: log-score rewards, group-mean advantages, the clipped loss."""
    logits = LOGITS.clone().requires_grad_(True)
    logp_all = torch.log_softmax(logits, -1)  # [B, K]
    probs = logp_all.exp().detach()
    rewards = log_score_reward(choices, HUMAN, probs)  # [B, G]
    advantages = group_advantages(rewards, "none")  # [B, G]
    logp = logp_all.gather(1, choices).reshape(-1, 1)  # [B*G, 1]
    group = choices.shape[1]
    out = grpo_loss(logp, logp.detach(), None, advantages.reshape(-1), WEIGHTS.repeat_interleave(group),
                    torch.ones_like(logp, dtype=torch.long), SETTINGS, max_length=1)
    out.loss.backward()
    return logits.grad


@pytest.mark.parametrize("group", [2, 3])
def test_exact_gradient_equals_the_sampled_estimators_expectation(group):
    """E[sampled gradient] = (G-1)/G x exact gradient, exactly: enumerate all K^(B*G) outcomes (9^G here).

    The factor: the group mean includes the scored answer itself, so A_g = (1-1/G) r_g - (1/G) sum_{j!=g} r_j and
    the second term has zero expected score; E[A_g grad log pi_{k_g}] = (1-1/G) sum_k r_k grad pi_k.
    """
    probs = torch.softmax(LOGITS, -1)
    num_prompts, num_labels = LOGITS.shape
    expected = torch.zeros_like(LOGITS)
    total_probability = 0.0
    for outcome in itertools.product(range(num_labels), repeat=num_prompts * group):
        choices = torch.tensor(outcome).view(num_prompts, group)
        probability = float(probs.gather(1, choices).prod())
        expected += probability * _sampled_gradient(choices)
        total_probability += probability
    assert total_probability == pytest.approx(1.0, abs=1e-12)
    exact, _ = _exact_gradient()
    assert torch.allclose(expected, (group - 1) / group * exact, atol=1e-12, rtol=0)
    assert exact.abs().max() > 0.05  # a real gradient, not two zeros agreeing


def test_exact_gradient_is_the_gradient_of_minus_kl_by_hand():
    """The closed form by hand: d/dz of -sum_b w_b sum_k pi_k (log(p_k + eps) - log(pi_k + eps)) / B with the
    reward's pi held fixed, i.e. -sum_k r_k dpi_k/dz_j = -pi_j (r_j - sum_k pi_k r_k)."""
    exact, out = _exact_gradient()
    probs = torch.softmax(LOGITS, -1)
    reward = torch.log(HUMAN + 1e-3) - torch.log(probs + 1e-3)
    by_hand = -WEIGHTS.unsqueeze(-1) * probs * (reward - (probs * reward).sum(-1, keepdim=True)) / 2
    assert torch.allclose(exact, by_hand, atol=1e-14)
    assert float(out.loss.detach()) == pytest.approx(0.0, abs=1e-14)  # sum_k pi_k A_k = 0 at rho = 1 (beta 0)
    assert float(out.clip_ratio) == 0.0


def test_exact_kl_penalty_to_the_reference_is_the_full_kl_over_labels():
    ref_logp = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64))
    beta = 0.5
    with_kl, out = _exact_gradient(LossSettings(beta=beta), ref_logp)
    without, _ = _exact_gradient()
    probs = torch.softmax(LOGITS, -1)
    kl = (probs * (probs.log() - ref_logp)).sum(-1)  # [B]
    assert float(out.kl) == pytest.approx(float(kl.mean()), abs=1e-14)
    # d KL(pi || ref) / dz_j = pi_j (log pi_j - log ref_j - KL)
    kl_grad = probs * (probs.log() - ref_logp - kl.unsqueeze(-1)) / 2
    assert torch.allclose(with_kl - without, beta * kl_grad, atol=1e-14)


def test_gradient_descent_on_the_exact_objective_reaches_p():
    """Optimum of the exact objective: pi = p (up to eps), not the mode."""
    logits = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=5.0)
    for _ in range(600):
        logp = torch.log_softmax(logits, -1)
        advantages = exact_label_advantages(HUMAN, logp.exp().detach())
        out = exact_label_loss(logp, logp.detach(), None, advantages, torch.ones(2, dtype=torch.float64), SETTINGS)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert torch.allclose(torch.softmax(logits, -1), HUMAN, atol=2e-3)


def test_clipping_stops_the_exact_surrogate_beyond_the_trust_region():
    """A second iteration (rho != 1): labels whose ratio left [1 - eps_low, 1 + eps_high] in the advantage's
    direction get no gradient, as in the sampled loss."""
    old_logp = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    logp = torch.log(torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)).requires_grad_(True)  # rho = 1.4, .67, .5
    advantages = torch.tensor([[1.0, -1.0, 1.0]], dtype=torch.float64)
    out = exact_label_loss(logp, old_logp, None, advantages, torch.ones(1, dtype=torch.float64), SETTINGS)
    out.loss.backward()
    # label 0: rho 1.4 > 1.28 with A > 0: clipped; label 1: rho 0.67 < 0.8 with A < 0: clipped; label 2: A > 0, free
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == 0
    assert float(logp.grad[0, 2]) == pytest.approx(-0.2 * 0.5 * 1.0)  # -pi_old * rho * A
    assert float(out.clip_ratio) == pytest.approx(0.8)  # pi_old-weighted share: 0.5 + 0.3
    assert math.isclose(float(out.clip_ratio_low), 0.3) and math.isclose(float(out.clip_ratio_high), 0.5)


@pytest.mark.parametrize("options, message", [
    ({"objective": "exact", "rollout": {"mode": "generate"}}, "objective must be 'sampled' unless rollout.mode"),
    ({"objective": "exact", "rewards": {"majority": 1.0}}, "objective must be 'sampled' unless rewards"),
    ({"objective": "exact", "advantage_scaling": "group"}, "objective must be 'sampled' unless advantage_scaling"),
    ({"objective": "closed"}, "objective must be one of sampled, exact"),
])
def test_module_refuses_the_exact_objective_where_it_does_not_apply(tiny_model_dir, options, message):
    from shala_pl.modules.grpo import GRPOModule
    from shala_pl.rl.rollout import RolloutSettings

    if "rollout" in options:
        options = {**options, "rollout": RolloutSettings(**options["rollout"])}
    with pytest.raises(ConfigValueError, match=message):
        GRPOModule(name_or_path=str(tiny_model_dir), label_names=["a", "b"], verbalizers=["yes", "no"], **options)
