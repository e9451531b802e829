"""Training throughput of group-rollout RL: shala_pl's ``GRPOModule`` against TRL's ``GRPOTrainer``.

    python tools/bench_throughput.py [--vs-trl] [--json OUT] [--steps N] [--warmup N] [--repeats N] [--quick]
    python tools/bench_throughput.py --model DIR [--data PATH --source NAME] [--verbalizers JSON] [--readout N] ...

``--model DIR`` measures a model directory (e.g. SmolLM2-135M-Instruct from ``tools/get_model.py``) on the real task:
the prompts and label words of ``--source``/``--data`` (default: the SNLI sample in ``tests/fixtures``), with
defaults sized for 2 CPU cores (B=4, G=8, T=16, 2 threads, 1 warm-up + 3 steps, 2 repeats). ``--verbalizers``
overrides the label words (e.g. NLI's multi-token label names, to see what they cost in label mode).
``--readout N`` also times scoring N validation prompts with ``label_probs`` (no training), ours against the plain
way (the prompt repeated once per label, logits at every position, a full log-softmax), and checks that both give
the same probabilities.

One tiny model is built with the project's own builder (``shala_pl.models.tiny.build_tiny_model``; by default a
qwen2 with hidden size 256, 4 layers, 4 heads: ~4.3M parameters, larger than the test model so that generation and
the policy forward/backward, not Python glue, are what is measured) and one prompt set is rendered from the
synthetic task. Each system then runs ``warmup + steps`` GRPO training steps on it, with the same settings:

- prompts per step (B), answers per prompt (G = ``num_generations``), ``max_new_tokens`` (T). EOS is blocked until
  T tokens exist in both systems (our ``RolloutSettings.min_new_tokens``, TRL's ``generation_kwargs``), so every
  answer is exactly T tokens long in both and the work per step is identical; the mean completion length is
  measured and reported for each system.
- sampling temperature 1.0, top_p 1.0, no top-k; beta (default 0.0: no reference model, no reference pass);
  mu = 1 (one optimizer step per rollout batch, no old-log-prob pass); full fine-tuning; fp32 on CPU; AdamW,
  constant learning rate, no weight decay, gradient clipping at 1.0; the Dr. GRPO loss (sum over tokens / (N * T)),
  advantages not std-scaled, clip range 0.2 / 0.28.
- the same cheap Python reward: the answer parsed with ``shala_pl.rl.answer_parsing.AnswerParser``, rewarded with the
  human vote share of the parsed label (our built-in ``vote_share`` reward; a Python function for TRL).
- the same number of torch threads (``--threads``; also OMP/MKL_NUM_THREADS), no logger, no progress bar, no
  checkpoints in both.

Systems: ``shala`` = our ``GRPOModule`` in ``generate`` mode, ``shala_label`` = the same in ``label`` mode (labels
sampled from the exact label distribution; no text is generated), ``trl`` = TRL's ``GRPOTrainer`` (``--vs-trl``;
``pip install -e '.[bench]'``). Each runs through its own trainer, as users run it (a Lightning ``Trainer``, TRL's
``GRPOTrainer.train``), in its OWN subprocess, so that each reports its own peak resident memory (VmHWM). A step's
time is the wall time between consecutive step ends (data loading, generation, reward, update and the trainer's own
work all included). The first ``warmup`` steps of each run are excluded; each run gives the median of its measured
steps, and the table reports the median over ``repeats`` runs (run interleaved: shala, trl, shala_label, shala, ...).
Per-step CPU time of the process is reported too: with one torch thread it is far less sensitive than wall time to
other load on a shared machine.

Output: a table on stdout and, with ``--json OUT``, ``{"shala": {...}, "trl": {...} or null, "shala_label": {...},
"settings": {...}}``, each system with ``completions_per_s``, ``step_s``, ``peak_rss_mb`` (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEMS = ("shala", "trl", "shala_label")
REPO = Path(__file__).resolve().parent.parent

FULL = dict(hidden_size=256, num_layers=4, num_heads=4, prompts_per_step=8, num_generations=8, max_new_tokens=32,
            steps=5, warmup=2, repeats=3)
REAL = dict(prompts_per_step=4, num_generations=8, max_new_tokens=16, steps=3, warmup=1, repeats=2, threads=2)
SNLI_SAMPLE = REPO / "tests" / "fixtures" / "snli_1.0_test_part.jsonl"
QUICK = dict(hidden_size=64, num_layers=2, num_heads=4, prompts_per_step=2, num_generations=2, max_new_tokens=4,
             steps=2, warmup=1, repeats=1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vs-trl", action="store_true", help="also run TRL's GRPOTrainer (needs `pip install trl`)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="smallest run (test-sized model, 2 prompts x 2 answers x 4 tokens, 1 warm-up + 2 steps, "
                             "1 repeat): checks that everything runs, measures nothing useful")
    parser.add_argument("--steps", type=int, help="measured steps per run (default 5; --quick 2)")
    parser.add_argument("--warmup", type=int, help="steps run first and excluded (default 2; --quick 1)")
    parser.add_argument("--repeats", type=int, help="runs per system, each in a fresh process (default 3; --quick 1)")
    parser.add_argument("--model", type=Path, help="a model directory to measure instead of the built-in tiny model")
    parser.add_argument("--source", default="snli", help="with --model: the data source (default snli)")
    parser.add_argument("--data", type=Path, default=SNLI_SAMPLE, help="with --model: the data file")
    parser.add_argument("--verbalizers", type=json.loads, default=None,
                        help='with --model: label words, JSON {"label": "word"} (default: the task\'s own)')
    parser.add_argument("--readout", type=int, default=0, metavar="N",
                        help="also time label_probs on N validation prompts, ours against the plain way")
    parser.add_argument("--threads", type=int, help="torch threads in every system (default 1; --model 2)")
    parser.add_argument("--prompts-per-step", type=int, help="B (default 8)")
    parser.add_argument("--num-generations", type=int, help="G (default 8)")
    parser.add_argument("--max-new-tokens", type=int, help="T, the exact answer length (default 32)")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient (default 0: no reference pass)")
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--num-layers", type=int)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS,
                        help="which systems to run (default: shala shala_label, plus trl with --vs-trl)")
    parser.add_argument("--profile", type=Path,
                        help="write a cProfile report of each run (top functions by cumulative time) to this folder; "
                             "slows the runs down, so do not read the timings of a profiled run")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="run TRL with its default gradient checkpointing (GRPOConfig.gradient_checkpointing=True; "
                             "less activation memory, one more forward pass per step); by default it is off, as in "
                             "shala_pl, so that both do the same work")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--child-settings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> dict:
    base = dict(QUICK if args.quick else FULL, threads=1)
    if args.model is not None:
        base.update(REAL, **({} if not args.quick else {k: QUICK[k] for k in ("steps", "warmup", "repeats")}))
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else base[name]  # noqa: E731
    settings = {name: pick(name) for name in base}
    if settings["warmup"] < 1 or settings["steps"] < 1 or settings["repeats"] < 1:
        raise SystemExit("error: --warmup, --steps and --repeats must be at least 1")
    settings.update(
        quick=bool(args.quick), beta=args.beta, seed=args.seed,
        trl_gradient_checkpointing=bool(args.trl_gradient_checkpointing),
        model=str(args.model.resolve()) if args.model else None, source=args.source if args.model else "synthetic",
        data=str(args.data.resolve()) if args.model else None, verbalizers=args.verbalizers or {}, readout=args.readout,
        architecture="qwen2", vocab_size=1024, temperature=1.0, top_p=1.0, top_k=0, num_iterations=1, lora=False,
        precision="fp32", device="cpu", learning_rate=1e-5, weight_decay=0.0, max_grad_norm=1.0,
        loss_aggregation="dr_grpo", advantage_scaling="none", clip_eps_low=0.2, clip_eps_high=0.28,
        reward="vote_share of the parsed answer", logging_every_n_steps=10,
        n_examples=max(64, 4 * settings["prompts_per_step"] * (settings["warmup"] + settings["steps"])),
        n_annotators=20,
    )
    return settings


# -- the parent: build the model and prompts, run every system in its own process, report ---------------------------
def trl_version_or_exit() -> str:
    try:
        import trl
    except ImportError as error:
        raise SystemExit(
            f"error: --vs-trl needs TRL, which could not be imported ({error}). Install it with "
            "`pip install -e '.[bench]'` (or `pip install trl`), or run without --vs-trl."
        ) from None
    return trl.__version__


def prepare_inputs(settings: dict, workdir: Path) -> tuple[Path, Path]:
    """The model (``--model``, else the tiny one built here) and the prompt set (rendered prompts + human
    distributions of the train split); records the model's shape and the label words in ``settings``."""
    from transformers import AutoConfig

    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.models.tiny import build_tiny_model

    if settings["model"]:
        model_dir = Path(settings["model"])
        config = AutoConfig.from_pretrained(model_dir)
        settings.update(architecture=config.model_type, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                        num_layers=config.num_hidden_layers, num_heads=config.num_attention_heads)
    else:
        model_dir = build_tiny_model(workdir / "model", settings["architecture"], settings["hidden_size"],
                                     settings["num_layers"], settings["num_heads"], settings["vocab_size"],
                                     seed=settings["seed"])
    data = VoteDataModule(**datamodule_kwargs(settings, model_dir))
    data.setup("fit")
    settings["label_words"] = data.verbalizers
    dataset = data._dataset("train")
    prompts_file = workdir / "prompts.jsonl"
    with prompts_file.open("w") as f:
        for row in dataset:
            total = sum(row["votes"])
            f.write(json.dumps({"prompt": row["prompt"], "human": [v / total for v in row["votes"]]}) + "\n")
    return model_dir, prompts_file


def datamodule_kwargs(settings: dict, model_dir: Path) -> dict:
    from shala_pl.data.prompts import PromptSettings

    if settings["model"]:
        source = dict(source=settings["source"], path=settings["data"])
    else:
        source = dict(source="synthetic", source_options={"n_examples": settings["n_examples"],
                                                          "n_annotators": settings["n_annotators"]})
    return dict(**source, tokenizer_path=str(model_dir), batch_size=settings["prompts_per_step"], eval_batch_size=16,
                prompt=PromptSettings(verbalizers=settings["verbalizers"]))


def run_child(system: str, settings: dict, workdir: Path, run: int) -> dict:
    child_settings = workdir / "settings.json"
    child_settings.write_text(json.dumps(settings))
    out = workdir / f"{system}-{run}.json"
    env = dict(os.environ)
    threads = str(settings["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false",
               PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", system, "--child-settings",
               str(child_settings), "--child-out", str(out)]
    completed = subprocess.run(command, env=env, cwd=str(workdir), capture_output=True, text=True)
    if completed.returncode != 0 or not out.exists():
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-8000:])
        raise SystemExit(f"error: the {system} run {run} failed (exit code {completed.returncode})")
    return json.loads(out.read_text())


def summarise(runs: list[dict], settings: dict) -> dict:
    per_step = settings["prompts_per_step"] * settings["num_generations"]
    step_s = statistics.median(r["step_s"] for r in runs)
    cpu_s = statistics.median(r["step_cpu_s"] for r in runs)
    return {
        "completions_per_s": per_step / step_s,
        "step_s": step_s,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
        "completions_per_cpu_s": per_step / cpu_s,
        "step_cpu_s": cpu_s,
        "mean_completion_length": statistics.mean(r["mean_completion_length"] for r in runs),
        "torch_threads": runs[0]["torch_threads"],
        "runs": runs,
    }


def print_table(results: dict, settings: dict) -> None:
    print()
    print(f"B={settings['prompts_per_step']} prompts x G={settings['num_generations']} answers x "
          f"T={settings['max_new_tokens']} tokens per step; beta={settings['beta']}, mu=1, fp32 CPU, "
          f"{settings['threads']} torch thread(s); model: {settings['architecture']} hidden {settings['hidden_size']}, "
          f"{settings['num_layers']} layers; median of {settings['repeats']} run(s) x {settings['steps']} steps "
          f"after {settings['warmup']} warm-up")
    header = (f"{'system':<13}{'compl/s':>9}{'step s':>9}{'compl/cpu-s':>13}{'cpu s/step':>12}"
              f"{'peak RSS MB':>13}{'mean len':>10}")
    print(header)
    print("-" * len(header))
    for system in SYSTEMS:
        r = results.get(system)
        if r is None:
            continue
        print(f"{system:<13}{r['completions_per_s']:>9.1f}{r['step_s']:>9.3f}{r['completions_per_cpu_s']:>13.1f}"
              f"{r['step_cpu_s']:>12.3f}{r['peak_rss_mb']:>13.0f}{r['mean_completion_length']:>10.1f}")
    if results.get("readout"):
        r = results["readout"]
        print(f"\nlabel_probs on {r['prompts']} validation prompts: {r['ours_s']:.1f} s, the plain way "
              f"{r['plain_s']:.1f} s ({r['plain_s'] / r['ours_s']:.1f}x); largest probability difference "
              f"{r['max_abs_diff']:.1e}")
    if results.get("trl") and results.get("shala"):
        s, t = results["shala"], results["trl"]
        print(f"\nshala / trl: {s['completions_per_s'] / t['completions_per_s']:.2f}x completions per second "
              f"({s['completions_per_cpu_s'] / t['completions_per_cpu_s']:.2f}x per CPU second), "
              f"peak RSS {s['peak_rss_mb']:.0f} vs {t['peak_rss_mb']:.0f} MB")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.child_settings.read_text()), args.child_out)
    settings = resolve_settings(args)
    systems = list(args.systems) if args.systems else ["shala", "shala_label"] + (["trl"] if args.vs_trl else [])
    if "trl" in systems:
        settings["trl_version"] = trl_version_or_exit()
    import torch
    import transformers

    settings.update(torch_version=torch.__version__, transformers_version=transformers.__version__,
                    python=platform.python_version(), cpu_count=os.cpu_count(), machine=platform.machine())
    settings["profile_dir"] = str(args.profile.resolve()) if args.profile else None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    order = [s for s in SYSTEMS if s in systems]
    runs: dict[str, list[dict]] = {s: [] for s in order}
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
        workdir = Path(tmp)
        model_dir, prompts_file = prepare_inputs(settings, workdir)
        settings_for_children = dict(settings, model_dir=str(model_dir), prompts_file=str(prompts_file))
        for run in range(settings["repeats"]):
            for system in order:
                start = time.perf_counter()
                result = run_child(system, settings_for_children, workdir, run)
                runs[system].append(result)
                print(f"[run {run + 1}/{settings['repeats']}] {system:<12} step {result['step_s']:.3f} s "
                      f"(cpu {result['step_cpu_s']:.3f} s), peak RSS {result['peak_rss_mb']:.0f} MB, "
                      f"process {time.perf_counter() - start:.1f} s", flush=True)
        readout = time_readout(settings, model_dir) if settings["readout"] else None
    results = {system: summarise(runs[system], settings) if runs.get(system) else None for system in SYSTEMS}
    results["settings"] = settings
    if readout is not None:
        results["readout"] = readout
    print_table(results, settings)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


# -- the readout: label_probs on validation prompts, ours against the plain way ---------------------------------------
def plain_label_probs(model, prompt_ids, prompt_mask, verbalizer_ids):
    """The plain way: logits at every position and a full log-softmax; multi-token label words on the prompt repeated
    once per label (what ``shala_pl.models.scoring`` computed before it scored labels on the shared prompt)."""
    import torch
    import torch.nn.functional as F

    from shala_pl.models.shared_prefix import position_ids_from_mask

    batch, labels = prompt_ids.shape[0], len(verbalizer_ids)
    if all(len(t) == 1 for t in verbalizer_ids):
        logits = model(input_ids=prompt_ids, attention_mask=prompt_mask,
                       position_ids=position_ids_from_mask(prompt_mask)).logits[:, -1].float()
        scores = F.log_softmax(logits, -1)[:, [t[0] for t in verbalizer_ids]]
    else:
        longest = max(len(t) for t in verbalizer_ids)
        verb = torch.tensor([t + [0] * (longest - len(t)) for t in verbalizer_ids]).repeat(batch, 1)
        verb_mask = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for t in verbalizer_ids]).repeat(batch, 1)
        ids = torch.cat([prompt_ids.repeat_interleave(labels, 0), verb], 1)
        mask = torch.cat([prompt_mask.repeat_interleave(labels, 0), verb_mask], 1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = F.log_softmax(logits[:, prompt_ids.shape[1] - 1 : -1].float(), -1).gather(2, verb.unsqueeze(-1))
        scores = (logp.squeeze(-1) * verb_mask).sum(-1).view(batch, labels)
    return scores.log_softmax(-1).exp()


def time_readout(settings: dict, model_dir: Path) -> dict:
    import torch

    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.modules.base import VoteModule

    torch.set_num_threads(settings["threads"])
    data = VoteDataModule(**datamodule_kwargs(settings, model_dir))
    data.setup("validate")
    rows = [data._dataset("val")[i] for i in range(min(settings["readout"], len(data._dataset("val"))))]
    batches = [data.collate(rows[i : i + 16]) for i in range(0, len(rows), 16)]
    module = VoteModule(name_or_path=str(model_dir), label_names=data.label_names, verbalizers=data.verbalizers)
    module.configure_model()
    model = module.policy.eval()
    timings, probs = {}, {}
    with torch.no_grad():
        for name, score in (("ours", lambda b: module.label_probs(b)),
                            ("plain", lambda b: plain_label_probs(model, b.prompt_ids, b.prompt_mask,
                                                                  module.verbalizer_ids))):
            start = time.perf_counter()
            probs[name] = torch.cat([score(b) for b in batches])
            timings[name] = time.perf_counter() - start
    return {"prompts": len(rows), "ours_s": timings["ours"], "plain_s": timings["plain"],
            "label_tokens": [len(t) for t in module.verbalizer_ids],
            "max_abs_diff": float((probs["ours"] - probs["plain"]).abs().max())}


# -- the children: one system, one process ----------------------------------------------------------------------------
class StepClock:
    """Wall and CPU time at the end of every step; intervals between step ends are the step times."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def start(self) -> None:
        self.wall, self.cpu = [time.perf_counter()], [time.process_time()]

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def measured(self, warmup: int) -> tuple[list[float], list[float]]:
        diffs = lambda xs: [b - a for a, b in zip(xs[:-1], xs[1:])]  # noqa: E731
        return diffs(self.wall)[warmup:], diffs(self.cpu)[warmup:]


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def child_main(system: str, settings: dict, out: Path) -> int:
    import torch

    torch.set_num_threads(settings["threads"])
    profiler = None
    if settings.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
    clock = StepClock()
    if system == "trl":
        extra = run_trl(settings, clock, profiler)
    else:
        extra = run_shala(settings, clock, profiler, mode="label" if system == "shala_label" else "generate")
    if profiler is not None:
        write_profile(profiler, Path(settings["profile_dir"], f"{system}.txt"))
    wall, cpu = clock.measured(settings["warmup"])
    expected = settings["steps"]
    if len(wall) != expected:
        raise RuntimeError(f"{system}: measured {len(wall)} steps, expected {expected}")
    result = {
        "system": system,
        "step_s": statistics.median(wall),
        "step_cpu_s": statistics.median(cpu),
        "step_s_all": wall,
        "step_cpu_s_all": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        **extra,
    }
    out.write_text(json.dumps(result))
    return 0


def write_profile(profiler, out: Path, top: int = 60) -> None:
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    out.write_text(text.getvalue())


def run_shala(settings: dict, clock: StepClock, profiler, mode: str) -> dict:
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything

    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.modules import GRPOModule
    from shala_pl.rl.losses import LossSettings
    from shala_pl.rl.rollout import RolloutSettings
    from shala_pl.rl.weighting import AmbiguityWeighting

    lengths: list[float] = []

    class MeasuredGRPOModule(GRPOModule):
        """Records the completion lengths; everything else is the module as users run it."""

        def make_rollout(self, batch):
            rollout = super().make_rollout(batch)
            if rollout.completion_mask is not None:
                lengths.append(float(rollout.completion_mask.sum(-1).float().mean()))
            return rollout

    class Clock(Callback):
        def on_train_start(self, trainer, pl_module):
            clock.start()
            if profiler is not None:
                profiler.enable()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.tick()

        def on_train_end(self, trainer, pl_module):
            if profiler is not None:
                profiler.disable()

    seed_everything(settings["seed"], verbose=False)
    model_dir = settings["model_dir"]
    data = VoteDataModule(**datamodule_kwargs(settings, Path(model_dir)))
    lr, wd = settings["learning_rate"], settings["weight_decay"]
    module = MeasuredGRPOModule(
        name_or_path=model_dir, label_names=data.label_names, verbalizers=data.verbalizers, lora=None,
        rollout=RolloutSettings(mode=mode, num_generations=settings["num_generations"],
                                max_new_tokens=settings["max_new_tokens"], min_new_tokens=settings["max_new_tokens"],
                                temperature=settings["temperature"], top_p=settings["top_p"]),
        rewards={"vote_share": 1.0}, advantage_scaling="none", weighting=AmbiguityWeighting(strength=0.0),
        loss=LossSettings(beta=settings["beta"], aggregation="dr_grpo", clip_eps_low=settings["clip_eps_low"],
                          clip_eps_high=settings["clip_eps_high"]),
        num_iterations=1, micro_batches=1, gradient_clip_val=settings["max_grad_norm"],
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True),
    )
    trainer = Trainer(
        max_steps=settings["warmup"] + settings["steps"], accelerator="cpu", devices=1, precision="32-true",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=settings["logging_every_n_steps"],
        callbacks=[Clock()],
    )
    trainer.fit(module, datamodule=data)
    length = statistics.mean(lengths) if lengths else 1.0  # label mode: one label per answer
    return {"mean_completion_length": length}


def run_trl(settings: dict, clock: StepClock, profiler) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from shala_pl.rl.answer_parsing import AnswerParser

    rows = [json.loads(line) for line in Path(settings["prompts_file"]).read_text().splitlines()]
    dataset = Dataset.from_list(rows)
    parser = AnswerParser(settings["label_words"])

    def vote_share(prompts, completions, human, **kwargs):
        """The human vote share of the parsed label; 0 for an unparseable answer."""
        rewards = []
        for text, p in zip(completions, human):
            choice = parser(text)
            rewards.append(float(p[choice]) if choice >= 0 else 0.0)
        return rewards

    holder: dict = {}
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.start()
            if profiler is not None:
                profiler.enable()

        def on_step_end(self, args, state, control, **kwargs):
            clock.tick()
            recorded = holder["trainer"]._metrics["train"].get("completions/mean_length")
            if recorded:
                lengths.append(float(recorded[-1]))

        def on_train_end(self, args, state, control, **kwargs):
            if profiler is not None:
                profiler.disable()

    model_dir = settings["model_dir"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    B, G, T = settings["prompts_per_step"], settings["num_generations"], settings["max_new_tokens"]
    config = GRPOConfig(
        output_dir=str(Path(settings["prompts_file"]).parent / "trl_out"),
        per_device_train_batch_size=B * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=T, generation_kwargs={"min_new_tokens": T},
        temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
        beta=settings["beta"], num_iterations=1, loss_type="dr_grpo", scale_rewards="none",
        epsilon=settings["clip_eps_low"], epsilon_high=settings["clip_eps_high"],
        learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"], lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=settings["max_grad_norm"], optim="adamw_torch",
        max_steps=settings["warmup"] + settings["steps"], use_cpu=True, bf16=False, fp16=False, seed=settings["seed"],
        report_to="none", save_strategy="no", logging_steps=settings["logging_every_n_steps"], disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, log_completions=False, remove_unused_columns=False,
        gradient_checkpointing=settings["trl_gradient_checkpointing"],
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[vote_share], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])
    holder["trainer"] = trainer
    torch.set_num_threads(settings["threads"])
    trainer.train()
    return {"mean_completion_length": statistics.mean(lengths) if lengths else float("nan"),
            "trl_version": __import__("trl").__version__}


if __name__ == "__main__":
    sys.exit(main())
