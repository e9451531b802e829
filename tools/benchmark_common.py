"""What ``tools/benchmark_methods.py`` (the synthetic/SNLI profiles) and ``tools/benchmark_real.py`` (its real
profile) share: the method names, a run's trainer arguments, the test metrics, aggregation over seeds, the table,
the figure and the machine line.

The dependency goes one way: both tools import this module, ``benchmark_methods`` dispatches ``--profile real``
into ``benchmark_real``, and nothing here imports either of them.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHODS = ("zero_shot", "sft_majority", "sft_soft", "grpo_majority", "grpo_vote_share", "shala_unweighted", "shala")
EVAL_ONLY = ("zero_shot",)
SUPERVISED = ("sft_majority", "sft_soft")
METRICS = ("jsd", "kl", "f1_macro", "accuracy", "jsd_top_entropy", "entropy_model", "entropy_human")
COLUMNS = (  # (key, header, format)
    ("jsd", "JSD", "{:.4f}"),
    ("kl", "KL", "{:.3f}"),
    ("f1_macro", "F1-macro", "{:.3f}"),
    ("accuracy", "acc", "{:.3f}"),
    ("jsd_top_entropy", "JSD amb.1/3", "{:.4f}"),
    ("entropy_model", "H model", "{:.3f}"),
    ("entropy_human", "H human", "{:.3f}"),
)


# -- one run -----------------------------------------------------------------------------------------------------------
def method_config(method: str) -> Path:
    return REPO / "configs" / "method" / f"{method}.yaml"


def trainer_args(spec: dict) -> list[str]:
    """Seed, model, steps, a quiet CPU trainer without validation or checkpoints, then the data arguments."""
    work = spec["workdir"]
    return [
        f"--seed_everything={spec['seed']}",
        f"--model.init_args.name_or_path={spec['model_dir']}",
        f"--trainer.max_steps={spec['steps']}",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",  # no validation during training: one held-out evaluation at the end
        f"--trainer.default_root_dir={work}",
        "--checkpoint.save_top_k=0",
        "--checkpoint.save_last=false",
        f"--predictions.path={work}/predictions.jsonl",
        *spec["data_args"],
    ]


def _quiet() -> None:
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import: import first, then override)
    import transformers

    warnings.filterwarnings("ignore")
    transformers.utils.logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "shala_pl",
                 "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def test_metrics(trainer, model, data, split: str = "test") -> dict:
    """The module's test metrics on the test split (``split="val"``: its validation metrics on the validation split),
    and the JSD on its most ambiguous third (from predict over the same split)."""
    import torch

    from shala_pl.metrics.distribution import entropy, jensen_shannon_distance

    if split == "val":
        trainer.limit_val_batches = 1.0  # the runs train without validation (trainer_args)
        logged = trainer.validate(model, datamodule=data, verbose=False)[0]
    else:
        logged = trainer.test(model, datamodule=data, verbose=False)[0]
    metrics = {k.split("/")[-1]: float(v) for k, v in logged.items()}
    data.predict_split = split
    rows = [row for batch in trainer.predict(model, datamodule=data) for row in batch]
    probs = torch.tensor([row["probs"] for row in rows], dtype=torch.float64)
    human = torch.tensor([row["human"] for row in rows], dtype=torch.float64)
    per_example_jsd = jensen_shannon_distance(human, probs)
    # the most ambiguous third of the test examples by human vote entropy (ties broken by position: stable sort)
    order = torch.sort(entropy(human), descending=True, stable=True).indices
    top = order[: max(1, math.ceil(len(rows) / 3))]
    return {
        f"n_{split}": len(rows), **metrics,
        "jsd_top_entropy": float(per_example_jsd[top].mean()),
        "jsd_check": float(per_example_jsd.mean()),  # equals the test metric's jsd: the two paths agree
    }


# -- aggregation and output --------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(runs: list[dict], methods: list[str]) -> dict:
    out = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        entry = {}
        keys = [k for k in mine[0] if isinstance(mine[0][k], (int, float)) and k not in ("seed", "steps")]
        for key in keys:
            mean, std = _mean_std([r.get(key) for r in mine])
            entry[key], entry[key + "_std"] = mean, std
        entry["n_seeds"] = len(mine)
        out[method] = entry
    return out


def _cell(entry: dict, key: str, fmt: str, show_std: bool) -> str:
    text = fmt.format(entry[key])
    if show_std:
        text += "±" + fmt.format(entry[key + "_std"])
    return text


def format_table(section: dict, show_std: bool, markdown: bool = False) -> str:
    headers = ["method"] + [h for _, h, _ in COLUMNS] + ["train s"]
    body = []
    for method, entry in section["methods"].items():
        body.append([method] + [_cell(entry, k, f, show_std) for k, _, f in COLUMNS] + [f"{entry['train_s']:.0f}"])
    if section.get("noise_floor_jsd") is not None:
        body.append(["(noise floor)", f"{section['noise_floor_jsd']:.4f}"] + [""] * (len(headers) - 2))
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers] + body) for i in range(len(headers))]
    fmt_row = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt_row(headers), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in body])


def plot(result: dict, out: Path, names: tuple = ("synthetic", "snli")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [(name, result[name]) for name in names
                if isinstance(result.get(name), dict) and result[name].get("methods")]
    fig, axes = plt.subplots(1, len(sections), figsize=(7 * len(sections), 4.5), squeeze=False)
    for ax, (name, section) in zip(axes[0], sections):
        methods = list(section["methods"])
        n_bins = len([k for k in section["methods"][methods[0]] if k.startswith("jsd_bin") and not k.endswith("_std")])
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            entry = section["methods"][method]
            xs = [b + (i - (len(methods) - 1) / 2) * width for b in range(n_bins)]
            ys = [entry[f"jsd_bin{b}"] for b in range(n_bins)]
            errs = [entry[f"jsd_bin{b}_std"] for b in range(n_bins)]
            ax.bar(xs, ys, width, yerr=errs, label=method, capsize=2)
        if section.get("noise_floor_bins"):
            for b, floor in enumerate(section["noise_floor_bins"]):
                if floor is not None and not math.isnan(floor):
                    ax.hlines(floor, b - 0.45, b + 0.45, colors="black", linestyles="dashed",
                              label="noise floor" if b == 0 else None)
        entry0 = section["methods"][methods[0]]
        edges = [b / n_bins for b in range(n_bins + 1)]
        ax.set_xticks(range(n_bins))
        ax.set_xticklabels([f"H/log K in [{edges[b]:.2f}, {edges[b + 1]:.2f}]\n"
                            f"n={entry0.get(f'n_bin{b}', float('nan')):.0f}" for b in range(n_bins)])
        ax.set_ylabel(f"JS distance to human votes ({result.get('split', 'test')})")
        ax.set_title(f"{name}: {section['steps']} steps, {len(section['seeds'])} seed(s)")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("JSD by human-entropy bin (lower is better; error bars: std over seeds)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


RESULTS_START, RESULTS_END = "<!-- benchmark_methods:start -->", "<!-- benchmark_methods:end -->"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.system()} {platform.machine()}, {cpu}, {cores} CPU cores available, no GPU used; "
            f"python {platform.python_version()}, torch {torch.__version__}")
