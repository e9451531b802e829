"""Rewards for a group of answers, computed against the human vote distribution p.

Every reward takes the chosen label indices ``choices`` [B, G] (-1 = unparseable answer) and returns [B, G].

Which reward optimises what:
- ``log_score`` (SHALA's default): r = log(p_k + eps) - log pi(k|x). Its expectation under the policy is
  -KL(pi || p) (up to the eps smoothing), so the optimum is pi(.|x) = p: the policy keeps the minority labels
  at their human rates instead of collapsing to the mode. ``pi`` is the policy's exact label distribution in
  ``label`` mode and, in ``generate`` mode, each answer's leave-one-out histogram of the rest of its group
  (``leave_one_out_histogram``). ``exact_label_advantages`` is its closed-form expectation over every label
  (``shala_exact``).
- ``group_jsd``: each answer's leave-one-out improvement of JSD(histogram of the G answers, p). A set-level
  reward that also pushes the group histogram toward p; unbiased only as G grows.
- ``vote_share`` (r = p_k) and ``majority`` (r = 1[k = majority]): baselines. Their expected values are
  maximised by putting all mass on the most-voted label, so they collapse to the mode.
- ``format``: 1 for a parseable answer, 0 otherwise.
"""

from __future__ import annotations


import torch
from torch import Tensor

from shala_pl.metrics.distribution import jensen_shannon_distance

REWARD_NAMES = ("log_score", "group_jsd", "vote_share", "majority", "format")


def _gather(values: Tensor, choices: Tensor) -> Tensor:
    """values [B, K], choices [B, G] (-1 allowed) -> values at the chosen labels [B, G] (0 where invalid)."""
    return values.gather(1, choices.clamp(min=0))


def log_score_reward(choices: Tensor, human: Tensor, policy_probs: Tensor, eps: float = 1e-3) -> Tensor:
    """log(p_k + eps) - log(pi_k + eps); ``human`` is [B, K], ``policy_probs`` [B, K] or, one estimate of pi per
    answer, [B, G, K]."""
    if policy_probs.dim() == 3:
        policy_at_choice = policy_probs.gather(2, choices.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, G]
    else:
        policy_at_choice = _gather(policy_probs, choices)
    return torch.log(_gather(human, choices) + eps) - torch.log(policy_at_choice + eps)


def exact_label_advantages(human: Tensor, policy_probs: Tensor, eps: float = 1e-3) -> Tensor:
    """Every label's log-score advantage under the policy, [B, K]: r_k - sum_j pi_j r_j.

    The closed form of what G sampled labels with group-mean baselines estimate: sum_k pi_k A_k grad log pi_k
    = sum_k r_k grad pi_k is the exact policy gradient of E_{k~pi}[r_k] = -KL(pi || p) (up to eps).
    """
    num_labels = human.shape[1]
    every_label = torch.arange(num_labels, device=human.device).expand(human.shape[0], num_labels)  # [B, K]
    reward = log_score_reward(every_label, human, policy_probs, eps)  # [B, K]
    return reward - (policy_probs * reward).sum(-1, keepdim=True)


def vote_share_reward(choices: Tensor, human: Tensor) -> Tensor:
    return _gather(human, choices)


def majority_reward(choices: Tensor, majority: Tensor) -> Tensor:
    return (choices == majority.unsqueeze(1)).to(torch.float32)


def format_reward(choices: Tensor) -> Tensor:
    return (choices >= 0).to(torch.float32)


def answer_histogram(choices: Tensor, num_labels: int, smoothing: float = 0.0) -> Tensor:
    """Label frequencies of each group's valid answers, [B, G] -> [B, K]; all-invalid groups give uniform."""
    counts = torch.zeros(choices.shape[0], num_labels, device=choices.device)
    counts.scatter_add_(1, choices.clamp(min=0), (choices >= 0).to(counts.dtype))
    counts = counts + smoothing
    total = counts.sum(-1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / num_labels)
    return torch.where(total > 0, counts / total.clamp(min=1e-12), uniform)


def leave_one_out_histogram(choices: Tensor, num_labels: int, smoothing: float | None = None) -> Tensor:
    """For each answer, the label frequencies of the *other* valid answers of its group: [B, G] -> [B, G, K].

    The generate-mode stand-in for pi in the log score. Leaving the scored answer out makes the estimate
    independent of it (an add-one histogram that counts the answer itself overrates whatever was just said: with
    G=8, K=3 its log score's stationary point for p = (.6, .3, .1) is pi = (.75, .25, 0), JS distance 0.20).
    ``smoothing`` pseudo-counts per label, default 1/K: one pseudo-answer spread over the labels, so the prior's
    share shrinks as G grows and stays one answer's worth whatever K is; the stationary point above becomes
    (.59, .31, .09), JS distance 0.01 (expected reward gradient over Binomial(G-1, pi) counts, K=3, G=8).
    """
    smoothing = 1.0 / num_labels if smoothing is None else smoothing
    valid = (choices >= 0).to(torch.float32)
    counts = torch.zeros(choices.shape[0], num_labels, device=choices.device)
    counts.scatter_add_(1, choices.clamp(min=0), valid)  # [B, K]
    own = torch.nn.functional.one_hot(choices.clamp(min=0), num_labels).to(counts.dtype) * valid.unsqueeze(-1)
    others = counts.unsqueeze(1) - own + smoothing  # [B, G, K]
    total = others.sum(-1, keepdim=True)
    uniform = torch.full_like(others, 1.0 / num_labels)
    return torch.where(total > 0, others / total.clamp(min=1e-12), uniform)


def group_jsd_reward(choices: Tensor, human: Tensor) -> Tensor:
    """JSD(histogram without answer i, p) - JSD(histogram with it, p): positive when answer i helps the group.

    Defined for groups with at least 2 valid answers. With one, there is no rest of the group to compare it with
    (an empty histogram is no distribution), so it gets 0, as do all answers of a group with none; unparseable
    answers get ``compute_rewards``' floor either way.
    """
    num_labels = human.shape[1]
    valid = (choices >= 0).to(torch.float32)
    counts = torch.zeros_like(human).scatter_add_(1, choices.clamp(min=0), valid)  # [B, K]
    n_valid = counts.sum(-1, keepdim=True)  # [B, 1]
    full = jensen_shannon_distance(human, counts / n_valid.clamp(min=1)).float()  # [B]
    one_hot = torch.nn.functional.one_hot(choices.clamp(min=0), num_labels).to(counts.dtype) * valid.unsqueeze(-1)
    loo_counts = counts.unsqueeze(1) - one_hot  # [B, G, K]
    loo_total = loo_counts.sum(-1, keepdim=True)
    uniform = torch.full_like(loo_counts, 1.0 / num_labels)
    loo_hist = torch.where(loo_total > 0, loo_counts / loo_total.clamp(min=1), uniform)
    loo = jensen_shannon_distance(human.unsqueeze(1).expand_as(loo_hist), loo_hist).float()  # [B, G]
    return (loo - full.unsqueeze(1)) * valid * (n_valid >= 2)


def compute_rewards(
    weights: dict[str, float],
    choices: Tensor,  # [B, G]
    human: Tensor,  # [B, K]
    majority: Tensor,  # [B]
    policy_probs: Tensor,  # [B, K] exact (label mode) or [B, G, K] leave-one-out estimates (generate mode)
    invalid_reward: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the named rewards, [B, G], and each component (for logging).

    An unparseable answer gets ``invalid_reward`` from every non-format component, by default the lowest value
    that component gave any valid answer in the batch, so it is never better than a real answer.
    """
    unknown = set(weights) - set(REWARD_NAMES)
    if unknown:
        raise ValueError(f"unknown reward(s) {sorted(unknown)}; choose from {REWARD_NAMES}")
    valid = choices >= 0
    components: dict[str, Tensor] = {}
    for name in weights:
        if name == "log_score":
            value = log_score_reward(choices, human, policy_probs)
        elif name == "group_jsd":
            value = group_jsd_reward(choices, human)
        elif name == "vote_share":
            value = vote_share_reward(choices, human)
        elif name == "majority":
            value = majority_reward(choices, majority)
        else:
            value = format_reward(choices)
        if name != "format":
            if invalid_reward is not None:
                floor = torch.tensor(float(invalid_reward), device=value.device)
            elif valid.any():
                floor = value[valid].min()
            else:
                floor = value.new_zeros(())
            value = torch.where(valid, value, floor)
        components[name] = value
    total = sum(weights[name] * value for name, value in components.items())
    return total, components
