"""Rewards for a group of answers, computed against the human vote distribution p.

A reward is any importable callable that returns one value per answer, [B, G], from some of these keyword
arguments (it declares the ones it uses by name; ``**kwargs`` takes all):

- ``choices`` [B, G] long: each answer's label index, -1 for an unparseable answer;
- ``human`` [B, K]: the human vote distribution p;
- ``policy_probs``: the policy's label distribution pi, [B, K] exact in ``label`` mode; in ``generate`` mode one
  estimate per answer, [B, G, K] (the leave-one-out histogram of the rest of its group, see
  ``leave_one_out_histogram``);
- ``majority`` [B] long: the most-voted label.

Other parameters need defaults. In YAML a reward is named by import path, with its weight::

    model:
      init_args:
        rewards: {log_score: 1.0, my_pkg.my_module.brier: 0.5}

The built-ins below are registered under their short names (``BUILTIN_REWARDS``). ``resolve_reward`` checks a
name and the signature when GRPOModule is built, so a typo is a config error, not a failure at the first step.
An unparseable answer gets the batch's lowest valid value of each reward (or ``invalid_reward``) unless the reward
scores invalid answers itself: mark it with ``fn.scores_invalid_answers = True`` (as ``format`` is).

Which reward optimises what:
- ``log_score`` (SHALA's default): r = log(p_k + eps) - log pi(k|x) in ``label`` mode, where pi is exact. Its
  expectation under the policy is -KL(pi || p) (up to the eps smoothing), so the optimum is pi(.|x) = p: the
  policy keeps the minority labels at their human rates instead of collapsing to the mode.
  ``shala_pl.rl.advantages.exact_label_advantages`` is its closed-form expectation over every label
  (``shala_exact``). In ``generate`` mode pi is known only through the group's answers, and no estimate of log pi
  from them is unbiased; plugging in a histogram moves the fixed point off p (small labels go to 0). There the
  log score is the group form ``sampled_log_score``, whose expected update has p as its only fixed point.
- ``forward_kl``: r = p_k / pi(k|x), whose expected gradient is that of -KL(p || pi), forward KL (the
  direction ``sft_soft`` follows in closed form): the sampled-gradient twin of soft-label cross-entropy
  (``grpo_forward_kl``), for telling the KL direction from the sampling.
- ``group_jsd``: each answer's leave-one-out improvement of JSD(histogram of the G answers, p). A set-level
  reward that also pushes the group histogram toward p; unbiased only as G grows.
- ``vote_share`` (r = p_k) and ``majority`` (r = 1[k = majority]): baselines. Their expected values are
  maximised by putting all mass on the most-voted label, so they collapse to the mode.
- ``format``: 1 for a parseable answer, 0 otherwise.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Callable

import torch
from torch import Tensor

from shala_pl.errors import ConfigValueError
from shala_pl.checks import require
from shala_pl.metrics.distribution import jensen_shannon_distance

REWARD_INPUTS = ("choices", "human", "policy_probs", "majority")
OPTION = "model.init_args.rewards"  # how errors name the option
EULER_GAMMA = 0.5772156649015329


def _gather(values: Tensor, choices: Tensor) -> Tensor:
    """values [B, K], choices [B, G] (-1 allowed) -> values at the chosen labels [B, G] (0 where invalid)."""
    return values.gather(1, choices.clamp(min=0))


def _label_counts(choices: Tensor, num_labels: int, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each group's count of valid answers per label [B, K] (float32, or ``like``'s dtype), and the answers'
    validity [B, G] in the same dtype."""
    counts = torch.zeros(choices.shape[0], num_labels, device=choices.device) if like is None else \
        torch.zeros_like(like)
    valid = (choices >= 0).to(counts.dtype)
    return counts.scatter_add_(1, choices.clamp(min=0), valid), valid


def _own_answer(choices: Tensor, valid: Tensor, num_labels: int) -> Tensor:
    """Each valid answer as a one-hot count, [B, G] -> [B, G, K] (zeros for an invalid answer)."""
    return torch.nn.functional.one_hot(choices.clamp(min=0), num_labels).to(valid.dtype) * valid.unsqueeze(-1)


def _frequencies(counts: Tensor) -> Tensor:
    """Counts [..., K] -> frequencies; a row without counts gives uniform."""
    total = counts.sum(-1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / counts.shape[-1])
    return torch.where(total > 0, counts / total.clamp(min=1e-12), uniform)


def _at_choice(values: Tensor, choices: Tensor) -> Tensor:
    """A per-label value at each answer's label, [B, G]: from one row per prompt [B, K] or one per answer
    [B, G, K]."""
    if values.dim() == 3:
        return values.gather(2, choices.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return _gather(values, choices)


def log_score_reward(choices: Tensor, human: Tensor, policy_probs: Tensor, eps: float = 1e-3) -> Tensor:
    """log(p_k + eps) - log(pi_k + eps) with the exact pi, ``policy_probs`` [B, K] (label mode); with one estimate
    per answer, [B, G, K] (generate mode), the group form ``sampled_log_score(choices, human)`` instead."""
    if policy_probs.dim() == 3:
        return sampled_log_score(choices, human)
    return torch.log(_gather(human, choices) + eps) - torch.log(_gather(policy_probs, choices) + eps)


def harmonic_number(n: Tensor) -> Tensor:
    """H_n = 1 + 1/2 + ... + 1/n elementwise (H_0 = 0), for counts n >= 0 held as floats."""
    return torch.special.digamma(n + 1.0) + EULER_GAMMA


def truncated_log(p: Tensor, terms: Tensor, most: int) -> Tensor:
    """log p's series about 1 cut after ``terms`` terms: -sum_{j=1..terms} (1 - p)^j / j (0 for terms <= 0);
    ``most`` bounds ``terms`` (known from the shapes, so no device sync)."""
    j = torch.arange(1, max(most, 0) + 1, device=p.device, dtype=p.dtype)  # [J]
    series = (1 - p).unsqueeze(-1) ** j / j  # [..., J]
    return -(series * (j <= terms.unsqueeze(-1))).sum(-1)


def sampled_log_score(choices: Tensor, human: Tensor) -> Tensor:
    """The generate-mode log score, [B, G]: r_i = T_{n-1}(p_k) - (H_c - H_n) for answer i with label k, where n
    is the number of other valid answers in its group, c how many of them said k, H the harmonic numbers and
    T_m(p) = -sum_{j<=m} (1 - p)^j / j the m-term series of log p.

    Why this form: the n others are n draws from pi, and C(n - c, j) / C(n, j) is the unbiased estimate of
    (1 - pi_k)^j, so H_c - H_n = -sum_{j<=n} C(n - c, j) / (j C(n, j)) is an unbiased estimate of T_n(pi_k), the
    nearest thing to log pi_k that n draws can estimate without bias. The group-mean baseline is not independent
    of answer i (the others' rewards count it), and that costs one term: with all G answers parsed, the expected
    update is (G - 1)/G times the gradient of -D(pi || p), D the Bregman divergence generated by T_{G-2} (at
    T = log it is KL(pi || p)). T_{G-2} is strictly increasing for G >= 3, so the update's only fixed point is
    pi = p, small labels included, and D tends to reverse KL as G grows. With G = 2 the human term vanishes
    (``GRPOModule`` refuses it); ``advantage_scaling: group`` moves the fixed point off p.
    """
    num_labels = human.shape[1]
    counts, valid = _label_counts(choices, num_labels, like=human)  # [B, K]
    own = _own_answer(choices, valid, num_labels)  # [B, G, K]
    others = counts.unsqueeze(1) - own  # [B, G, K]: each answer's leave-one-out counts
    n = others.sum(-1)  # [B, G]
    same = _at_choice(others, choices)  # [B, G]: c, the others that gave answer i's label
    most = choices.shape[1] - 2  # n - 1 <= G - 2
    reward = truncated_log(_gather(human, choices), n - 1, most) - (harmonic_number(same) - harmonic_number(n))
    return reward * valid


def forward_kl_reward(choices: Tensor, human: Tensor, policy_probs: Tensor, eps: float = 1e-3) -> Tensor:
    """p_k / (pi_k + eps): a sampled reward whose expected policy gradient is forward KL's. Under k ~ pi,
    E[r_k grad log pi_k] = sum_k p_k grad log pi_k = -grad KL(p || pi) (exactly at eps = 0), the gradient soft-label
    cross-entropy (``sft_soft``) follows in closed form; its expected value is 1 whatever pi is, so a group-mean
    baseline leaves that gradient unchanged. ``policy_probs`` as for ``log_score_reward``."""
    return _gather(human, choices) / (_at_choice(policy_probs, choices) + eps)


def vote_share_reward(choices: Tensor, human: Tensor) -> Tensor:
    return _gather(human, choices)


def majority_reward(choices: Tensor, majority: Tensor) -> Tensor:
    return (choices == majority.unsqueeze(1)).to(torch.float32)


def format_reward(choices: Tensor) -> Tensor:
    return (choices >= 0).to(torch.float32)


format_reward.scores_invalid_answers = True


def answer_histogram(choices: Tensor, num_labels: int, smoothing: float = 0.0) -> Tensor:
    """Label frequencies of each group's valid answers, [B, G] -> [B, K]; all-invalid groups give uniform."""
    counts, _ = _label_counts(choices, num_labels)
    return _frequencies(counts + smoothing)


def leave_one_out_histogram(choices: Tensor, num_labels: int, smoothing: float | None = None) -> Tensor:
    """For each answer, the label frequencies of the *other* valid answers of its group: [B, G] -> [B, G, K].

    Generate mode's plug-in pi for rewards that take ``policy_probs`` (``forward_kl``, user rewards); the log
    score has an unbiased form of its own (``sampled_log_score``). Leaving the scored answer out makes the
    estimate independent of it (a histogram that counts the answer itself overrates whatever was just said).
    ``smoothing`` pseudo-counts per label, default 1/K: one pseudo-answer spread over the labels, so the prior's
    share shrinks as G grows and the estimate is never 0. A plug-in estimate is biased for any reward nonlinear
    in pi: with the log score it drove every label with p_k below about 1/(K G) to 0 (G = 8, p = (.9, .08, .02):
    fixed point (.940, .060, 0); docs/measurements/generate_fixed_point_chaosnli_mnli.txt).
    """
    smoothing = 1.0 / num_labels if smoothing is None else smoothing
    counts, valid = _label_counts(choices, num_labels)  # [B, K]
    return _frequencies(counts.unsqueeze(1) - _own_answer(choices, valid, num_labels) + smoothing)  # [B, G, K]


def group_jsd_reward(choices: Tensor, human: Tensor) -> Tensor:
    """JSD(histogram without answer i, p) - JSD(histogram with it, p): positive when answer i helps the group.

    Defined for groups with at least 2 valid answers. With one, there is no rest of the group to compare it with
    (an empty histogram is no distribution), so it gets 0, as do all answers of a group with none; unparseable
    answers get ``compute_rewards``' floor either way.
    """
    num_labels = human.shape[1]
    counts, valid = _label_counts(choices, num_labels, like=human)  # [B, K]
    n_valid = counts.sum(-1, keepdim=True)  # [B, 1]
    full = jensen_shannon_distance(human, counts / n_valid.clamp(min=1)).float()  # [B]
    loo_hist = _frequencies(counts.unsqueeze(1) - _own_answer(choices, valid, num_labels))  # [B, G, K]
    loo = jensen_shannon_distance(human.unsqueeze(1).expand_as(loo_hist), loo_hist).float()  # [B, G]
    return (loo - full.unsqueeze(1)) * valid * (n_valid >= 2)


BUILTIN_REWARDS: dict[str, Callable[..., Tensor]] = {
    "log_score": log_score_reward,
    "forward_kl": forward_kl_reward,
    "group_jsd": group_jsd_reward,
    "vote_share": vote_share_reward,
    "majority": majority_reward,
    "format": format_reward,
}
REWARD_NAMES = tuple(BUILTIN_REWARDS)


@functools.lru_cache(maxsize=None)
def resolve_reward(name: str) -> Callable[..., Tensor]:
    """A built-in's short name or an import path ``package.module.function`` -> the reward callable, its
    signature checked against ``REWARD_INPUTS``; ``ConfigValueError`` naming ``model.init_args.rewards`` if not."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    expected = f"one of {', '.join(REWARD_NAMES)} or an import path package.module.function"
    module_name, _, attribute = name.rpartition(".")
    require(bool(module_name), OPTION, expected, name, "unknown reward")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigValueError(f"{OPTION} must be {expected}, got {name!r} (unknown reward: cannot import "
                               f"{module_name!r}: {error})") from None
    fn = getattr(module, attribute, None)
    require(fn is not None, OPTION, expected, name, f"unknown reward: module {module_name!r} has no {attribute!r}")
    _check_signature(name, fn)
    return fn


def _check_signature(name: str, fn) -> None:
    usage = (f"callables taking some of {', '.join(REWARD_INPUTS)} by keyword (other parameters with defaults) "
             "and returning [B, G]")
    require(callable(fn), OPTION, usage, name, f"a {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no introspectable signature (some builtins): trust it
    parameters = signature.parameters.values()
    takes = [p.name for p in parameters if p.name in REWARD_INPUTS and p.kind in (p.POSITIONAL_OR_KEYWORD,
                                                                                   p.KEYWORD_ONLY)]
    takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters)
    unfilled = [p.name for p in parameters if p.name not in takes and p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problem = f"parameter(s) {', '.join(unfilled)} without a default" if unfilled else "none of the inputs"
    require(not unfilled and bool(takes or takes_all), OPTION, usage, name,
            f"{getattr(fn, '__name__', name)}{signature} has {problem}")


def _call(fn, inputs: dict[str, Tensor]) -> Tensor:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**inputs)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return fn(**inputs)
    return fn(**{key: value for key, value in inputs.items() if key in parameters})


def compute_rewards(
    weights: dict[str, float],  # reward name (built-in or import path) -> weight
    choices: Tensor,  # [B, G]
    human: Tensor,  # [B, K]
    majority: Tensor,  # [B]
    policy_probs: Tensor,  # [B, K] exact (label mode) or [B, G, K] leave-one-out estimates (generate mode)
    invalid_reward: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the named rewards, [B, G], and each component (for logging).

    An unparseable answer gets ``invalid_reward`` from every component that does not score invalid answers itself
    (all but ``format``), by default the lowest value that component gave any valid answer in the batch, so it is
    never better than a real answer.
    """
    inputs = {"choices": choices, "human": human, "policy_probs": policy_probs, "majority": majority}
    valid = choices >= 0
    components: dict[str, Tensor] = {}
    for name in weights:
        fn = resolve_reward(name)
        value = _call(fn, inputs)
        if not isinstance(value, Tensor) or value.shape != choices.shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"reward {name!r} returned {shape}, expected one value per answer {tuple(choices.shape)}")
        if not getattr(fn, "scores_invalid_answers", False):
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
