"""Prove the method: train and evaluate every method on the same data, model size and number of optimizer steps.

    python tools/benchmark_methods.py [--quick | --smoke] [--seeds N] [--steps N] [--json OUT] [--plot OUT.png]
        [--markdown OUT.md] [--datasets synthetic,snli] [--methods a,b] [--variant NAME=METHOD ARGS...] [--jobs N]

    python tools/benchmark_methods.py --profile real --model DIR --source SOURCE --data PATH [--quick | --smoke]
        [--seeds N] [--json OUT] [--plot OUT.png] [--markdown README.md]   (see tools/benchmark_real.py)

Methods (each one is ``configs/quickstart.yaml`` composed with ``configs/method/<name>.yaml``, exactly as on the
command line): zero_shot, sft_majority, sft_soft, grpo_majority, grpo_vote_share, shala_unweighted, shala.
Datasets: ``synthetic`` (the quickstart's task: known true distributions, 20 votes per example) and ``snli`` (the
real SNLI sample, 5 votes per pair; trained on one part, evaluated on the rest).

Every run goes through the project itself: ``cli_main([...], run=False)`` builds the LightningModule, the
VoteDataModule and the Trainer from the configs; the run is ``trainer.fit`` (not for zero_shot), then
``trainer.test`` on the held-out test split (the module's own metrics, ``label_probs`` readout) and
``trainer.predict`` over the same split for per-example distributions. From those, the JSD on the most ambiguous
third of the test examples (by human vote entropy) uses ``shala_pl.metrics.distribution``.

Seeds vary the tiny model's initial weights (one tiny model is built per seed, same architecture and tokenizer),
the data order and the rollout sampling; the data and its split stay fixed. All methods get the same optimizer
config (the run config's AdamW), the same batch size and the same number of optimizer steps; the supervised
baselines also get the gradient-norm clipping (1.0) that GRPOModule applies itself.

``--split val``: every run is scored on the validation split instead (``trainer.validate`` and ``predict`` over it),
for choices such as an ablation's ``--variant``: choose on validation, report on test. The bar is not checked then.

``--quick``: 2 seeds, fewer steps on SNLI, within about 10 minutes on 2 CPU cores. ``--smoke``: a few steps on a
few examples, 1 seed, for CI (shape only). The default (full) run uses 3 seeds and more SNLI steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from benchmark_common import (EVAL_ONLY, METHODS, REPO, RESULTS_END, RESULTS_START, SUPERVISED, _quiet, aggregate,
                              format_table, machine, method_config, plot, test_metrics, trainer_args)

RUN_CONFIG = REPO / "configs" / "quickstart.yaml"
SNLI_CANDIDATES = (REPO / "tests" / "fixtures" / "snli_1.0_test_part.jsonl",
                   Path("/work/shared/data/snli_1.0_test_part.jsonl"))


# -- profiles --------------------------------------------------------------------------------------------------------
@dataclass
class Profile:
    name: str
    seeds: int
    steps: dict  # dataset -> optimizer steps
    synthetic_examples: int = 2000
    synthetic_annotators: int = 20
    snli_examples: Optional[int] = None  # first N pairs of the file; None: all
    eval_batch_size: int = 100
    extra: dict = field(default_factory=dict)


PROFILES = {
    "full": Profile("full", seeds=3, steps={"synthetic": 150, "snli": 150}),
    "quick": Profile("quick", seeds=2, steps={"synthetic": 150, "snli": 60}),
    "smoke": Profile("smoke", seeds=1, steps={"synthetic": 3, "snli": 2}, synthetic_examples=120,
                     snli_examples=120, eval_batch_size=64),
}


# -- one run -----------------------------------------------------------------------------------------------------------
def dataset_args(dataset: str, profile: Profile, snli_path: Optional[str]) -> list[str]:
    common = [f"--data.eval_batch_size={profile.eval_batch_size}", "--data.split=random", "--data.split_seed=0"]
    if dataset == "synthetic":
        options = {"n_examples": profile.synthetic_examples, "n_annotators": profile.synthetic_annotators}
        return common + ["--data.source=synthetic", f"--data.source_options={json.dumps(options)}",
                         "--data.val_fraction=0.1", "--data.test_fraction=0.1"]
    if dataset == "snli":
        # a small validation split (unused during the benchmark's training), 30% held out for the test
        return common + ["--data.source=snli", f"--data.path={snli_path}", "--data.source_options={}",
                         "--data.val_fraction=0.05", "--data.test_fraction=0.3"]
    raise ValueError(f"unknown dataset {dataset!r}; expected synthetic or snli")


def run_args(spec: dict) -> list[str]:
    """The CLI arguments of one run: the run config, the method config, then the benchmark's overrides."""
    args = ["--config", str(RUN_CONFIG), "--config", str(method_config(spec["base_method"])),
            *trainer_args(spec)]
    if spec["base_method"] in SUPERVISED:
        args.append("--trainer.gradient_clip_val=1.0")  # GRPOModule clips at 1.0 itself (manual optimization)
    return args + list(spec["extra_args"])


def run_one(spec: dict) -> dict:
    """Train (unless zero-shot) and evaluate one method on one dataset with one seed; a dict of numbers."""
    _quiet()
    from shala_pl.cli import cli_main

    Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
    cli = cli_main(run_args(spec), run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    if spec["base_method"] not in EVAL_ONLY:
        trainer.fit(model, datamodule=data)
    train_s = time.perf_counter() - start
    return {
        "dataset": spec["dataset"], "method": spec["method"], "seed": spec["seed"], "steps": spec["steps"],
        "global_step": int(trainer.global_step), "train_s": round(train_s, 2),
        **test_metrics(trainer, model, data, spec.get("split", "test")),
    }


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _quiet()


# -- data facts --------------------------------------------------------------------------------------------------------
def eval_facts(dataset: str, data_args: list[str], model_dir: str, split: str = "test") -> dict:
    """Facts of the evaluated split (test, or val under ``--split val``) from the DataModule the runs use: size, votes
    per example and (synthetic) the noise floor."""
    from shala_pl.cli import cli_main

    args = ["--config", str(RUN_CONFIG), "--config", str(method_config("zero_shot")),
            f"--model.init_args.name_or_path={model_dir}", "--trainer.logger=false", *data_args]
    data = cli_main(args, run=False).datamodule
    scored = data.examples(split)
    facts = {"n_train": len(data.examples("train")), f"n_{split}": len(scored),
             "votes_per_example": sorted({int(round(ex.total_votes)) for ex in scored}), "labels": data.label_names,
             "noise_floor_jsd": None, "noise_floor_bins": None}
    if dataset == "synthetic":
        import torch

        from shala_pl.data.sources.synthetic import noise_floor_jsd
        from shala_pl.metrics.distribution import EntropyBinnedJSD

        facts["noise_floor_jsd"] = noise_floor_jsd(scored)  # JSD(true distribution, sampled votes) on these examples
        binned = EntropyBinnedJSD(3, len(data.label_names))  # the same bins as the test metric's jsd_bin*
        binned.update(torch.tensor([ex.true_distribution for ex in scored], dtype=torch.float64),
                      torch.tensor([ex.distribution for ex in scored], dtype=torch.float64))
        facts["noise_floor_bins"] = [float(x) for x in binned.compute()]
    return facts


# -- aggregation and output --------------------------------------------------------------------------------------------
def bar_checks(methods: dict, noise_floor: Optional[float]) -> dict:
    """The issue's bar on the synthetic task (means over seeds)."""
    checks = {}
    if "shala" in methods and "grpo_majority" in methods:
        s, g = methods["shala"], methods["grpo_majority"]
        checks["jsd_at_most_half_of_grpo_majority"] = {
            "holds": s["jsd"] <= 0.5 * g["jsd"], "shala": s["jsd"], "limit": 0.5 * g["jsd"]}
        checks["f1_not_lower_than_grpo_majority"] = {
            "holds": s["f1_macro"] >= g["f1_macro"], "shala": s["f1_macro"], "grpo_majority": g["f1_macro"]}
    if "shala" in methods and noise_floor is not None:
        checks["jsd_within_1.5x_noise_floor"] = {
            "holds": methods["shala"]["jsd"] <= 1.5 * noise_floor, "shala": methods["shala"]["jsd"],
            "limit": 1.5 * noise_floor}
    if "shala" in methods and "shala_unweighted" in methods:
        s, u = methods["shala"], methods["shala_unweighted"]
        checks["weighting_beats_unweighted_on_ambiguous_third"] = {
            "holds": s["jsd_top_entropy"] < u["jsd_top_entropy"], "shala": s["jsd_top_entropy"],
            "shala_unweighted": u["jsd_top_entropy"]}
    return checks


def describe(name: str, section: dict, split: str = "test") -> str:
    votes = "/".join(str(v) for v in section["votes_per_example"])
    text = (f"{name}: {split} split of {section[f'n_{split}']} examples ({votes} votes each), trained on "
            f"{section['n_train']}; {section['steps']} optimizer steps; seeds {section['seeds']}")
    if section.get("noise_floor_jsd") is not None:
        text += f"; noise floor JSD {section['noise_floor_jsd']:.4f}"
    return text


def write_markdown(result: dict, out: Path, plot_path: Optional[Path], command: str) -> None:
    """A results page at ``out``; if ``out`` already holds the ``RESULTS_START``/``RESULTS_END`` markers (the
    README's Results section), only the text between them is replaced, with headings one level down."""
    existing = out.read_text() if out.exists() else ""
    embed = RESULTS_START in existing and RESULTS_END in existing
    split = result.get("split", "test")
    held_out = "held-out test" if split == "test" else "validation"
    lines = ([] if embed else ["# Benchmark results", ""]) + [
             "Generated by `tools/benchmark_methods.py` (do not edit by hand; re-run the command below).", "",
             f"- command: `{command}`",
             f"- machine: {result['machine']}",
             f"- time taken: {result['elapsed_s']:.0f} s ({result['elapsed_s'] / 60:.1f} min), "
             f"profile `{result['profile']}`",
             f"- metrics on the {held_out} split, `label_probs` readout; mean ± std over seeds "
             f"{result['seeds']}; JSD/KL in nats, H = mean entropy (nats) of the model's / the human distributions; "
             f"'JSD amb.1/3' = mean JSD on the third of the {split} examples with the highest human vote entropy",
             ""]
    for name in ("synthetic", "snli"):
        section = result.get(name)
        if not isinstance(section, dict) or not section.get("methods"):
            continue
        heading = "###" if embed else "##"
        lines += [f"{heading} {name}", "", describe(name, section, split), "",
                  format_table(section, True, markdown=True), ""]
        if name == "synthetic" and result.get("bar"):
            lines += ["Bar (synthetic, means over seeds):", ""]
            for check, value in result["bar"].items():
                numbers = ", ".join(f"{k} {v:.4f}" for k, v in value.items() if k != "holds")
                lines.append(f"- {check}: **{'holds' if value['holds'] else 'does not hold'}** ({numbers})")
            lines.append("")
    if plot_path is not None:
        rel = os.path.relpath(plot_path, out.parent)
        lines += [f"{'###' if embed else '##'} JSD by human-entropy bin", "", f"![JSD by human-entropy bin]({rel})", ""]
    text = "\n".join(lines)
    if embed:
        before, rest = existing.split(RESULTS_START, 1)
        text = before + RESULTS_START + "\n" + text + "\n" + RESULTS_END + rest.split(RESULTS_END, 1)[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


# -- main ------------------------------------------------------------------------------------------------------------
def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``NAME=METHOD ARG ARG...``: an extra row, METHOD's config plus CLI overrides (for ablations)."""
    name, _, rest = text.partition("=")
    parts = shlex.split(rest)
    if not name or not parts or parts[0] not in METHODS:
        raise argparse.ArgumentTypeError(f"--variant expects NAME=METHOD [ARGS...] with METHOD in {METHODS}")
    return name, parts[0], parts[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 seeds, fewer SNLI steps: ~10 minutes on 2 cores")
    mode.add_argument("--smoke", action="store_true", help="a tiny run for CI; check the output's shape only")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...); default from the profile")
    parser.add_argument("--steps", type=int, help="optimizer steps on every dataset (default from the profile)")
    parser.add_argument("--datasets", default="synthetic,snli", help="comma-separated: synthetic, snli")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all; "
                        "the real profile's --quick: zero_shot, sft_soft, grpo_majority, shala, shala_exact)")
    real = parser.add_argument_group("real profile (a pretrained LLM on a vote file; see tools/benchmark_real.py)")
    real.add_argument("--profile", choices=("synthetic", "real"), default="synthetic")
    real.add_argument("--model", type=Path, help="the model directory (e.g. artifacts/smollm2-135m-instruct)")
    real.add_argument("--source", help="data source: chaosnli_snli, chaosnli_mnli, snli, mnli, jsonl, ...")
    real.add_argument("--data", type=Path, help="the data file")
    real.add_argument("--source-options", default="{}", help="JSON: data.source_options (e.g. for jsonl)")
    real.add_argument("--split-seed", type=int, default=0, help="seed of the sample of the file that is split")
    parser.add_argument("--variant", action="append", default=[], type=parse_variant, metavar="NAME=METHOD ARGS",
                        help="an extra row: METHOD's config plus CLI overrides, e.g. "
                             "'shala_group=shala --model.init_args.advantage_scaling=group' (repeatable)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="the split every run is scored on (default test; val: for choices, e.g. between "
                             "--variant rows; the bar is checked on test only)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="write the JSD-by-entropy-bin figure (PNG) here")
    parser.add_argument("--markdown", type=Path,
                        help="write a results page (table, command, machine, time) here; a file with the "
                             f"{RESULTS_START} / {RESULTS_END} markers (README.md) gets only that section replaced")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: the CPU cores available, at most 2; 1 under --smoke)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per run (default 1: the tiny model gains nothing from more, and "
                             "several threads slow down badly when the cores are shared)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the per-seed tiny models are built (default: artifacts/benchmark/models; "
                             "a temporary folder under --smoke)")
    parser.add_argument("--snli-path", type=Path, help="the SNLI sample (default: the test fixture)")
    parser.add_argument("--render", type=Path, metavar="RESULTS.json",
                        help="run nothing: write --plot / --markdown from the JSON of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        if args.plot:
            plot(result, args.plot)
        if args.markdown:
            write_markdown(result, args.markdown, args.plot, result["command"])
        return 0
    if args.profile == "real":
        if args.split != "test":
            parser.error("--split val is for the synthetic profile: the real profile already chooses on validation")
        from benchmark_real import main_real  # imports benchmark_common only: no cycle

        return main_real(args, parser, argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    _quiet()

    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    n_seeds = args.seeds if args.seeds is not None else profile.seeds
    seeds = list(range(n_seeds))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    methods = [m.strip() for m in (args.methods or ",".join(METHODS)).split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(datasets) - {"synthetic", "snli"})
    if unknown:
        parser.error(f"unknown method(s)/dataset(s): {unknown}")
    rows = [(m, m, []) for m in methods] + list(args.variant)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = args.jobs or (1 if args.smoke else max(1, min(2, cores)))

    tmp = tempfile.TemporaryDirectory(prefix="shala-bench-")
    models_dir = args.models_dir or (Path(tmp.name) / "models" if args.smoke else REPO / "artifacts/benchmark/models")
    from shala_pl.models.tiny import ensure_tiny_model

    model_dirs = {seed: str(ensure_tiny_model(models_dir / f"tiny-qwen2-seed{seed}", seed=seed)) for seed in seeds}

    snli_path = args.snli_path
    if "snli" in datasets:
        if snli_path is None:
            snli_path = next((p for p in SNLI_CANDIDATES if p.exists()), None)
            if snli_path is None:
                parser.error(f"no SNLI sample found at {[str(p) for p in SNLI_CANDIDATES]}; pass --snli-path")
        if profile.snli_examples:  # the first N pairs, as a file the snli source reads
            subset = Path(tmp.name) / "snli_subset.jsonl"
            with open(snli_path) as src:
                subset.write_text("".join(line for _, line in zip(range(profile.snli_examples), src)))
            snli_path = subset

    result = {"profile": profile.name, "dataset": "synthetic", "seeds": seeds, "machine": machine(),
              "command": "python tools/benchmark_methods.py " + " ".join(shlex.quote(a) for a in
                                                                         (argv if argv is not None else sys.argv[1:]))}
    specs, sections = [], {}
    for dataset in datasets:
        steps = args.steps if args.steps is not None else profile.steps[dataset]
        data_args = dataset_args(dataset, profile, str(snli_path) if snli_path else None)
        facts = eval_facts(dataset, data_args, model_dirs[seeds[0]], args.split)
        sections[dataset] = {**facts, "steps": steps, "seeds": seeds, "dataset": dataset}
        for name, base, extra in rows:
            for seed in seeds:
                specs.append({"dataset": dataset, "method": name, "base_method": base, "extra_args": extra,
                              "seed": seed, "steps": steps, "model_dir": model_dirs[seed], "data_args": data_args,
                              "split": args.split,
                              "workdir": str(Path(tmp.name) / "runs" / dataset / name / f"seed{seed}")})
    # longest first, so the last job to finish is a short one
    specs.sort(key=lambda s: (s["base_method"] in EVAL_ONLY, s["dataset"] != "snli"))
    print(f"{len(specs)} runs ({', '.join(datasets)}; {len(rows)} methods; seeds {seeds}) on {jobs} worker(s)",
          flush=True)

    runs = []

    def done(run: dict) -> None:
        runs.append(run)
        print(f"[{time.perf_counter() - started:6.0f}s] {run['dataset']:<9} {run['method']:<18} seed {run['seed']}: "
              f"jsd {run['jsd']:.4f} f1 {run['f1_macro']:.3f} amb.1/3 {run['jsd_top_entropy']:.4f} "
              f"({run['train_s']:.0f}s training)", flush=True)

    if jobs == 1:
        _init_worker(args.threads)
        for spec in specs:
            done(run_one(spec))
    else:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(args.threads,)) as pool:
            for run in pool.map(run_one, specs):
                done(run)

    names = [name for name, _, _ in rows]
    for dataset, section in sections.items():
        mine = sorted((r for r in runs if r["dataset"] == dataset), key=lambda r: (names.index(r["method"]), r["seed"]))
        section["methods"] = aggregate(mine, names)
        section["runs"] = mine
        for key in ("steps", "seeds"):
            result[f"{dataset}_{key}"] = section[key]
    syn = sections.get("synthetic")
    result.update({
        "methods": syn["methods"] if syn else {},
        "noise_floor_jsd": syn["noise_floor_jsd"] if syn else None,
        "steps": syn["steps"] if syn else None,
        "synthetic": syn,
        "snli": sections.get("snli"),
        "bar": bar_checks(syn["methods"], syn["noise_floor_jsd"]) if syn and args.split == "test" else {},
        "jobs": jobs,
    })
    if args.split != "test":
        result["split"] = args.split
    result["elapsed_s"] = round(time.perf_counter() - started, 1)

    print()
    for name in ("synthetic", "snli"):
        if sections.get(name):
            print(describe(name, sections[name], args.split))
            print(format_table(sections[name], show_std=len(seeds) > 1))
            print()
    for check, value in result["bar"].items():
        numbers = ", ".join(f"{k} {v:.4f}" for k, v in value.items() if k != "holds")
        print(f"bar: {check}: {'HOLDS' if value['holds'] else 'DOES NOT HOLD'} ({numbers})")
    print(f"elapsed {result['elapsed_s']:.0f} s on {result['machine']}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(result, args.plot)
    if args.markdown:
        write_markdown(result, args.markdown, args.plot, result["command"])
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
