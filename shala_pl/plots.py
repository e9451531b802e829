"""Validation figures (logged by ``shala_pl.media``): where the model is far from the humans, and what its
distributions look like."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def jsd_by_entropy_bin(bin_jsd: list[float], bin_counts: list[float]):
    fig, ax = plt.subplots(figsize=(4.5, 3))
    n = len(bin_jsd)
    names = [f"{i / n:.2f}-{(i + 1) / n:.2f}\n(n={int(c)})" for i, c in enumerate(bin_counts)]
    ax.bar(names, bin_jsd, color="tab:blue")
    ax.set_xlabel("human entropy / log K")
    ax.set_ylabel("mean JSD")
    ax.set_title("JSD by human-entropy bin")
    fig.tight_layout()
    return fig


def model_vs_human(label_names: list[str], uids: list[str], model: list[list[float]], human: list[list[float]]):
    fig, axes = plt.subplots(1, len(uids), figsize=(3 * len(uids), 2.8), squeeze=False)
    x = range(len(label_names))
    for ax, uid, q, p in zip(axes[0], uids, model, human):
        ax.bar([i - 0.2 for i in x], p, width=0.4, label="human")
        ax.bar([i + 0.2 for i in x], q, width=0.4, label="model")
        ax.set_xticks(list(x), label_names, rotation=60, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(str(uid)[:18], fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
