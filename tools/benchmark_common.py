"""What ``tools/benchmark_methods.py`` (the synthetic/SNLI profiles) and ``tools/benchmark_real.py`` (the real
profiles) share: the methods (read from ``configs/method/*.yaml``), a run's command line, the test metrics, the
constant baselines, the paired bootstrap, aggregation over seeds, and the one renderer (table, bar lines, markdown
page, README-marker splicing, figure).

The dependency goes one way: both tools import this module, ``benchmark_methods`` dispatches ``--profile real*``
into ``benchmark_real``, and nothing here imports either of them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHOD_DIR = REPO / "configs" / "method"
_CLASS_ORDER = ("VoteModule", "SFTModule", "GRPOModule")  # table order: untrained, supervised, RL


def _method_classes() -> dict[str, str]:
    """Method name -> its LightningModule class name, from each ``configs/method/<name>.yaml``."""
    classes = {}
    for path in METHOD_DIR.glob("*.yaml"):
        class_path = yaml.safe_load(path.read_text())["model"]["class_path"]
        classes[path.stem] = class_path.rsplit(".", 1)[-1]
    return classes


METHOD_CLASSES = _method_classes()
METHODS = tuple(sorted(METHOD_CLASSES, key=lambda m: (_CLASS_ORDER.index(METHOD_CLASSES[m]), m)))
EVAL_ONLY = tuple(m for m in METHODS if METHOD_CLASSES[m] == "VoteModule")
BASELINES = ("uniform", "train_mean", "best_constant")  # constants fitted on the training split: no model at all
COMPARED = ("best_constant", "grpo_majority", "sft_soft")  # every row's paired JSD difference to each of these
BOOTSTRAP_DRAWS = 2000
# Which part of SHALA matters: KL direction (forward KL(p‖π) / reverse KL(π‖p), the objective whose gradient each
# method follows in expectation) x gradient (exact closed form / sampled answers).
TWO_BY_TWO = {("forward", "exact"): "sft_soft", ("forward", "sampled"): "grpo_forward_kl",
              ("reverse", "exact"): "shala_exact", ("reverse", "sampled"): "shala"}
COLUMNS = (  # (key, header, format); "skill" and the CI column are filled from the evidence
    ("jsd", "JSD", "{:.4f}"),
    ("skill", "skill", "{:+.3f}"),
    ("vs_best_constant", "ΔJSD vs best_constant [95% CI]", None),
    ("f1_macro", "F1-macro", "{:.3f}"),
    ("accuracy", "acc", "{:.3f}"),
    ("entropy_corr", "H corr", "{:+.3f}"),
    ("label_corr", "label corr", "{:+.3f}"),
    ("contested_auroc", "contested AUROC", "{:.3f}"),
    ("jsd_top_entropy", "JSD amb.1/3", "{:.4f}"),
    ("entropy_model", "H model", "{:.3f}"),
    ("kl", "KL", "{:.3f}"),
)
RESULTS_START, RESULTS_END = "<!-- benchmark_methods:start -->", "<!-- benchmark_methods:end -->"
REAL_START, REAL_END = "<!-- benchmark_real:start -->", "<!-- benchmark_real:end -->"


# -- one run -----------------------------------------------------------------------------------------------------------
def method_config(method: str) -> Path:
    return METHOD_DIR / f"{method}.yaml"


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


def run_command(run_config: Path, method: str, spec: dict, overrides: list[str] = ()) -> list[str]:
    """The one way a benchmark builds a run: the run config, the method's config (exactly as on the command line),
    the benchmark's trainer and data arguments, then any overrides (a candidate's learning rate, a variant's)."""
    return ["--config", str(run_config), "--config", str(method_config(method)), *trainer_args(spec),
            *overrides]


def chosen_methods(text: Optional[str], default: tuple) -> list[str]:
    """``--methods`` as a list of model-based methods (default: ``default``); constants named there are dropped,
    as every table has them anyway."""
    names = [m.strip() for m in text.split(",") if m.strip()] if text else list(default)
    return [m for m in names if m not in BASELINES]


def quiet() -> None:
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


def top_third(human_entropy) -> list[int]:
    """Positions of the most ambiguous third by human vote entropy (ties broken by position: a stable sort)."""
    import torch

    order = torch.sort(torch.as_tensor(human_entropy), descending=True, stable=True).indices
    return order[: max(1, math.ceil(len(order) / 3))].tolist()


def test_metrics(trainer, model, data, split: str = "test") -> dict:
    """The module's test metrics on the test split (``split="val"``: its validation metrics on the validation
    split), the JSD on its most ambiguous third, and each example's JSD (``per_example``, for the bootstrap; not
    written to the JSON), from predict over the same split."""
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
    return {
        f"n_{split}": len(rows), **metrics,
        "jsd_top_entropy": float(per_example_jsd[top_third(entropy(human))].mean()),
        "jsd_check": float(per_example_jsd.mean()),  # equals the test metric's jsd: the two paths agree
        "per_example": {"uid": [row["uid"] for row in rows], "jsd": per_example_jsd.tolist()},
    }


# -- constant baselines ------------------------------------------------------------------------------------------------
def _js_distance_rows(human, q):
    """Per-row JS distance (natural log) of [N, K] human distributions to one distribution q [K], numpy."""
    import numpy as np
    from scipy.special import rel_entr

    m = 0.5 * (human + q)
    divergence = 0.5 * (rel_entr(human, m).sum(-1) + rel_entr(q[None, :], m).sum(-1))
    return np.sqrt(np.maximum(divergence, 0.0))


def best_constant(train_human) -> list[float]:
    """The one distribution q minimising the mean JS distance to the training split's vote distributions: a
    softmax parametrisation searched by L-BFGS from the training mean, polished by Nelder-Mead."""
    import numpy as np
    from scipy.optimize import minimize

    human = np.asarray(train_human, dtype=np.float64)

    def loss(z):
        q = np.exp(z - z.max())
        return float(_js_distance_rows(human, q / q.sum()).mean())

    start = np.log(human.mean(0) + 1e-6)
    fit = minimize(loss, start, method="L-BFGS-B")
    fit = minimize(loss, fit.x, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000})
    q = np.exp(fit.x - fit.x.max())
    return (q / q.sum()).tolist()


def constant_distributions(train_human) -> dict[str, list[float]]:
    """``uniform``, ``train_mean`` (the mean training vote distribution) and ``best_constant``, from training only."""
    import numpy as np

    human = np.asarray(train_human, dtype=np.float64)
    k = human.shape[1]
    return {"uniform": [1.0 / k] * k, "train_mean": human.mean(0).tolist(), "best_constant": best_constant(human)}


def score_constant(q: list[float], examples: list) -> dict:
    """The same metrics as a trained run's (the eval collection, the ambiguous third, per-example JSD) for one
    constant prediction over ``examples``."""
    import torch

    from shala_pl.metrics import build_eval_metrics, compute_flat
    from shala_pl.metrics.distribution import entropy, jensen_shannon_distance

    human = torch.tensor([ex.distribution for ex in examples], dtype=torch.float64)
    probs = torch.tensor(q, dtype=torch.float64).expand_as(human)
    metrics = build_eval_metrics(human.shape[1])
    metrics.update(probs, human, torch.tensor([ex.majority for ex in examples]))
    per_example_jsd = jensen_shannon_distance(human, probs)
    return {**compute_flat(metrics), "jsd_top_entropy": float(per_example_jsd[top_third(entropy(human))].mean()),
            "per_example": {"uid": [ex.uid for ex in examples], "jsd": per_example_jsd.tolist()}}


def baseline_runs(train_examples: list, scored_examples: list, dataset: str, split: str) -> tuple[dict, list]:
    """The constants (fitted on ``train_examples``) and their rows, shaped as runs (seed None: nothing varies)."""
    constants = constant_distributions([ex.distribution for ex in train_examples])
    runs = [{"dataset": dataset, "method": name, "seed": None, "train_s": 0.0, f"n_{split}": len(scored_examples),
             **score_constant(q, scored_examples)} for name, q in constants.items()]
    return constants, runs


# -- evidence: skill and paired bootstrap ------------------------------------------------------------------------------
def per_example_matrix(runs: list[dict], uids: list[str]):
    """[seeds, N] per-example JSD of one method's runs, columns in ``uids`` order."""
    import numpy as np

    rows = []
    for run in runs:
        by_uid = dict(zip(run["per_example"]["uid"], run["per_example"]["jsd"]))
        rows.append([by_uid[uid] for uid in uids])
    return np.asarray(rows, dtype=np.float64)


def paired_bootstrap(a, b, factor: float = 1.0, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """mean JSD(a) - factor · mean JSD(b) with a 95% percentile interval. ``a``, ``b``: [seeds, N] over the same
    examples. Paired: both sides get the same resampled examples and, when they have the same seeds (seed s of every
    method shares its initial weights and data order), the same resampled seeds; a side with other seeds (a
    constant has one row) is resampled on its own."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = a.shape[1]
    pairs = rng.integers(0, n, size=(draws, n))
    seeds_a = rng.integers(0, a.shape[0], size=(draws, a.shape[0]))
    seeds_b = seeds_a if a.shape[0] == b.shape[0] else rng.integers(0, b.shape[0], size=(draws, b.shape[0]))

    def resampled_means(matrix, seeds):
        per_seed = matrix[:, pairs].mean(-1)  # [seeds, draws]
        return per_seed[seeds, np.arange(draws)[:, None]].mean(-1)  # [draws]

    diffs = resampled_means(a, seeds_a) - factor * resampled_means(b, seeds_b)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(a.mean() - factor * b.mean()), "ci_low": float(low), "ci_high": float(high)}


def add_evidence(section: dict, runs: list[dict], scored_examples: list) -> dict:
    """Per method: ``skill`` = 1 - JSD / JSD(best_constant), ``vs.<other>`` the paired JSD difference to each of
    ``COMPARED``; for ``shala``, ``vs_top_entropy.shala_unweighted``: the same on the most ambiguous third (the
    weighting on/off). Returns the [seeds, N] matrices, and the ambiguous third's columns under ``"_top"``, for the
    bar checks."""
    from shala_pl.metrics.distribution import entropy

    uids = runs[0]["per_example"]["uid"]
    by_uid = {ex.uid: ex for ex in scored_examples}
    import torch

    top = top_third(entropy(torch.tensor([by_uid[uid].distribution for uid in uids], dtype=torch.float64)))
    matrices = {method: per_example_matrix([r for r in runs if r["method"] == method], uids)
                for method in section["methods"]}
    reference = section["methods"].get("best_constant", {}).get("jsd")
    for method, entry in section["methods"].items():
        entry["skill"] = 1.0 - entry["jsd"] / reference if reference else None
        entry["vs"] = {other: paired_bootstrap(matrices[method], matrices[other]) for other in COMPARED
                       if other in matrices and other != method}
    if all(method in matrices for method in TWO_BY_TWO.values()):
        section["two_by_two"] = two_by_two(matrices)
    if "shala" in matrices and "shala_unweighted" in matrices:
        section["methods"]["shala"]["vs_top_entropy"] = {"shala_unweighted": paired_bootstrap(
            matrices["shala"][:, top], matrices["shala_unweighted"][:, top])}
    return {**matrices, "_top": top}


def two_by_two(matrices: dict) -> dict:
    """The 2x2's paired JSD contrasts: sampled - exact within each KL direction, reverse - forward within each
    gradient (negative = the first is better)."""
    cell = lambda direction, gradient: matrices[TWO_BY_TWO[(direction, gradient)]]
    return {"sampled_minus_exact": {d: paired_bootstrap(cell(d, "sampled"), cell(d, "exact"))
                                    for d in ("forward", "reverse")},
            "reverse_minus_forward": {g: paired_bootstrap(cell("reverse", g), cell("forward", g))
                                      for g in ("exact", "sampled")}}


def two_by_two_lines(section: dict, markdown: bool) -> list[str]:
    """The 2x2 as a small table: each cell's method and test JSD, each row's and column's contrast with its CI."""
    contrasts = section.get("two_by_two")
    if not contrasts:
        return []
    methods = section["methods"]
    ci = lambda c: f"{c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
    cell = lambda d, g: f"{TWO_BY_TWO[(d, g)]} {methods[TWO_BY_TWO[(d, g)]]['jsd']:.4f}"
    rows = [["KL direction", "exact gradient", "sampled gradient", "sampled - exact [95% CI]"]]
    rows += [[f"{d} KL({'p‖π' if d == 'forward' else 'π‖p'})", cell(d, "exact"), cell(d, "sampled"),
              ci(contrasts["sampled_minus_exact"][d])] for d in ("forward", "reverse")]
    rows.append(["reverse - forward [95% CI]", *(ci(contrasts["reverse_minus_forward"][g]) for g in ("exact", "sampled")),
                 ""])
    if markdown:
        return ["| " + " | ".join(rows[0]) + " |", "|---|---:|---:|---:|",
                *("| " + " | ".join(row) + " |" for row in rows[1:])]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["2x2 (test JSD; paired bootstrap, negative = the first is better):",
            *("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows)]


def ci_check(matrices: dict, method: str, other: str, factor: float = 1.0, rows: Optional[list] = None) -> dict:
    """A bar line "method's JSD < factor x other's": holds only when the whole 95% interval of the difference is
    below 0."""
    a, b = matrices[method], matrices[other]
    if rows is not None:
        a, b = a[:, rows], b[:, rows]
    result = paired_bootstrap(a, b, factor)
    return {"holds": result["ci_high"] < 0, **result}


def point_check(holds: bool, **values: float) -> dict:
    """A bar line on point estimates (no per-example decomposition to resample, e.g. macro-F1)."""
    return {"holds": bool(holds), "point_estimate": True, **values}


# -- aggregation -------------------------------------------------------------------------------------------------------
def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(runs: list[dict], methods: list[str]) -> dict:
    """Method -> mean and ``<key>_std`` over its runs of every numeric run value, and ``n_seeds``."""
    out = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        entry = {}
        keys = [k for k in mine[0] if isinstance(mine[0][k], (int, float)) and not isinstance(mine[0][k], bool)
                and k not in ("seed", "steps")]
        for key in keys:
            entry[key], entry[key + "_std"] = _mean_std([r.get(key) for r in mine])
        entry["n_seeds"] = len(mine)
        out[method] = entry
    return out


def without_per_example(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in run.items() if k != "per_example"} for run in runs]


def json_ready(value):
    """NaN -> None, recursively: the JSON stays standard JSON (an undefined correlation is null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(result), indent=2, allow_nan=False))


# -- rendering ---------------------------------------------------------------------------------------------------------
def _ci_text(entry: dict, other: str) -> str:
    vs = (entry.get("vs") or {}).get(other)
    if not vs:
        return ""
    return f"{vs['diff']:+.4f} [{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}]"


def _cell(entry: dict, key: str, fmt: Optional[str], show_std: bool) -> str:
    if key == "vs_best_constant":
        return _ci_text(entry, "best_constant")
    value = entry.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = fmt.format(value)
    std = entry.get(key + "_std")
    if show_std and std is not None and entry.get("n_seeds", 1) > 1:
        text += "±" + fmt.format(std).lstrip("+")
    return text


def format_table(section: dict, show_std: bool, markdown: bool = False) -> str:
    headers = ["method"] + [h for _, h, _ in COLUMNS] + ["train s"]
    body = []
    for method, entry in section["methods"].items():
        trained = method not in BASELINES
        body.append([method] + [_cell(entry, k, f, show_std) for k, _, f in COLUMNS]
                    + [f"{entry['train_s']:.0f}" if trained else ""])
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


def bar_lines(bar: dict, markdown: bool) -> list[str]:
    lines = []
    for check, value in bar.items():
        verdict = ("holds" if value["holds"] else "does not hold") if markdown else (
            "HOLDS" if value["holds"] else "DOES NOT HOLD")
        if "ci_high" in value:
            numbers = (f"difference {value['diff']:+.4f}, 95% CI [{value['ci_low']:+.4f}, {value['ci_high']:+.4f}]; "
                       "holds only if the interval is below 0")
        else:
            numbers = ", ".join(f"{k} {v:.4f}" for k, v in value.items() if k not in ("holds", "point_estimate"))
            numbers += "; point estimates"
        lines.append(f"- {check}: **{verdict}** ({numbers})" if markdown else f"bar: {check}: {verdict} ({numbers})")
    return lines


def cache_note(result: dict) -> str:
    return (f"{result['runs_from_cache']} of {result['n_runs']} method runs read from the run cache (trained by an "
            f"earlier invocation of the same command; each method's training time is its train s)")


def describe(name: str, section: dict, split: str = "test") -> str:
    votes = "/".join(str(v) for v in section["votes_per_example"])
    text = (f"{name}: {split} split of {section[f'n_{split}']} examples ({votes} votes each), trained on "
            f"{section['n_train']}; {section['steps']} optimizer steps; seeds {section['seeds']}")
    if section.get("noise_floor_jsd") is not None:
        text += f"; noise floor JSD {section['noise_floor_jsd']:.4f}"
    return text


def markdown_body(result: dict, sections: list[tuple[str, dict]], extra: list[str] = (),
                  heading: str = "###") -> str:
    """The results text: how it was made, then each section's description, table and bar lines, then ``extra``
    (e.g. the real profile's tuning table) and the figure (``result["plot"]``, relative to the page)."""
    split = result.get("split", "test")
    held_out = "held-out test" if split == "test" else "validation"
    lines = ["Generated by `tools/benchmark_methods.py` (do not edit by hand; re-run the command below).", "",
             f"- command: `{result['command']}`",
             f"- machine: {result['machine']}",
             f"- time taken: {result['elapsed_s']:.0f} s ({result['elapsed_s'] / 60:.1f} min), "
             f"profile `{result['profile']}`" + (f"; {cache_note(result)}" if "runs_from_cache" in result else ""),
             f"- metrics on the {held_out} split, `label_probs` readout; mean ± std over seeds where there are "
             f"several; JSD/KL in nats; uniform, train_mean and best_constant are constant predictions fitted on "
             f"the training split only (no model); skill = 1 - JSD / JSD(best_constant); ΔJSD: the paired "
             f"bootstrap ({BOOTSTRAP_DRAWS} draws over {split} examples and seeds) of the JSD difference to "
             f"best_constant, negative = better; H corr / label corr = Pearson correlation across examples of the "
             f"model's entropy with the humans' / of π_k with p_k (mean over labels), n/a for a constant; "
             f"contested AUROC = the model's entropy telling the third of examples with the highest human entropy "
             f"from the rest (0.5 = chance); 'JSD amb.1/3' = mean JSD on that third; H model = mean model entropy",
             ""]
    for name, section in sections:
        lines += [f"{heading} {name}", "", describe(name, section, split), "",
                  format_table(section, True, markdown=True), ""]
        if section.get("two_by_two"):
            lines += [f"Which part matters ({name}): KL direction x gradient, test JSD and paired differences "
                      f"(negative = the first is better):", "", *two_by_two_lines(section, True), ""]
        if section.get("bar"):
            lines += [f"Bar ({name}; JSD lines from the paired bootstrap):", "", *bar_lines(section["bar"], True), ""]
    lines += list(extra)
    if result.get("plot"):
        lines += [f"{heading} JSD by human-entropy bin", "", f"![JSD by human-entropy bin]({result['plot']})", ""]
    return "\n".join(lines)


def splice(existing: str, start: str, end: str, body: str) -> Optional[str]:
    """``existing`` with the text between the ``start``/``end`` markers replaced by ``body``; None when it lacks
    them."""
    if start not in existing or end not in existing:
        return None
    before, rest = existing.split(start, 1)
    return before + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def write_page(out: Path, body: str, markers: tuple[str, str], title: str, after: Optional[str] = None) -> None:
    """Write ``body`` into ``out`` between ``markers`` if it has them; else, if it holds the ``after`` marker, as a
    new "## title" section right after that marker's line; else as a page of its own (or a section at the end of
    an existing page), the markers included."""
    existing = out.read_text() if out.exists() else ""
    text = splice(existing, *markers, body)
    if text is None and after and after in existing:
        head, tail = existing.split(after, 1)
        first, newline, rest = tail.partition("\n")
        text = (head + after + first + newline + f"\n## {title}\n\n{markers[0]}\n{body}\n{markers[1]}\n" + rest)
    if text is None:  # a page of its own, or a section added at the end; with the markers, so a re-run splices
        block = f"{markers[0]}\n{body}\n{markers[1]}\n"
        text = f"# {title}\n\n{block}" if not existing else existing + f"\n## {title}\n\n{block}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def plot(sections: list[tuple[str, dict]], out: Path, split: str = "test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [(name, section) for name, section in sections if section.get("methods")]
    fig, axes = plt.subplots(1, len(sections), figsize=(9.5 * len(sections), 4.8), squeeze=False)
    for ax, (name, section) in zip(axes[0], sections):
        methods = list(section["methods"])
        n_bins = len([k for k in section["methods"][methods[0]] if k.startswith("jsd_bin") and not k.endswith("_std")])
        width = 0.85 / len(methods)
        for i, method in enumerate(methods):
            entry = section["methods"][method]
            xs = [b + (i - (len(methods) - 1) / 2) * width for b in range(n_bins)]
            ys = [entry[f"jsd_bin{b}"] if entry[f"jsd_bin{b}"] is not None else float("nan") for b in range(n_bins)]
            errs = [entry.get(f"jsd_bin{b}_std") or 0.0 for b in range(n_bins)]
            ax.bar(xs, ys, width, yerr=errs, label=method, capsize=2, color=plt.cm.tab20(i % 20),
                   hatch="//" if method in BASELINES else None)
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
        ax.set_ylabel(f"JS distance to human votes ({split})")
        ax.set_title(f"{name}: {section['steps']} steps, {len(section['seeds'])} seed(s)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("JSD by human-entropy bin (lower is better; hatched: constants fitted on the training split; "
                 "error bars: std over seeds)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


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
