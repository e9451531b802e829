"""The real profiles of ``tools/benchmark_methods.py``: a pretrained LLM on a real vote file, fair baselines.

    python tools/benchmark_methods.py --profile real --model DIR --source SOURCE --data PATH [--quick | --smoke]
        [--seeds N] [--steps N] [--methods a,b] [--json OUT] [--plot OUT.png] [--markdown README.md]
    python tools/benchmark_methods.py --profile real-long --model DIR --source SOURCE --data PATH
        [--train-extra SNLI.jsonl] [--cache-dir DIR] [--chosen-from RESULTS.json] ...

Every run is ``configs/smollm2/chaosnli_mnli.yaml`` (its LoRA settings, precision, label mode, batches of 8 prompts)
composed with ``configs/method/<name>.yaml``, with ``--model``, ``--source`` and ``--data`` put in: the same model,
LoRA settings and number of optimizer steps for every trained method. Next to them, three constants fitted on the
training split only (``uniform``, ``train_mean``, ``best_constant``) and each row's skill and paired-bootstrap JSD
difference (see ``tools/benchmark_methods.py``).

Data: a seeded sample of the file (``--split-seed``), split at random into train / validation / test by the
project's DataModule. ``--train-extra`` adds an SNLI file's pairs to the training split only (written in the
source's ChaosNLI format beside the sample, with the split's validation and test files unchanged). The test split
is used once per chosen run; nothing is chosen on it.

Fair tuning: on seed 0 every trained method gets the same candidates (learning rates; in the full profile SHALA's
weighting strength on top, at its best learning rate), each trained for the same number of steps and scored on the
validation split by JSD; the other seeds run the candidate seed 0 chose. The sweep and every candidate's validation
score are written to the JSON's ``settings`` and the markdown.

``real-long``: every method on the whole training split for several epochs (the same number of steps for all),
three seeds at the learning rate chosen on seed 0 (``--chosen-from RESULTS.json``: the candidate seed 0 chose on
validation in an earlier run on the same split, e.g. the quick profile's, and no sweep). Each finished candidate and test is kept under ``--cache-dir``
keyed by (method, seed, settings), so an interrupted profile continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

import benchmark_common as shared

REAL_RUN_CONFIG = shared.REPO / "configs" / "smollm2" / "chaosnli_mnli.yaml"
QUICK_METHODS = ("zero_shot", "sft_soft", "grpo_majority", "shala", "shala_exact")
WEIGHTED = ("shala", "shala_exact")  # methods whose weighting strength is swept (full profile)
NOISE_FLOOR_MIN_VOTES = 20  # below this, resampling the votes says more about the resampling than the data
NLI_CODES = {"entailment": "e", "neutral": "n", "contradiction": "c"}


@dataclass
class RealProfile:
    name: str
    seeds: int
    n_train: int
    n_val: int
    n_test: int
    learning_rates: tuple
    steps: Optional[int] = None  # optimizer steps per run; or
    epochs: Optional[int] = None  # passes over the training split (steps = epochs x batches per epoch)
    strengths: tuple = ()  # extra weighting strengths tried at the best learning rate (WEIGHTED methods)
    # a best learning rate at an end of the grid is not known to be the best: try up to this many more beyond that end
    # (the grid's outer ratio each time), the same rule for every method
    edge_extensions: int = 1
    methods: tuple = shared.METHODS
    batch_size: int = 8
    eval_batch_size: int = 16
    cached: bool = False  # keep finished runs on disk by default (--cache-dir overrides)

    def steps_for(self, n_train: int) -> int:
        return self.steps if self.epochs is None else self.epochs * math.ceil(n_train / self.batch_size)


REAL_PROFILES = {
    # sized for 2 CPU cores and SmolLM2-135M: 4 trained methods x 2-3 learning rates x 30 steps of 8 prompts,
    # 8 validations of 100 pairs and 5 tests of 300 pairs; see the README section for the time it took
    "quick": RealProfile("quick", seeds=1, steps=30, n_train=400, n_val=100, n_test=300,
                         learning_rates=(1e-4, 5e-4), methods=QUICK_METHODS),
    "full": RealProfile("full", seeds=3, steps=150, n_train=1000, n_val=150, n_test=449,
                        learning_rates=(5e-5, 1.5e-4, 5e-4), strengths=(0.5, 2.0)),
    # the quick profile's split (the same test pairs), each training pair seen twice, three seeds; sized to finish
    # in about 90 minutes on 2 cores with --chosen-from (the quick profile's choices: no sweep here)
    "long": RealProfile("long", seeds=3, epochs=2, n_train=400, n_val=100, n_test=300,
                        learning_rates=(1e-4, 5e-4), methods=QUICK_METHODS + ("grpo_forward_kl", "shala_unweighted"),
                        cached=True),
    # shape only (CI): a tiny model, a dozen pairs, one candidate
    "smoke": RealProfile("smoke", seeds=1, steps=2, n_train=6, n_val=3, n_test=3, learning_rates=(1e-4,),
                         eval_batch_size=8, batch_size=4, edge_extensions=0),
}
DEFAULT_CACHE = shared.REPO / "runs" / "benchmark_cache"


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


def chaosnli_record(example) -> dict:
    """An NLI VoteExample as a ChaosNLI line (what the chaosnli_* sources read)."""
    codes = [NLI_CODES[label] for label in example.labels]
    return {"uid": example.uid, "label_counter": {c: int(v) for c, v in zip(codes, example.votes)},
            "majority_label": codes[example.majority],
            "example": {"uid": example.uid, "premise": example.fields["premise"],
                        "hypothesis": example.fields["hypothesis"]}}


def with_train_extra(common: list[str], data, sample: Path, extra: Path, out_dir: Path) -> list[str]:
    """Data arguments whose training file is the split's training pairs plus ``extra``'s SNLI pairs, validation and
    test the split's own (``data.split: files``)."""
    from shala_pl.data.sources import load_source

    lines = {json.loads(line)["uid"]: line for line in sample.read_text().splitlines() if line.strip()}
    extra_examples = load_source("snli", extra).examples
    clash = sorted({ex.uid for ex in extra_examples} & set(lines))
    if clash:
        raise SystemExit(f"error: --train-extra {extra}: uids also in --data: {clash[:5]}")
    paths = {}
    for split in ("train", "val", "test"):
        paths[split] = out_dir / f"{split}.jsonl"
        rows = [lines[ex.uid] for ex in data.examples(split)]
        if split == "train":
            rows += [json.dumps(chaosnli_record(ex)) for ex in extra_examples]
        paths[split].write_text("\n".join(rows) + "\n")
    keep = [a for a in common if not a.startswith(("--data.path=", "--data.split=", "--data.val_fraction=",
                                                   "--data.test_fraction=", "--data.split_seed="))]
    return keep + ["--data.split=files", f"--data.path={paths['train']}", f"--data.val_path={paths['val']}",
                   f"--data.test_path={paths['test']}"]


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


def build_data(args_common: list[str], model_dir: str):
    """The DataModule and trainer the runs get (the zero-shot config: nothing trained)."""
    from shala_pl.cli import cli_main

    cli = cli_main(["--config", str(REAL_RUN_CONFIG), "--config", str(shared.method_config("zero_shot")),
                    f"--model.init_args.name_or_path={model_dir}", "--trainer.logger=false", *args_common],
                   run=False)
    return cli.datamodule, cli.trainer


def data_facts(data) -> dict:
    test = data.examples("test")
    return {"n_train": len(data.examples("train")), "n_val": len(data.examples("val")), "n_test": len(test),
            "votes_per_example": sorted({int(round(ex.total_votes)) for ex in test}), "labels": data.label_names,
            "noise_floor_jsd": bootstrap_noise_floor([list(ex.votes) for ex in test]), "noise_floor_bins": None}


def lora_description(config: Path = REAL_RUN_CONFIG) -> str:
    lora = yaml.safe_load(config.read_text())["model"]["init_args"].get("lora")
    if not lora:
        return f"none (full fine-tuning; {config.relative_to(shared.REPO)})"
    options = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else v}" for k, v in lora.items())
    return f"{options} ({config.relative_to(shared.REPO)})"


# -- the run cache -----------------------------------------------------------------------------------------------------
class RunCache:
    """Finished candidates and tests as JSON files named by a hash of what determines them: the method's and the
    run config's text, the seed, the candidate, the command line (temporary paths left out) and the data's bytes."""

    def __init__(self, folder: Optional[Path], data_digest: str, tmp: str):
        self.folder, self.data_digest, self.tmp = folder, data_digest, tmp
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def key(self, what: str, method: str, seed: int, command: list[str]) -> str:
        material = {"what": what, "method": method, "seed": seed, "data": self.data_digest,
                    "configs": [REAL_RUN_CONFIG.read_text(), shared.method_config(method).read_text()],
                    "command": [a.replace(self.tmp, "<tmp>") for a in command]}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, key: str) -> Optional[dict]:
        if self.folder is None or not (self.folder / f"{key}.json").exists():
            return None
        return json.loads((self.folder / f"{key}.json").read_text())

    def put(self, key: str, value: dict) -> None:
        if self.folder is not None:
            path = self.folder / f"{key}.json"
            path.with_suffix(".tmp").write_text(json.dumps(value))
            path.with_suffix(".tmp").replace(path)  # a run stopped mid-write leaves no half file


# -- candidates and runs -----------------------------------------------------------------------------------------------
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


class MethodRuns:
    """One method on one seed: train candidates (validation off inside fit), score each on the validation split,
    test the chosen one; every finished step kept in the cache."""

    def __init__(self, spec: dict, cache: RunCache):
        self.spec, self.cache = spec, cache
        self.live: Optional[tuple] = None  # (candidate, (trainer, model, data)) of the best trained candidate
        self.precision: Optional[str] = None

    def command(self, candidate: dict) -> list[str]:
        return shared.run_command(REAL_RUN_CONFIG, self.spec["method"], self.spec, candidate_args(candidate))

    def _train(self, candidate: dict) -> tuple:
        from shala_pl.cli import cli_main

        cli = cli_main(self.command(candidate), run=False)
        trainer, model, data = cli.trainer, cli.model, cli.datamodule
        self.precision = str(trainer.precision)
        start = time.perf_counter()
        if self.spec["method"] not in shared.EVAL_ONLY:
            trainer.fit(model, datamodule=data)
        return time.perf_counter() - start, (trainer, model, data)

    def validate(self, candidate: dict) -> dict:
        key = self.cache.key("val", self.spec["method"], self.spec["seed"], self.command(candidate))
        scores = self.cache.get(key)
        if scores is None:
            train_s, objects = self._train(candidate)
            trainer, model, data = objects
            trainer.limit_val_batches = 1.0
            val = {k.split("/")[-1]: float(v)
                   for k, v in trainer.validate(model, datamodule=data, verbose=False)[0].items()}
            scores = {**candidate, "val_jsd": val["jsd"], "val_f1_macro": val["f1_macro"],
                      "train_s": round(train_s, 2), "global_step": int(trainer.global_step)}
            self.cache.put(key, scores)
            if self.live is None or scores["val_jsd"] < self.live[2]:
                self.live = (candidate, objects, scores["val_jsd"])
        print(f"    {self.spec['method']} seed {self.spec['seed']} {candidate}: val jsd {scores['val_jsd']:.4f} "
              f"f1 {scores['val_f1_macro']:.3f} ({scores['train_s']:.0f}s)", flush=True)
        return scores

    def sweep(self, candidates: list[dict]) -> tuple[list[dict], dict]:
        scored = [self.validate(candidate) for candidate in candidates]
        return scored, min(scored, key=lambda s: s["val_jsd"])

    def choose(self) -> tuple[list[dict], dict]:
        """Seed 0's sweep: the grid, its edge extensions, then (full profile) the weighting strengths."""
        profile = self.spec["profile"]
        sweep, best = self.sweep([{"lr": lr} for lr in profile.learning_rates])
        for _ in range(profile.edge_extensions):
            beyond = lr_beyond_edge(sorted(c["lr"] for c in sweep), best["lr"])
            if beyond is None:
                break
            more, challenger = self.sweep([{"lr": beyond}])
            sweep += more
            if challenger["val_jsd"] >= best["val_jsd"]:
                break
            best = challenger
        if self.spec["method"] in WEIGHTED and profile.strengths:
            more, challenger = self.sweep([{"lr": best["lr"], "strength": s} for s in profile.strengths])
            sweep += more
            if challenger["val_jsd"] < best["val_jsd"]:
                best = challenger
        return sweep, best

    def run(self, chosen: Optional[dict]) -> dict:
        """Sweep (``chosen`` None, trained methods) or run ``chosen``; then test the chosen candidate."""
        if self.spec["method"] in shared.EVAL_ONLY:
            sweep, candidate = [], {}
        elif chosen is None:
            sweep, best = self.choose()
            candidate = {k: best[k] for k in ("lr", "strength") if k in best}
        else:
            sweep, candidate = [self.validate(chosen)], chosen
        key = self.cache.key("test", self.spec["method"], self.spec["seed"], self.command(candidate))
        result = self.cache.get(key)
        from_cache = result is not None
        if result is None:
            if self.live is not None and self.live[0] == candidate:
                trainer, model, data = self.live[1]
            else:  # evaluation only, or the chosen candidate's model came from the cache: train it again (seeded)
                _, (trainer, model, data) = self._train(candidate)
            result = {"global_step": int(trainer.global_step), "precision": self.precision,
                      **shared.test_metrics(trainer, model, data)}
            self.cache.put(key, result)
        self.live = None
        return {"dataset": self.spec["dataset"], "method": self.spec["method"], "seed": self.spec["seed"],
                "steps": self.spec["steps"], "train_s": sum(c["train_s"] for c in sweep), "chosen": candidate,
                "sweep": sweep, "from_cache": from_cache, **result}


# -- the bar -----------------------------------------------------------------------------------------------------------
def real_bar(methods: dict, matrices: dict) -> dict:
    """The issue's bar on the real profile: JSD claims from the paired bootstrap, F1 on means."""
    checks = {}
    if "shala" in methods and "best_constant" in methods:
        checks["jsd_below_best_constant"] = shared.ci_check(matrices, "shala", "best_constant")
    if "shala" in methods and "grpo_majority" in methods:
        s, g = methods["shala"], methods["grpo_majority"]
        checks["jsd_at_most_0.75x_grpo_majority"] = shared.ci_check(matrices, "shala", "grpo_majority", 0.75)
        checks["f1_within_0.02_of_grpo_majority"] = shared.point_check(
            s["f1_macro"] >= g["f1_macro"] - 0.02, shala=s["f1_macro"], grpo_majority=g["f1_macro"])
    if "shala" in methods and "zero_shot" in methods:
        checks["jsd_below_zero_shot"] = shared.ci_check(matrices, "shala", "zero_shot")
    for name in ("shala", "shala_exact"):
        if name in methods and "sft_soft" in methods:
            checks[f"{name}_jsd_below_sft_soft"] = shared.ci_check(matrices, name, "sft_soft")
            checks[f"{name}_f1_not_below_sft_soft"] = shared.point_check(
                methods[name]["f1_macro"] >= methods["sft_soft"]["f1_macro"], **{
                    name: methods[name]["f1_macro"], "sft_soft": methods["sft_soft"]["f1_macro"]})
    if "shala" in methods and "shala_unweighted" in methods:
        checks["weighting_beats_unweighted_on_ambiguous_third"] = shared.ci_check(
            matrices, "shala", "shala_unweighted", rows=matrices["_top"])
    return checks


# -- outputs -----------------------------------------------------------------------------------------------------------
def settings_lines(settings: dict, steps: int, section: dict) -> list[str]:
    lines = [f"- model: `{settings['model']}`; LoRA {settings['lora']}; precision `{settings['precision']}`; "
             f"{steps} optimizer steps of {settings['batch_size']} prompts for every trained method",
             f"- data: `{settings['source']}` from `{settings['data']}`; seeded sample (seed {settings['split_seed']})"
             f" split into {section['n_train']} train / {section['n_val']} validation / {section['n_test']} test"
             + (f"; training adds the pairs of `{settings['train_extra']}`" if settings.get("train_extra") else ""),
             f"- tuning: {settings['how']}"]
    if any(entry["sweep"] for per_seed in settings["sweeps"].values() for entry in per_seed.values()):
        lines += ["", "| method | seed | candidate | val JSD | val F1 | chosen |", "|---|---:|---|---:|---:|:---:|"]
    for method, per_seed in settings["sweeps"].items():
        for seed, entry in per_seed.items():
            for candidate in entry["sweep"]:
                label = ", ".join(f"{k} {candidate[k]:g}" for k in ("lr", "strength") if k in candidate)
                chosen = all(candidate.get(k) == v for k, v in entry["chosen"].items())
                lines.append(f"| {method} | {seed} | {label} | {candidate['val_jsd']:.4f} | "
                             f"{candidate['val_f1_macro']:.3f} | {'✓' if chosen else ''} |")
    return lines


def write_outputs(result: dict, args) -> None:
    if args.plot:
        shared.plot([(result["dataset"], result)], args.plot)
        result["plot"] = os.path.relpath(args.plot, args.markdown.parent) if args.markdown else str(args.plot)
    if args.json:
        shared.write_json(result, args.json)
    if args.markdown:
        notes = ["(noise floor: mean JSD between each test pair's votes and a resample of as many votes from "
                 "them)", ""] if result.get("noise_floor_jsd") is not None else []
        body = shared.markdown_body(result, [(result["dataset"], result)],
                                    [*notes, *settings_lines(result["settings"], result["steps"], result), ""])
        shared.write_page(args.markdown, body, (shared.REAL_START, shared.REAL_END), "Results on a real LLM",
                          after=shared.RESULTS_END)


# -- parse / plan / run / report ---------------------------------------------------------------------------------------
def main_real(args, parser, argv) -> int:
    started = time.perf_counter()
    shared.quiet()
    import torch

    profile, methods, seeds = parse_real(args, parser)
    # one run at a time: the 135M model uses every core (the tiny smoke model gains nothing from more)
    torch.set_num_threads(args.threads if args.smoke else len(os.sched_getaffinity(0)))
    tmp = tempfile.TemporaryDirectory(prefix="shala-bench-real-")
    common, data, trainer, sample = plan_data(args, profile, Path(tmp.name))
    facts = data_facts(data)
    steps = profile.steps_for(facts["n_train"])
    cache_dir = args.cache_dir or (DEFAULT_CACHE if profile.cached else None)
    cache = RunCache(cache_dir, hashlib.sha256(sample.read_bytes()).hexdigest(), tmp.name)
    print(f"real profile {profile.name}: {facts['n_train']} train / {facts['n_val']} val / {facts['n_test']} test "
          f"pairs, {steps} steps, methods {methods}, seeds {seeds}"
          + (f", runs cached in {cache_dir}" if cache_dir else ""), flush=True)
    runs = run_real(args, profile, methods, seeds, common, steps, cache, tmp.name, started,
                    chosen_from(args, methods, parser))
    result = report_real(args, argv, profile, methods, seeds, facts, steps, runs, data, str(trainer.precision),
                         started)
    write_outputs(result, args)
    tmp.cleanup()
    return 0


def parse_real(args, parser) -> tuple[RealProfile, list[str], list[int]]:
    name = "long" if args.profile == "real-long" else "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = REAL_PROFILES[name]
    if args.steps is not None:
        profile = dataclasses.replace(profile, steps=args.steps, epochs=None)
    methods = shared.chosen_methods(args.methods, profile.methods)
    unknown = sorted(set(methods) - set(shared.METHODS))
    if unknown:
        parser.error(f"unknown method(s) for the real profile: {unknown}; choose from {shared.METHODS}")
    if not args.model or not args.source or not args.data:
        parser.error(f"--profile {args.profile} needs --model, --source and --data")
    return profile, methods, list(range(args.seeds if args.seeds is not None else profile.seeds))


def plan_data(args, profile: RealProfile, tmp: Path) -> tuple[list[str], object, object, Path]:
    """The data arguments every run gets (with ``--train-extra`` folded into a training file), the DataModule they
    give, its trainer (for the configured precision) and the sample."""
    sample, val_fraction, test_fraction = sample_file(Path(args.data), profile, args.split_seed, tmp / "sample.jsonl")
    common = data_args(args.source, sample, val_fraction, test_fraction, profile, json.loads(args.source_options))
    data, trainer = build_data(common, str(args.model))
    if args.train_extra:
        common = with_train_extra(common, data, sample, args.train_extra, tmp)
        data, trainer = build_data(common, str(args.model))
        extra = args.train_extra.read_bytes()
        sample.write_bytes(sample.read_bytes() + extra)  # the cache key covers the extra pairs too
    return common, data, trainer, sample


def chosen_from(args, methods: list[str], parser) -> dict:
    """Each method's candidate as seed 0 chose it on validation in an earlier run's JSON (``--chosen-from``)."""
    path = args.chosen_from
    if path is None:
        return {}
    earlier = json.loads(path.read_text()).get("settings", {})
    for option, ours in (("source", args.source), ("split_seed", args.split_seed)):
        if earlier.get(option) != ours:
            parser.error(f"--chosen-from {path}: its settings.{option} is {earlier.get(option)!r}, this run's {ours!r}")
    sweeps = earlier.get("sweeps", {})
    missing = [m for m in methods if m not in shared.EVAL_ONLY and "0" not in sweeps.get(m, {})]
    if missing:
        parser.error(f"--chosen-from {path}: no seed-0 choice for {missing} under settings.sweeps")
    return {m: sweeps[m]["0"]["chosen"] for m in methods if m not in shared.EVAL_ONLY}


def run_real(args, profile, methods, seeds, common, steps, cache, tmp: str, started: float,
             chosen: dict) -> list[dict]:
    runs, chosen = [], dict(chosen)
    for method in methods:
        for seed in seeds:
            spec = {"dataset": args.source, "method": method, "seed": seed, "steps": steps,
                    "model_dir": str(args.model), "data_args": common, "profile": profile,
                    "workdir": str(Path(tmp) / "runs" / method / f"seed{seed}")}
            Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
            run = MethodRuns(spec, cache).run(chosen.get(method))
            chosen.setdefault(method, run["chosen"])  # seed 0's choice for the other seeds
            runs.append(run)
            print(f"[{time.perf_counter() - started:6.0f}s] {method:<18} seed {seed} {run['chosen']}: test jsd "
                  f"{run['jsd']:.4f} f1 {run['f1_macro']:.3f} amb.1/3 {run['jsd_top_entropy']:.4f}", flush=True)
    return runs


def report_real(args, argv, profile, methods, seeds, facts, steps, runs, data, precision, started) -> dict:
    scored = data.examples("test")
    constants, constant_runs = shared.baseline_runs(data.examples("train"), scored, args.source, "test")
    every = constant_runs + runs
    names = [*shared.BASELINES, *methods]
    section = {"dataset": args.source, **facts, "steps": steps, "seeds": seeds, "constants": constants,
               "methods": shared.aggregate(every, names)}
    matrices = shared.add_evidence(section, every, scored)
    section["bar"] = real_bar(section["methods"], matrices)
    section["runs"] = [{k: v for k, v in r.items() if k != "sweep"} for r in shared.without_per_example(runs)]
    result = {"profile": f"real-{profile.name}", "machine": shared.machine(),
              "command": "python tools/benchmark_methods.py " + " ".join(shlex.quote(a) for a in argv),
              **section, "settings": settings(args, profile, runs, methods, precision),
              "elapsed_s": round(time.perf_counter() - started, 1),
              "runs_from_cache": sum(r["from_cache"] for r in runs), "n_runs": len(runs)}
    print()
    print(shared.format_table(section, show_std=len(seeds) > 1))
    print(*shared.two_by_two_lines(section, markdown=False), sep="\n")
    print(*shared.bar_lines(section["bar"], markdown=False), sep="\n")
    print(f"elapsed {result['elapsed_s']:.0f} s on {result['machine']}; {shared.cache_note(result)}")
    return result


def settings(args, profile: RealProfile, runs: list[dict], methods: list[str], precision: str) -> dict:
    if args.chosen_from:
        how = (f"no sweep: every seed runs the candidate seed 0 chose on the validation split in `{args.chosen_from}` "
               "(an earlier run on the same split)")
        return settings_of(args, profile, runs, methods, precision, how)
    how = (f"learning rate from {list(profile.learning_rates)} for every trained method on seed 0, each candidate "
           "trained for the same steps and scored by JSD on the validation split; the lowest is tested, and the "
           "other seeds run it")
    if profile.edge_extensions:
        how += (f"; a best rate at an end of the grid is followed by up to {profile.edge_extensions} more beyond "
                "that end (the grid's outer ratio), kept while validation JSD improves")
    if profile.strengths:
        how += (f"; for {', '.join(WEIGHTED)} also weighting strength {list(profile.strengths)} at the chosen "
                "learning rate (1.0 otherwise)")
    else:
        how += "; weighting strength as in each method's config"
    return settings_of(args, profile, runs, methods, precision, how)


def settings_of(args, profile: RealProfile, runs: list[dict], methods: list[str], precision: str, how: str) -> dict:
    if profile.epochs:
        how += f"; {profile.epochs} epochs over the training split"
    return {
        "model": str(args.model), "source": args.source, "data": str(args.data), "split_seed": args.split_seed,
        "train_extra": str(args.train_extra) if args.train_extra else None,
        "batch_size": profile.batch_size, "eval_batch_size": profile.eval_batch_size,
        "lora": lora_description(), "precision": precision, "epochs": profile.epochs,
        "learning_rates": list(profile.learning_rates), "edge_extensions": profile.edge_extensions,
        "strengths": list(profile.strengths), "selection": "lowest validation JSD", "how": how,
        "chosen_from": str(args.chosen_from) if args.chosen_from else None,
        "sweeps": {m: {str(r["seed"]): {"chosen": r["chosen"], "sweep": r["sweep"]} for r in runs
                       if r["method"] == m} for m in methods},
    }
