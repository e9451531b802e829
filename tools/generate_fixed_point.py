"""Where the generate-mode log score drives the policy, for a choice of leave-one-out estimate of log pi (#19).

In generate mode each answer's reward is log(p_k + eps) - log(q(c) + eps), with c the count of label k among the
other G-1 answers of its group and q the estimate of pi_k made from it (``rewards.leave_one_out_histogram``: a
pseudo-count a per label, q = (c + a) / (G - 1 + K a)). The expected policy gradient then depends on pi_k only
through E_{c ~ Binomial(G-1, pi_k)}[log(q(c) + eps)], so its fixed point can be found without sampling: follow the
expected natural-gradient flow on the logits until it stops. Printed: the fixed point for p = (.9, .08, .02) and the
mean JS distance (scipy, natural log) of the fixed point to p over the first N distributions of a ChaosNLI file.

    python tools/generate_fixed_point.py --data chaosNLI_mnli_m.jsonl [--pairs 150] [--group-sizes 4 8]

``fitted`` is a per-count table of log-estimates whose Binomial expectation is the least-squares fit of
log(pi + eps) + C over pi in [0, 1] (a probe, not what the code uses: its values are not monotone in c).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.optimize import lsq_linear
from scipy.spatial.distance import jensenshannon
from scipy.stats import binom

EPS = 1e-3  # log_score_reward's smoothing


def pseudo_count_table(n: int, num_labels: int, pseudo: float) -> np.ndarray:
    counts = np.arange(n + 1)
    return np.log((counts + pseudo) / (n + num_labels * pseudo) + EPS)


def fitted_table(n: int) -> np.ndarray:
    grid = np.concatenate([np.linspace(0, 0.05, 200), np.linspace(0.05, 1, 400)])
    design = binom.pmf(np.arange(n + 1)[None, :], n, grid[:, None])
    design = np.hstack([design, np.ones((len(grid), 1))])
    low = np.r_[np.full(n + 1, np.log(EPS)), -np.inf]
    high = np.r_[np.full(n + 1, np.log(1 + EPS)), np.inf]
    return lsq_linear(design, np.log(grid + EPS), bounds=(low, high)).x[:n + 1]


def fixed_point(human: np.ndarray, table: np.ndarray, steps: int = 3000, rate: float = 0.5) -> np.ndarray:
    n = len(table) - 1
    logits = np.zeros(len(human))
    for _ in range(steps):
        policy = np.exp(logits - logits.max())
        policy /= policy.sum()
        expected_log_q = (binom.pmf(np.arange(n + 1)[None, :], n, policy[:, None]) * table[None, :]).sum(1)
        reward = np.log(human + EPS) - expected_log_q
        logits += rate * policy * (reward - (policy * reward).sum())
    policy = np.exp(logits - logits.max())
    return policy / policy.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a ChaosNLI jsonl file (label_count per line)")
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    with open(args.data, encoding="utf-8") as lines:
        humans = [np.array(json.loads(line)["label_count"], float) for line in lines if line.strip()][:args.pairs]
    humans = [h / h.sum() for h in humans]
    num_labels = len(humans[0])
    example = np.array([0.9, 0.08, 0.02])
    for group in args.group_sizes:
        n = group - 1
        tables = {"1/K (current)": pseudo_count_table(n, num_labels, 1 / num_labels),
                  "1/(K*G)": pseudo_count_table(n, num_labels, 1 / (num_labels * group)),
                  "fitted": fitted_table(n)}
        for name, table in tables.items():
            mean_jsd = np.mean([jensenshannon(h, fixed_point(h, table, steps=1500)) for h in humans])
            print(f"G={group:<3d} {name:14s} fixed point for p=(.9,.08,.02): {np.round(fixed_point(example, table), 3)}"
                  f"  mean JSD to p over {len(humans)} pairs: {mean_jsd:.4f}")


if __name__ == "__main__":
    main()
