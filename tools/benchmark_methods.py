"""Prove the method: train and evaluate every method on the same data, model size and number of optimizer steps.

    python tools/benchmark_methods.py [--quick | --smoke] [--seeds N] [--steps N] [--json OUT] [--plot OUT.png]
        [--markdown OUT.md] [--datasets synthetic,snli] [--methods a,b] [--variant NAME=METHOD ARGS...] [--jobs N]

    python tools/benchmark_methods.py --profile real --model DIR --source SOURCE --data PATH [--quick | --smoke]
        [--seeds N] [--json OUT] [--plot OUT.png] [--markdown README.md]   (see tools/benchmark_real.py)
    python tools/benchmark_methods.py --profile real-long --model DIR --source SOURCE --data PATH
        [--train-extra SNLI.jsonl] [--cache-dir DIR] ...   (whole epochs, 3 seeds, runs cached on disk)

Methods: every ``configs/method/<name>.yaml``, each composed with ``configs/quickstart.yaml`` exactly as on the
command line (zero_shot, sft_majority, sft_soft, grpo_forward_kl, grpo_majority, grpo_vote_share, shala,
shala_exact, shala_unweighted); plus three constant predictions fitted on the training split only, no model:
``uniform``, ``train_mean`` (the mean training vote distribution) and ``best_constant`` (the distribution with the
lowest mean training JSD). Each row's ``skill`` = 1 - JSD / JSD(best_constant) and its paired-bootstrap JSD
difference to best_constant, grpo_majority and sft_soft (95% interval, over test examples and seeds) are in the
JSON (``vs``) and the table; a bar line holds only when its interval excludes 0.
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
baselines' method configs set the gradient-norm clipping (1.0) that GRPOModule applies itself.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import benchmark_common as shared

RUN_CONFIG = shared.REPO / "configs" / "quickstart.yaml"
SNLI_CANDIDATES = (shared.REPO / "tests" / "fixtures" / "snli_1.0_test_part.jsonl",
                   Path("/work/shared/data/snli_1.0_test_part.jsonl"))
DATASETS = ("synthetic", "snli")


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
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def run_one(spec: dict) -> dict:
    """Train (unless zero-shot) and evaluate one method on one dataset with one seed; a dict of numbers."""
    shared.quiet()
    from shala_pl.cli import cli_main

    Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
    cli = cli_main(shared.run_command(RUN_CONFIG, spec["base_method"], spec, spec["extra_args"]), run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    if spec["base_method"] not in shared.EVAL_ONLY:
        trainer.fit(model, datamodule=data)
    train_s = time.perf_counter() - start
    return {
        "dataset": spec["dataset"], "method": spec["method"], "seed": spec["seed"], "steps": spec["steps"],
        "global_step": int(trainer.global_step), "train_s": round(train_s, 2),
        **shared.test_metrics(trainer, model, data, spec.get("split", "test")),
    }


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    shared.quiet()


# -- data facts --------------------------------------------------------------------------------------------------------
def eval_data(dataset: str, data_args: list[str], model_dir: str, split: str = "test") -> tuple[dict, list, list]:
    """Facts of the evaluated split (test, or val under ``--split val``) from the DataModule the runs use: size, votes
    per example and (synthetic) the noise floor; with the training and the evaluated examples."""
    from shala_pl.cli import cli_main

    args = ["--config", str(RUN_CONFIG), "--config", str(shared.method_config("zero_shot")),
            f"--model.init_args.name_or_path={model_dir}", "--trainer.logger=false", *data_args]
    data = cli_main(args, run=False).datamodule
    train, scored = data.examples("train"), data.examples(split)
    facts = {"n_train": len(train), f"n_{split}": len(scored),
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
    return facts, train, scored


# -- the bar -----------------------------------------------------------------------------------------------------------
def bar_checks(methods: dict, matrices: dict, noise_floor: Optional[float]) -> dict:
    """The issue's bar on the synthetic task: JSD claims from the paired bootstrap, F1 and the noise floor on means."""
    checks = {}
    if "shala" in methods and "best_constant" in methods:
        checks["jsd_below_best_constant"] = shared.ci_check(matrices, "shala", "best_constant")
    if "shala" in methods and "grpo_majority" in methods:
        s, g = methods["shala"], methods["grpo_majority"]
        checks["jsd_at_most_half_of_grpo_majority"] = shared.ci_check(matrices, "shala", "grpo_majority", 0.5)
        checks["f1_not_lower_than_grpo_majority"] = shared.point_check(
            s["f1_macro"] >= g["f1_macro"], shala=s["f1_macro"], grpo_majority=g["f1_macro"])
    if "shala" in methods and noise_floor is not None:
        checks["jsd_within_1.5x_noise_floor"] = shared.point_check(
            methods["shala"]["jsd"] <= 1.5 * noise_floor, shala=methods["shala"]["jsd"], limit=1.5 * noise_floor)
    if "shala" in methods and "shala_unweighted" in methods:
        checks["weighting_beats_unweighted_on_ambiguous_third"] = shared.ci_check(
            matrices, "shala", "shala_unweighted", rows=matrices["_top"])
    return checks


# -- parse / plan / run / report -----------------------------------------------------------------------------------------
def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``NAME=METHOD ARG ARG...``: an extra row, METHOD's config plus CLI overrides (for ablations)."""
    name, _, rest = text.partition("=")
    parts = shlex.split(rest)
    if not name or not parts or parts[0] not in shared.METHODS:
        raise argparse.ArgumentTypeError(f"--variant expects NAME=METHOD [ARGS...] with METHOD in {shared.METHODS}")
    return name, parts[0], parts[1:]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 seeds, fewer SNLI steps: ~10 minutes on 2 cores")
    mode.add_argument("--smoke", action="store_true", help="a tiny run for CI; check the output's shape only")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...); default from the profile")
    parser.add_argument("--steps", type=int, help="optimizer steps on every dataset (default from the profile)")
    parser.add_argument("--datasets", default="synthetic,snli", help="comma-separated: synthetic, snli")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all; "
                        "the real profile's --quick: zero_shot, sft_soft, grpo_majority, shala, shala_exact); the "
                        "constants are always there, so '--methods best_constant' runs only them")
    real = parser.add_argument_group("real profiles (a pretrained LLM on a vote file; see tools/benchmark_real.py)")
    real.add_argument("--profile", choices=("synthetic", "real", "real-long"), default="synthetic")
    real.add_argument("--model", type=Path, help="the model directory (e.g. artifacts/smollm2-135m-instruct)")
    real.add_argument("--source", help="data source: chaosnli_snli, chaosnli_mnli, snli, mnli, jsonl, ...")
    real.add_argument("--data", type=Path, help="the data file")
    real.add_argument("--source-options", default="{}", help="JSON: data.source_options (e.g. for jsonl)")
    real.add_argument("--split-seed", type=int, default=0, help="seed of the sample of the file that is split")
    real.add_argument("--train-extra", type=Path, metavar="SNLI.jsonl",
                      help="add this SNLI file's pairs (5 votes each) to the training split only, never to "
                           "validation or test (NLI sources)")
    real.add_argument("--cache-dir", type=Path,
                      help="keep each finished run here, keyed by (method, seed, settings), so an interrupted "
                           "profile continues where it stopped (default for real-long: runs/benchmark_cache)")
    real.add_argument("--chosen-from", type=Path, metavar="RESULTS.json",
                      help="no learning-rate sweep: every seed runs the candidate that seed 0 chose on validation "
                           "in this earlier real-profile JSON (same data and split)")
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
                             f"{shared.RESULTS_START} / {shared.RESULTS_END} markers (README.md) gets only that "
                             "section replaced")
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
    return parser


@dataclass
class Plan:
    profile: Profile
    seeds: list
    rows: list  # (name, base method, extra CLI args)
    jobs: int
    specs: list
    sections: dict  # dataset -> facts (filled with methods/runs by report)
    examples: dict  # dataset -> (train examples, scored examples)
    tmp: tempfile.TemporaryDirectory


def plan(args, parser) -> Plan:
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    seeds = list(range(args.seeds if args.seeds is not None else profile.seeds))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    methods = shared.chosen_methods(args.methods, shared.METHODS)
    unknown = sorted(set(methods) - set(shared.METHODS)) + sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown method(s)/dataset(s): {unknown}")
    rows = [(m, m, []) for m in methods] + list(args.variant)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = args.jobs or (1 if args.smoke else max(1, min(2, cores)))

    tmp = tempfile.TemporaryDirectory(prefix="shala-bench-")
    models_dir = args.models_dir or (Path(tmp.name) / "models" if args.smoke else
                                     shared.REPO / "artifacts/benchmark/models")
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

    specs, sections, examples = [], {}, {}
    for dataset in datasets:
        steps = args.steps if args.steps is not None else profile.steps[dataset]
        data_args = dataset_args(dataset, profile, str(snli_path) if snli_path else None)
        facts, train, scored = eval_data(dataset, data_args, model_dirs[seeds[0]], args.split)
        sections[dataset] = {"dataset": dataset, **facts, "steps": steps, "seeds": seeds}
        examples[dataset] = (train, scored)
        for name, base, extra in rows:
            for seed in seeds:
                specs.append({"dataset": dataset, "method": name, "base_method": base, "extra_args": extra,
                              "seed": seed, "steps": steps, "model_dir": model_dirs[seed], "data_args": data_args,
                              "split": args.split,
                              "workdir": str(Path(tmp.name) / "runs" / dataset / name / f"seed{seed}")})
    # longest first, so the last job to finish is a short one
    specs.sort(key=lambda s: (s["base_method"] in shared.EVAL_ONLY, s["dataset"] != "snli"))
    return Plan(profile, seeds, rows, jobs, specs, sections, examples, tmp)


def run(plan: Plan, threads: int, started: float) -> list[dict]:
    print(f"{len(plan.specs)} runs ({', '.join(plan.sections)}; {len(plan.rows)} methods; seeds {plan.seeds}) on "
          f"{plan.jobs} worker(s)", flush=True)
    runs = []

    def done(run: dict) -> None:
        runs.append(run)
        print(f"[{time.perf_counter() - started:6.0f}s] {run['dataset']:<9} {run['method']:<18} seed {run['seed']}: "
              f"jsd {run['jsd']:.4f} f1 {run['f1_macro']:.3f} amb.1/3 {run['jsd_top_entropy']:.4f} "
              f"({run['train_s']:.0f}s training)", flush=True)

    if plan.jobs == 1:
        _init_worker(threads)
        for spec in plan.specs:
            done(run_one(spec))
    else:
        import multiprocessing

        with ProcessPoolExecutor(plan.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            for result in pool.map(run_one, plan.specs):
                done(result)
    return runs


def report(plan: Plan, runs: list[dict], args, argv: list[str], started: float) -> dict:
    """Baselines, aggregation, evidence and the bar per dataset, then the printed tables and the written files."""
    names = [*shared.BASELINES, *(name for name, _, _ in plan.rows)]
    for dataset, section in plan.sections.items():
        train, scored = plan.examples[dataset]
        section["constants"], constant_runs = shared.baseline_runs(train, scored, dataset, args.split)
        mine = constant_runs + sorted((r for r in runs if r["dataset"] == dataset),
                                      key=lambda r: (names.index(r["method"]), r["seed"]))
        section["methods"] = shared.aggregate(mine, names)
        matrices = shared.add_evidence(section, mine, scored)
        section["runs"] = shared.without_per_example([r for r in mine if r["method"] not in shared.BASELINES])
        if args.split == "test" and dataset == "synthetic":
            section["bar"] = bar_checks(section["methods"], matrices, section["noise_floor_jsd"])
    result = {"profile": plan.profile.name, "seeds": plan.seeds, "machine": shared.machine(), "jobs": plan.jobs,
              "command": "python tools/benchmark_methods.py " + " ".join(shlex.quote(a) for a in argv),
              **({"split": args.split} if args.split != "test" else {}), **plan.sections,
              "elapsed_s": round(time.perf_counter() - started, 1)}
    print()
    for name, section in sections_of(result):
        print(shared.describe(name, section, args.split))
        print(shared.format_table(section, show_std=len(plan.seeds) > 1))
        print(*shared.two_by_two_lines(section, markdown=False), sep="\n")
        print(*shared.bar_lines(section.get("bar", {}), markdown=False), sep="\n")
        print()
    print(f"elapsed {result['elapsed_s']:.0f} s on {result['machine']}")
    write_outputs(result, args)
    return result


def sections_of(result: dict) -> list[tuple[str, dict]]:
    return [(name, result[name]) for name in DATASETS if isinstance(result.get(name), dict)]


def write_outputs(result: dict, args) -> None:
    if args.plot:
        shared.plot(sections_of(result), args.plot, result.get("split", "test"))
        result["plot"] = os.path.relpath(args.plot, args.markdown.parent) if args.markdown else str(args.plot)
    if args.json:
        shared.write_json(result, args.json)
    if args.markdown:
        write_markdown(result, args.markdown)


def write_markdown(result: dict, out: Path) -> None:
    """A results page at ``out``; if ``out`` already holds the ``RESULTS_START``/``RESULTS_END`` markers (the
    README's Results section), only the text between them is replaced."""
    shared.write_page(out, shared.markdown_body(result, sections_of(result)),
                      (shared.RESULTS_START, shared.RESULTS_END), "Benchmark results")


def main(argv=None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.render.read_text())
        if result["profile"].startswith("real"):
            from benchmark_real import write_outputs as write_real  # imports benchmark_common only: no cycle

            write_real(result, args)
        else:
            write_outputs(result, args)
        return 0
    if args.profile != "synthetic":
        if args.split != "test":
            parser.error("--split val is for the synthetic profile: the real profiles already choose on validation")
        from benchmark_real import main_real  # imports benchmark_common only: no cycle

        return main_real(args, parser, argv)
    started = time.perf_counter()
    shared.quiet()
    the_plan = plan(args, parser)
    runs = run(the_plan, args.threads, started)
    report(the_plan, runs, args, argv, started)
    the_plan.tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
