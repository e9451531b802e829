"""Where the generate-mode log score drives the policy: the shipped estimator against the plug-in one (#19).

In generate mode an answer's reward can only use the other answers of its group to stand for pi. The expected
update of a group (advantage = reward minus the group mean, times grad log pi, averaged over the group) is a sum
over the multinomial label counts of the group, so its fixed point can be found without sampling: follow the
expected natural-gradient flow on the logits from uniform until it stops. Both estimators go through the package's
own ``compute_rewards`` and ``group_advantages``:

- ``shipped``: ``log_score`` as generate mode runs it (``rewards.sampled_log_score``);
- ``plug-in``: log(p_k + eps) - log(q_k + eps), q the 1/K-smoothed leave-one-out histogram
  (``rewards.leave_one_out_histogram``), what generate mode used before.

Printed for each G: the fixed point for p = (.9, .08, .02), the mean and largest JS distance of the fixed point to
p (the package's metric, scipy's convention: natural log) over the first N distributions of a ChaosNLI file, and
the largest expected update at pi = p (0 where p is stationary).

    python tools/generate_fixed_point.py --data chaosNLI_mnli_m.jsonl [--pairs 150] [--group-sizes 4 8]
    python tools/generate_fixed_point.py --synthetic 2000 [--group-sizes 4 8]

``--synthetic``: the quickstart's task, where a model can only tell concepts apart, each concept's examples carry
20 votes drawn from its true distribution, and the reward scores each answer against its own example's votes. Per
concept, the fixed point of the update averaged over its examples is compared with the concept's true
distribution, and the mean over concepts with the noise floor (the votes' own mean JSD to the truth).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import torch

from shala_pl.data.sources.synthetic import generate_examples
from shala_pl.metrics.distribution import jensen_shannon_distance
from shala_pl.rl.advantages import group_advantages
from shala_pl.rl.rewards import compute_rewards, leave_one_out_histogram

EPS = 1e-3  # log_score_reward's smoothing


def compositions(group: int, num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One group per multinomial count vector, labels sorted, [O, G], and how many orderings each stands for [O]."""
    rows, multiplicity = [], []
    for combo in itertools.combinations_with_replacement(range(num_labels), group):
        counts = np.bincount(combo, minlength=num_labels)
        rows.append(combo)
        multiplicity.append(math.factorial(group) / np.prod([math.factorial(c) for c in counts]))
    return torch.tensor(rows), torch.tensor(multiplicity, dtype=torch.float64)


def shipped(outcomes: torch.Tensor, humans: torch.Tensor) -> torch.Tensor:
    loo = leave_one_out_histogram(outcomes, humans.shape[1]).double()
    rewards, _ = compute_rewards({"log_score": 1.0}, outcomes, humans, humans.argmax(-1), loo)
    return rewards


def plug_in(outcomes: torch.Tensor, humans: torch.Tensor) -> torch.Tensor:
    loo = leave_one_out_histogram(outcomes, humans.shape[1]).double()
    chosen = loo.gather(2, outcomes.unsqueeze(-1)).squeeze(-1)
    return torch.log(humans.gather(1, outcomes) + EPS) - torch.log(chosen + EPS)


ESTIMATORS = {"shipped": shipped, "plug-in": plug_in}


class ExpectedUpdate:
    """The expected update direction on the logits for one human distribution ([K]) and group size; or, for several
    ([N, K]: examples a model cannot tell apart, such as one synthetic concept's), the mean of their updates."""

    def __init__(self, human: torch.Tensor, group: int, estimator):
        humans = human.reshape(-1, human.shape[-1])
        num_labels = humans.shape[1]
        self.outcomes, self.multiplicity = compositions(group, num_labels)
        self.counts = torch.nn.functional.one_hot(self.outcomes, num_labels).sum(1).double()  # [O, K]
        # rewards do not depend on pi, so the mean update is the update of the mean advantages  # [O, G]
        self.advantages = torch.stack([group_advantages(estimator(self.outcomes, h.expand(len(self.outcomes), -1)),
                                                        "none") for h in humans]).mean(0)
        self.onehot = torch.nn.functional.one_hot(self.outcomes, num_labels).double()  # [O, G, K]

    def __call__(self, policy: torch.Tensor) -> torch.Tensor:
        probability = self.multiplicity * (policy.clamp(min=1e-300) ** self.counts).prod(-1)  # [O]
        score = self.onehot - policy  # d log pi_k / d logits
        return (probability[:, None] * (self.advantages.unsqueeze(-1) * score).mean(1)).sum(0)


def fixed_point(update: ExpectedUpdate, num_labels: int, steps: int) -> torch.Tensor:
    logits = torch.zeros(num_labels, dtype=torch.float64)
    for _ in range(steps):
        policy = torch.softmax(logits, -1)
        logits = logits + update(policy) / policy.clamp(min=1e-12)
    return torch.softmax(logits, -1)


def synthetic(group_sizes: list[int], steps: int, n_examples: int) -> tuple[float, dict]:
    """Per concept of the quickstart's synthetic task: the fixed point of the update averaged over the concept's
    examples (each scored against its own 20 votes), against the concept's true distribution."""
    examples = generate_examples(n_examples)
    concepts: dict[tuple, list] = {}
    for example in examples:
        concepts.setdefault(example.true_distribution, []).append(np.array(example.votes, float) / sum(example.votes))
    floor = np.mean([jensen_shannon_distance(torch.tensor(v), torch.tensor(truth)).item()
                     for truth, votes in concepts.items() for v in votes])
    print(f"synthetic task: {n_examples} examples, {len(concepts)} concepts, {sum(examples[0].votes)} votes each; "
          f"noise floor (mean JSD of an example's votes to its concept's truth): {floor:.5f}")
    means = {}
    for group in group_sizes:
        for name, estimator in ESTIMATORS.items():
            distances, weights = [], []
            for truth, votes in concepts.items():
                update = ExpectedUpdate(torch.tensor(np.stack(votes)), group, estimator)
                point = fixed_point(update, len(truth), steps)
                distances.append(jensen_shannon_distance(point, torch.tensor(truth)).item())
                weights.append(len(votes))
            means[group, name] = float(np.average(distances, weights=weights))
            print(f"G={group:<3d} {name:8s} fixed point to the true distribution: mean JSD {means[group, name]:.5f}"
                  f" (max {max(distances):.5f}); {'within' if means[group, name] <= floor else 'above'} the noise "
                  "floor")
    return float(floor), means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="a ChaosNLI jsonl file (label_count per line)")
    where.add_argument("--synthetic", type=int, metavar="N_EXAMPLES",
                       help="the quickstart's synthetic task with this many examples instead of --data")
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=600, help="natural-gradient steps from uniform")
    args = parser.parse_args()
    if args.synthetic:
        synthetic(args.group_sizes, args.steps, args.synthetic)
        return
    with open(args.data, encoding="utf-8") as lines:
        humans = [np.array(json.loads(line)["label_count"], float) for line in lines if line.strip()][:args.pairs]
    humans = [torch.tensor(h / h.sum()) for h in humans]
    num_labels = len(humans[0])
    example = torch.tensor([0.9, 0.08, 0.02], dtype=torch.float64)
    for group in args.group_sizes:
        for name, estimator in ESTIMATORS.items():
            point = fixed_point(ExpectedUpdate(example, group, estimator), num_labels, args.steps)
            distances, at_p = [], []
            for human in humans:
                update = ExpectedUpdate(human, group, estimator)
                distances.append(jensen_shannon_distance(human, fixed_point(update, num_labels, args.steps)).item())
                at_p.append(update(human).abs().max().item())
            print(f"G={group:<3d} {name:8s} fixed point for p=(.9,.08,.02): {np.round(point.numpy(), 3)}  "
                  f"JSD to p over {len(humans)} pairs: mean {np.mean(distances):.5f} max {np.max(distances):.5f}  "
                  f"largest update at pi=p: {max(at_p):.1e}")


if __name__ == "__main__":
    main()
