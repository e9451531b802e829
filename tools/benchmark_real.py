"""The real profile of ``tools/benchmark_methods.py``: a pretrained LLM on a real vote file, fair baselines.

    python tools/benchmark_methods.py --profile real --model DIR --source SOURCE --data PATH [--quick | --smoke]
        [--seeds N] [--steps N] [--methods a,b] [--json OUT] [--plot OUT.png] [--markdown README.md]

Every run is ``configs/smollm2/chaosnli_mnli.yaml`` (LoRA r=16 on the attention projections, float32, CPU, label
mode, batches of 8 prompts) composed with ``configs/method/<name>.yaml``, with ``--model``, ``--source`` and
``--data`` put in: the same model, LoRA settings and number of optimizer steps for every trained method.

Data: a seeded sample of the file (``--split-seed``), split at random into train / validation / test by the
project's DataModule. The test split is used once, for the chosen run of each method; nothing is chosen on it.

Fair tuning: every trained method gets the same candidates (learning rates; SHALA's weighting strength on top in
the full profile, at its best learning rate), each trained for the same number of steps, scored on the validation
split by JSD; the best candidate's model is the one tested. The sweep and every candidate's validation score are
written to the JSON's ``settings`` and the markdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import benchmark_common as shared

REAL_RUN_CONFIG = shared.REPO / "configs" / "smollm2" / "chaosnli_mnli.yaml"
REAL_METHODS = shared.METHODS + ("shala_exact",)
QUICK_METHODS = ("zero_shot", "sft_soft", "grpo_majority", "shala", "shala_exact")
WEIGHTED = ("shala", "shala_exact")  # methods whose weighting strength is swept (full profile)
REAL_START, REAL_END = "<!-- benchmark_real:start -->", "<!-- benchmark_real:end -->"
NOISE_FLOOR_MIN_VOTES = 20  # below this, resampling the votes says more about the resampling than the data


@dataclass
class RealProfile:
    name: str
    seeds: int
    steps: int
    n_train: int
    n_val: int
    n_test: int
    learning_rates: tuple
    strengths: tuple = ()  # extra weighting strengths tried at the best learning rate (WEIGHTED methods)
    # a best learning rate at an end of the grid is not known to be the best: try up to this many more beyond that end
    # (the grid's outer ratio each time), the same rule for every method
    edge_extensions: int = 1
    methods: tuple = REAL_METHODS
    batch_size: int = 8
    eval_batch_size: int = 16
    extra: dict = field(default_factory=dict)


REAL_PROFILES = {
    # sized for 2 CPU cores and SmolLM2-135M: 4 trained methods x 2-3 learning rates x 30 steps of 8 prompts,
    # 8 validations of 100 pairs and 5 tests of 300 pairs; see the README section for the time it took
    "quick": RealProfile("quick", seeds=1, steps=30, n_train=400, n_val=100, n_test=300,
                         learning_rates=(1e-4, 5e-4), methods=QUICK_METHODS),
    "full": RealProfile("full", seeds=3, steps=150, n_train=1000, n_val=150, n_test=449,
                        learning_rates=(5e-5, 1.5e-4, 5e-4), strengths=(0.5, 2.0)),
    # shape only (CI): a tiny model, a dozen pairs, one candidate
    "smoke": RealProfile("smoke", seeds=1, steps=2, n_train=6, n_val=3, n_test=3, learning_rates=(1e-4,),
                         eval_batch_size=8, batch_size=4, edge_extensions=0),
}


# -- data --------------------------------------------------------------------------------------------------------------
def sample_file(path: Path, profile: RealProfile, seed: int, out: Path) -> tuple[Path, float, float]:
    """A seeded sample of the file's lines (train + val + test of the profile, or all of them if fewer), written to
    ``out``; returns it with the validation and test fractions the DataModule should split it by."""
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
    wanted = profile.n_train + profile.n_val + profile.n_test
    if len(lines) > wanted:
        lines = random.Random(seed).sample(lines, wanted)
    out.write_text("".join(lines))
    return out, profile.n_val / wanted, profile.n_test / wanted


def data_args(source: str, path: Path, val_fraction: float, test_fraction: float, profile: RealProfile,
              source_options: dict) -> list[str]:
    return [f"--data.source={source}", f"--data.path={path}", f"--data.source_options={json.dumps(source_options)}",
            "--data.split=random", "--data.split_seed=0", f"--data.val_fraction={val_fraction:.6f}",
            f"--data.test_fraction={test_fraction:.6f}", f"--data.batch_size={profile.batch_size}",
            f"--data.eval_batch_size={profile.eval_batch_size}"]


def bootstrap_noise_floor(human_votes: list[list[float]], draws: int = 200, seed: int = 0) -> Optional[float]:
    """Mean JSD between each example's votes and a resample of as many votes from them: roughly what a model that
    knew the true distribution would score against a finite vote count. None when some example has fewer than
    ``NOISE_FLOOR_MIN_VOTES`` votes."""
    import torch

    from shala_pl.metrics.distribution import jensen_shannon_distance

    votes = torch.tensor(human_votes, dtype=torch.float64)  # [N, K]
    totals = votes.sum(-1)  # [N]
    if len(votes) == 0 or float(totals.min()) < NOISE_FLOOR_MIN_VOTES:
        return None
    generator = torch.Generator().manual_seed(seed)
    probs = votes / totals.unsqueeze(-1)
    values = []
    for n, p in zip(totals.round().long().tolist(), probs):
        resampled = torch.multinomial(p.expand(draws, -1), n, replacement=True, generator=generator)  # [draws, n]
        counts = torch.nn.functional.one_hot(resampled, p.shape[0]).sum(1).double() / n  # [draws, K]
        values.append(jensen_shannon_distance(p.expand(draws, -1), counts).mean())
    return float(torch.stack(values).mean())


def data_facts(args_common: list[str], model_dir: str) -> dict:
    from shala_pl.cli import cli_main

    cli_args = ["--config", str(REAL_RUN_CONFIG), "--config", str(shared.method_config("zero_shot")),
                f"--model.init_args.name_or_path={model_dir}", "--trainer.logger=false", *args_common]
    data = cli_main(cli_args, run=False).datamodule
    test = data.examples("test")
    votes = [list(ex.votes) for ex in test]
    return {"n_train": len(data.examples("train")), "n_val": len(data.examples("val")), "n_test": len(test),
            "votes_per_example": sorted({int(round(ex.total_votes)) for ex in test}), "labels": data.label_names,
            "noise_floor_jsd": bootstrap_noise_floor(votes), "noise_floor_bins": None}


# -- candidates and runs -----------------------------------------------------------------------------------------------
def lr_candidates(method: str, profile: RealProfile) -> list[dict]:
    if method in shared.EVAL_ONLY:
        return [{}]
    return [{"lr": lr} for lr in profile.learning_rates]


def lr_beyond_edge(tried: list[float], best: float) -> Optional[float]:
    """The next learning rate past the end of ``tried`` (sorted) that ``best`` sits at, spaced by the ratio of that
    end's two values; None when ``best`` is inside the grid or there is only one value."""
    if len(tried) < 2 or tried[0] < best < tried[-1]:
        return None
    if best == tried[-1]:
        return float(f"{best * tried[-1] / tried[-2]:.3g}")
    return float(f"{best * tried[0] / tried[1]:.3g}")


def candidate_args(candidate: dict) -> list[str]:
    args = []
    if "lr" in candidate:
        args.append(f"--model.init_args.optimizer.init_args.lr={candidate['lr']}")
    if "strength" in candidate:
        args.append(f"--model.init_args.weighting.strength={candidate['strength']}")
    return args


def cli_args(spec: dict, candidate: dict) -> list[str]:
    args = ["--config", str(REAL_RUN_CONFIG), "--config", str(shared.method_config(spec["method"])),
            *shared.trainer_args(spec)]  # validation off inside fit: train_candidate validates after it
    if spec["method"] in shared.SUPERVISED:
        args.append("--trainer.gradient_clip_val=1.0")  # GRPOModule clips at 1.0 itself
    return args + candidate_args(candidate)


def train_candidate(spec: dict, candidate: dict) -> tuple[dict, tuple]:
    """Train one candidate; its validation metrics and (trainer, model, data) for testing it later."""
    from shala_pl.cli import cli_main

    cli = cli_main(cli_args(spec, candidate), run=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    start = time.perf_counter()
    if spec["method"] not in shared.EVAL_ONLY:
        trainer.fit(model, datamodule=data)
    train_s = time.perf_counter() - start
    trainer.limit_val_batches = 1.0
    val = {k.split("/")[-1]: float(v) for k, v in trainer.validate(model, datamodule=data, verbose=False)[0].items()}
    return {**candidate, "val_jsd": val["jsd"], "val_f1_macro": val["f1_macro"], "train_s": round(train_s, 2),
            "global_step": int(trainer.global_step)}, (trainer, model, data)


def run_method(spec: dict) -> dict:
    """Sweep a method's candidates on the validation split, then test the best one: a dict of numbers."""
    shared._quiet()
    Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
    if spec["method"] in shared.EVAL_ONLY:  # nothing to choose: no validation pass either
        best_candidate, sweep, (trainer, model, data) = {}, [], _build(spec)
    else:
        sweep, best_candidate, trainer, model, data = _sweep(spec, lr_candidates(spec["method"], spec["profile"]))
        for _ in range(spec["profile"].edge_extensions):
            beyond = lr_beyond_edge(sorted(c["lr"] for c in sweep), best_candidate["lr"])
            if beyond is None:
                break
            sweep_more, challenger, *objects = _sweep(spec, [{"lr": beyond}])
            sweep += sweep_more
            if challenger["val_jsd"] >= best_candidate["val_jsd"]:
                break
            best_candidate, (trainer, model, data) = challenger, tuple(objects)
        if spec["method"] in WEIGHTED and spec["profile"].strengths:
            more = [{"lr": best_candidate["lr"], "strength": s} for s in spec["profile"].strengths]
            sweep_more, challenger, *objects = _sweep(spec, more)
            sweep += sweep_more
            if challenger["val_jsd"] < best_candidate["val_jsd"]:
                best_candidate, (trainer, model, data) = challenger, tuple(objects)
    result = shared.test_metrics(trainer, model, data)
    return {"dataset": spec["dataset"], "method": spec["method"], "seed": spec["seed"], "steps": spec["steps"],
            "global_step": int(trainer.global_step), "train_s": sum(c["train_s"] for c in sweep),
            "chosen": {k: v for k, v in best_candidate.items() if k in ("lr", "strength")}, "sweep": sweep,
            **result}


def _build(spec: dict) -> tuple:
    from shala_pl.cli import cli_main

    cli = cli_main(cli_args(spec, {}), run=False)
    return cli.trainer, cli.model, cli.datamodule


def _sweep(spec: dict, candidates: list[dict]) -> tuple:
    """Train each candidate, keep the one with the lowest validation JSD (only it stays in memory)."""
    sweep, best, best_objects = [], None, None
    for candidate in candidates:
        scores, objects = train_candidate(spec, candidate)
        sweep.append(scores)
        print(f"    {spec['method']} seed {spec['seed']} {candidate}: val jsd {scores['val_jsd']:.4f} "
              f"f1 {scores['val_f1_macro']:.3f} ({scores['train_s']:.0f}s)", flush=True)
        if best is None or scores["val_jsd"] < best["val_jsd"]:
            best, best_objects = scores, objects
    return (sweep, best, *best_objects)


# -- the bar and the outputs -------------------------------------------------------------------------------------------
def real_bar(methods: dict) -> dict:
    """The issue's bar on the real profile (means over seeds)."""
    checks = {}
    if "shala" in methods and "grpo_majority" in methods:
        s, g = methods["shala"], methods["grpo_majority"]
        checks["jsd_at_most_0.75x_grpo_majority"] = {"holds": s["jsd"] <= 0.75 * g["jsd"], "shala": s["jsd"],
                                                     "limit": 0.75 * g["jsd"]}
        checks["f1_within_0.02_of_grpo_majority"] = {"holds": s["f1_macro"] >= g["f1_macro"] - 0.02,
                                                     "shala": s["f1_macro"], "grpo_majority": g["f1_macro"]}
    if "shala" in methods and "zero_shot" in methods:
        checks["jsd_below_zero_shot"] = {"holds": methods["shala"]["jsd"] < methods["zero_shot"]["jsd"],
                                         "shala": methods["shala"]["jsd"], "zero_shot": methods["zero_shot"]["jsd"]}
    if "sft_soft" in methods:
        soft = methods["sft_soft"]
        for name in ("shala", "shala_exact"):
            if name in methods:
                m = methods[name]
                checks[f"{name}_at_or_below_sft_soft_jsd_with_f1_not_lower"] = {
                    "holds": m["jsd"] <= soft["jsd"] and m["f1_macro"] >= soft["f1_macro"], name: m["jsd"],
                    "sft_soft": soft["jsd"], f"{name}_f1": m["f1_macro"], "sft_soft_f1": soft["f1_macro"]}
    return checks


def settings_lines(settings: dict) -> list[str]:
    lines = [f"- model: `{settings['model']}`; LoRA {settings['lora']}; {settings['steps']} optimizer steps of "
             f"{settings['batch_size']} prompts for every trained method",
             f"- data: `{settings['source']}` from `{settings['data']}`; seeded sample (seed {settings['split_seed']})"
             f" split into {settings['n_train']} train / {settings['n_val']} validation / {settings['n_test']} test",
             f"- tuning: {settings['how']}", "", "| method | seed | candidate | val JSD | val F1 | chosen |",
             "|---|---:|---|---:|---:|:---:|"]
    for method, per_seed in settings["sweeps"].items():
        for seed, entry in per_seed.items():
            for candidate in entry["sweep"]:
                label = ", ".join(f"{k} {candidate[k]:g}" for k in ("lr", "strength") if k in candidate)
                chosen = all(candidate.get(k) == v for k, v in entry["chosen"].items())
                lines.append(f"| {method} | {seed} | {label} | {candidate['val_jsd']:.4f} | "
                             f"{candidate['val_f1_macro']:.3f} | {'✓' if chosen else ''} |")
    return lines


def markdown_section(result: dict) -> str:
    section = result["real"]
    lines = ["Generated by `tools/benchmark_methods.py --profile real` (do not edit by hand; re-run the command "
             "below).", "", f"- command: `{result['command']}`", f"- machine: {result['machine']}",
             f"- time taken: {result['elapsed_s']:.0f} s ({result['elapsed_s'] / 60:.1f} min), profile "
             f"`{result['profile']}`",
             f"- metrics on the held-out test split ({section['n_test']} pairs), `label_probs` readout; mean ± std "
             f"over seeds {result['seeds']}; 'JSD amb.1/3' = the most ambiguous third by human vote entropy",
             *settings_lines(result["settings"]), "", shared.format_table(section, True, markdown=True), ""]
    if section.get("noise_floor_jsd") is not None:
        lines += ["(noise floor: mean JSD between each test pair's votes and a resample of as many votes from them)",
                  ""]
    if result.get("bar"):
        lines += ["Bar (real profile, means over seeds):", ""]
        for check, value in result["bar"].items():
            numbers = ", ".join(f"{k} {v:.4f}" for k, v in value.items() if k != "holds")
            lines.append(f"- {check}: **{'holds' if value['holds'] else 'does not hold'}** ({numbers})")
        lines.append("")
    if result.get("plot"):
        lines += [f"![JSD by human-entropy bin]({result['plot']})", ""]
    return "\n".join(lines)


def write_markdown(result: dict, out: Path) -> None:
    """Replace the text between ``REAL_START``/``REAL_END`` in ``out``; without them, add a "Results on a real LLM"
    section after the synthetic results (``shared.RESULTS_END``) or at the end."""
    text = markdown_section(result)
    existing = out.read_text() if out.exists() else ""
    if REAL_START in existing and REAL_END in existing:
        before, rest = existing.split(REAL_START, 1)
        new = before + REAL_START + "\n" + text + "\n" + REAL_END + rest.split(REAL_END, 1)[1]
    else:
        block = f"\n## Results on a real LLM\n\n{REAL_START}\n{text}\n{REAL_END}\n"
        if shared.RESULTS_END in existing:
            head, tail = existing.split(shared.RESULTS_END, 1)
            first, newline, rest = tail.partition("\n")
            new = head + shared.RESULTS_END + first + newline + block + rest
        else:
            new = existing + block
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new)


# -- main --------------------------------------------------------------------------------------------------------------
def main_real(args, parser, argv) -> int:
    started = time.perf_counter()
    shared._quiet()
    import torch

    profile = REAL_PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.steps is not None:
        profile = dataclasses.replace(profile, steps=args.steps)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(profile.methods)
    unknown = sorted(set(methods) - set(REAL_METHODS))
    if unknown:
        parser.error(f"unknown method(s) for the real profile: {unknown}; choose from {REAL_METHODS}")
    if not args.model or not args.source or not args.data:
        parser.error("--profile real needs --model, --source and --data")
    seeds = list(range(args.seeds if args.seeds is not None else profile.seeds))
    # one run at a time: the 135M model uses every core (the tiny smoke model gains nothing from more)
    torch.set_num_threads(args.threads if args.smoke else len(os.sched_getaffinity(0)))
    tmp = tempfile.TemporaryDirectory(prefix="shala-bench-real-")
    sample, val_fraction, test_fraction = sample_file(Path(args.data), profile, args.split_seed,
                                                      Path(tmp.name) / "sample.jsonl")
    common = data_args(args.source, sample, val_fraction, test_fraction, profile, json.loads(args.source_options))
    facts = data_facts(common, str(args.model))
    print(f"real profile {profile.name}: {facts['n_train']} train / {facts['n_val']} val / {facts['n_test']} test "
          f"pairs, {profile.steps} steps, methods {methods}, seeds {seeds}", flush=True)
    runs = []
    for method in methods:
        for seed in seeds:
            spec = {"dataset": args.source, "method": method, "seed": seed, "steps": profile.steps,
                    "model_dir": str(args.model), "data_args": common, "profile": profile,
                    "workdir": str(Path(tmp.name) / "runs" / method / f"seed{seed}")}
            run = run_method(spec)
            runs.append(run)
            print(f"[{time.perf_counter() - started:6.0f}s] {method:<18} seed {seed} {run['chosen']}: test jsd "
                  f"{run['jsd']:.4f} f1 {run['f1_macro']:.3f} amb.1/3 {run['jsd_top_entropy']:.4f}", flush=True)
    section = {**facts, "steps": profile.steps, "seeds": seeds, "dataset": args.source,
               "methods": shared.aggregate(runs, methods),
               "runs": [{k: v for k, v in r.items() if k != "sweep"} for r in runs]}
    result = {
        "profile": f"real-{profile.name}", "dataset": args.source, "seeds": seeds, "machine": shared.machine(),
        "command": "python tools/benchmark_methods.py " + " ".join(shlex.quote(a) for a in argv),
        "methods": section["methods"], "noise_floor_jsd": facts["noise_floor_jsd"], "steps": profile.steps,
        "real": section, "bar": real_bar(section["methods"]),
        "settings": settings(args, profile, facts, runs, methods),
    }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print()
    print(shared.format_table(section, show_std=len(seeds) > 1))
    for check, value in result["bar"].items():
        print(f"bar: {check}: {'HOLDS' if value['holds'] else 'DOES NOT HOLD'}")
    print(f"elapsed {result['elapsed_s']:.0f} s on {result['machine']}")
    write_outputs(result, args)
    tmp.cleanup()
    return 0


def settings(args, profile: RealProfile, facts: dict, runs: list[dict], methods: list[str]) -> dict:
    how = (f"learning rate from {list(profile.learning_rates)} for every trained method, each candidate trained "
           f"{profile.steps} steps and scored by JSD on the validation split; the lowest is tested")
    if profile.edge_extensions:
        how += (f"; a best rate at an end of the grid is followed by up to {profile.edge_extensions} more beyond "
                "that end (the grid's outer ratio), kept while validation JSD improves")
    if profile.strengths:
        how += (f"; for {', '.join(WEIGHTED)} also weighting strength {list(profile.strengths)} at the chosen "
                "learning rate (1.0 otherwise)")
    else:
        how += "; weighting strength fixed at 1.0 (swept in the full profile)"
    return {
        "model": str(args.model), "source": args.source, "data": str(args.data), "split_seed": args.split_seed,
        "steps": profile.steps, "batch_size": profile.batch_size, "eval_batch_size": profile.eval_batch_size,
        "lora": "r=16, alpha=32, q/k/v/o projections (configs/smollm2/chaosnli_mnli.yaml)",
        "n_train": facts["n_train"], "n_val": facts["n_val"], "n_test": facts["n_test"],
        "learning_rates": list(profile.learning_rates), "edge_extensions": profile.edge_extensions,
        "strengths": list(profile.strengths),
        "selection": "lowest validation JSD", "how": how,
        "chosen": {m: [r["chosen"] for r in runs if r["method"] == m] for m in methods},
        "sweeps": {m: {str(r["seed"]): {"chosen": r["chosen"], "sweep": r["sweep"]} for r in runs
                       if r["method"] == m} for m in methods},
    }


def write_outputs(result: dict, args) -> None:
    if args.plot:
        shared.plot(result, args.plot, names=("real",))
        result["plot"] = os.path.relpath(args.plot, args.markdown.parent) if args.markdown else str(args.plot)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        write_markdown(result, args.markdown)
