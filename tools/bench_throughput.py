"""Training throughput of group-rollout RL: shala_pl's ``GRPOModule`` against TRL's ``GRPOTrainer``.

    python tools/bench_throughput.py [--vs-trl] [--lora] [--json OUT] [--steps N] [--warmup N] [--repeats N] [--quick]
    python tools/bench_throughput.py --model DIR [--data PATH --source NAME] [--verbalizers JSON] [--readout N] ...

``--model DIR`` measures a model directory (e.g. SmolLM2-135M-Instruct from ``shala-pl get-model``) on the real task:
the prompts and label words of ``--source``/``--data`` (default: the SNLI sample in ``tests/fixtures``), with
defaults sized for 2 CPU cores (B=4, G=8, T=16, 2 threads, 1 warm-up + 2 steps, 1 run). ``--verbalizers``
overrides the label words (e.g. NLI's multi-token label names, to see what they cost in label mode).
``--readout N`` also times scoring N validation prompts with ``label_probs`` (no training), ours against the plain
way (the prompt repeated once per label, logits at every position, a full log-softmax), checks that both give
the same probabilities and, under bf16, compares them with fp32's.

One tiny model is built with the project's own builder (``shala_pl.models.tiny.build_tiny_model``; by default a
qwen2 with hidden size 256, 4 layers, 4 heads: ~4.3M parameters, larger than the test model so that generation and
the policy forward/backward, not Python glue, are what is measured) and one prompt set is rendered from the
synthetic task. Each system then runs ``warmup + steps`` GRPO training steps on it, with the same settings:

- prompts per step (B), answers per prompt (G = ``num_generations``), ``max_new_tokens`` (T). EOS is blocked until
  T tokens exist in both systems (our ``RolloutSettings.min_new_tokens``, TRL's ``generation_kwargs``), so every
  answer is exactly T tokens long in both and the work per step is identical; the mean completion length is
  measured and reported for each system.
- sampling temperature 1.0, top_p 1.0, no top-k; beta (default 0.0: no reference model, no reference pass);
  mu = 1 (one optimizer step per rollout batch, no old-log-prob pass); fused AdamW, constant learning rate, no
  weight decay, gradient clipping at 1.0; the Dr. GRPO loss (sum over tokens / (N * T)), advantages not
  std-scaled, clip range 0.2 / 0.28; sdpa attention; no gradient checkpointing.
- the precision (``--precision``; default ``auto``: ``bf16-mixed`` where this CPU multiplies bf16 natively, else
  ``32-true``, by ``shala_pl.precision``): master weights in fp32 in both, bf16 autocast for the matmuls
  (TRL: ``bf16=True``).
- the same cheap Python reward: the answer parsed with ``shala_pl.rl.answer_parsing.AnswerParser``, rewarded with the
  human vote share of the parsed label, 0 for an unparseable answer (ours: ``invalid_reward: 0.0``).
- the same number of torch threads (``--threads``; also OMP/MKL_NUM_THREADS), no logger, no progress bar, no
  checkpoints in both.

Systems: ``shala`` = our ``GRPOModule`` in ``generate`` mode, ``shala_label`` = the same in ``label`` mode (labels
sampled from the exact label distribution; no text is generated), ``trl`` = TRL's ``GRPOTrainer`` at the settings
above (``--vs-trl``; ``pip install -e '.[bench]'``), ``trl_default`` = TRL with its own ``GRPOConfig`` defaults for
the speed settings (optimizer, precision, gradient checkpointing; the model loaded by TRL from the path), for
reference. ``--lora`` adds ``shala_lora`` and (with ``--vs-trl``) ``trl_lora``: generate mode with LoRA r=16,
alpha=32 on q/k/v/o (TRL through its ``peft_config``). Each runs through its own trainer, as users run it (a
Lightning ``Trainer``, TRL's ``GRPOTrainer.train``), in its OWN subprocess, so that each reports its own peak
resident memory (VmHWM). A step's time is the wall time between consecutive step ends (data loading, generation,
reward, update and the trainer's own work all included). The first ``warmup`` steps of each run are excluded; each
run gives the median of its measured steps, and the table reports the median over ``repeats`` runs (run
interleaved). Per-step CPU time of the process is reported too, and the load average at each run's start and end
(the machine may be shared).

Phases: our runs also time each phase of a step (sampling/decoding, scoring forward, backward, optimizer) and,
in the same process after training, its physical bound on this machine (``tools/bench_bounds.py``: the model's
matmuls at its own shapes, rows and dtype; memory bandwidth for decoding and the optimizer); the readout gives the
evaluation phase's.

Output: a table on stdout and, with ``--json OUT``, ``{"shala": {...}, "trl": {...} or null, ..., "phases": [...],
"settings": {...}}``, each system with ``completions_per_s``, ``step_s``, ``peak_rss_mb`` (and more); TRL rows
carry ``settings`` (the optimizer, precision, gradient checkpointing, attention and LoRA they ran with).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEMS = ("shala", "trl", "trl_default", "shala_label", "shala_lora", "trl_lora")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
LORA = dict(r=16, alpha=32, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
PRECISIONS = ("auto", "bf16-mixed", "32-true")

FULL = dict(hidden_size=256, num_layers=4, num_heads=4, prompts_per_step=8, num_generations=8, max_new_tokens=32,
            steps=5, warmup=2, repeats=3)
REAL = dict(prompts_per_step=4, num_generations=8, max_new_tokens=16, steps=2, warmup=1, repeats=1, threads=2)
SNLI_SAMPLE = REPO / "tests" / "fixtures" / "snli_1.0_test_part.jsonl"
QUICK = dict(hidden_size=64, num_layers=2, num_heads=4, prompts_per_step=2, num_generations=3, max_new_tokens=4,
             steps=2, warmup=1, repeats=1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vs-trl", action="store_true",
                        help="also run TRL's GRPOTrainer, tuned (trl) and at its defaults (trl_default); needs trl")
    parser.add_argument("--lora", action="store_true",
                        help="also run generate mode with LoRA r=16, alpha=32 on q/k/v/o (shala_lora; trl_lora with "
                             "--vs-trl)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): bf16-mixed where this CPU multiplies bf16 natively, else 32-true")
    parser.add_argument("--base-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="storage dtype of the frozen base weights under LoRA (shala_lora) and of the readout's "
                             "model (default float32)")
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
        quick=bool(args.quick), beta=args.beta, seed=args.seed, **resolve_precision(args.precision),
        base_dtype=args.base_dtype,
        model=str(args.model.resolve()) if args.model else None, source=args.source if args.model else "synthetic",
        data=str(args.data.resolve()) if args.model else None, verbalizers=args.verbalizers or {}, readout=args.readout,
        architecture="qwen2", vocab_size=1024, temperature=1.0, top_p=1.0, top_k=0, num_iterations=1, lora=LORA,
        attn_implementation="sdpa", gradient_checkpointing=False, device="cpu", learning_rate=1e-5, weight_decay=0.0, max_grad_norm=1.0,
        loss_aggregation="dr_grpo", advantage_scaling="none", clip_eps_low=0.2, clip_eps_high=0.28,
        reward="vote_share of the parsed answer, 0 if unparseable", logging_every_n_steps=10,
        n_examples=max(64, 4 * settings["prompts_per_step"] * (settings["warmup"] + settings["steps"])),
        n_annotators=20,
    )
    return settings


def resolve_precision(requested: str) -> dict:
    """``auto``: this machine's choice for a CPU run asking for bf16 (``shala_pl.precision``), with its note."""
    from shala_pl.precision import cpu_precision

    if requested != "auto":
        return {"precision": requested, "precision_note": f"precision: {requested} (--precision)"}
    choice = cpu_precision("bf16-mixed", "cpu")
    return {"precision": choice.precision, "precision_note": choice.note}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
    median_run = min(runs, key=lambda r: abs(r["step_s"] - step_s))
    summary = {
        "completions_per_s": per_step / step_s,
        "step_s": step_s,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
        "completions_per_cpu_s": per_step / cpu_s,
        "step_cpu_s": cpu_s,
        "mean_completion_length": statistics.mean(r["mean_completion_length"] for r in runs),
        "torch_threads": runs[0]["torch_threads"],
        "load_average": [r["load_average"] for r in runs],
        "runs": runs,
    }
    for key in ("settings", "phases"):
        if key in median_run:
            summary[key] = median_run[key]
    return summary


def phase_table(results: dict) -> list[dict]:
    """Every measured phase, ours (from the run with the median step) and the readout's evaluation."""
    rows = [dict(row, system=system) for system in SYSTEMS for row in (results.get(system) or {}).get("phases", [])]
    return rows + [dict(row, system="readout") for row in (results.get("readout") or {}).get("phases", [])]


def ratio_lines(results: dict) -> list[str]:
    lines = []
    for ours, theirs in (("shala", "trl"), ("shala_lora", "trl_lora"), ("shala", "trl_default")):
        s, t = results.get(ours), results.get(theirs)
        if s and t:
            lines.append(f"{ours} / {theirs}: {s['completions_per_s'] / t['completions_per_s']:.2f}x completions per "
                         f"second ({s['completions_per_cpu_s'] / t['completions_per_cpu_s']:.2f}x per CPU second), "
                         f"peak RSS {s['peak_rss_mb']:.0f} vs {t['peak_rss_mb']:.0f} MB "
                         f"({s['peak_rss_mb'] / t['peak_rss_mb']:.2f}x)")
    if results.get("shala") and results.get("shala_label"):
        lines.append(f"shala_label step / shala step: {results['shala_label']['step_s'] / results['shala']['step_s']:.2f}")
    return lines


def print_table(results: dict, settings: dict) -> None:
    print()
    print(f"B={settings['prompts_per_step']} prompts x G={settings['num_generations']} answers x "
          f"T={settings['max_new_tokens']} tokens per step; beta={settings['beta']}, mu=1, {settings['precision']} "
          f"CPU, {settings['threads']} torch thread(s); model: {settings['architecture']} hidden "
          f"{settings['hidden_size']}, {settings['num_layers']} layers; median of {settings['repeats']} run(s) x "
          f"{settings['steps']} steps after {settings['warmup']} warm-up; load average at start "
          f"{settings['load_average_start']}")
    header = (f"{'system':<13}{'compl/s':>9}{'step s':>9}{'compl/cpu-s':>13}{'cpu s/step':>12}"
              f"{'peak RSS MB':>13}{'mean len':>10}")
    print(header)
    print("-" * len(header))
    for system in SYSTEMS:
        r = results.get(system)
        if r is None:
            continue
        print(f"{system:<13}{r['completions_per_s']:>9.2f}{r['step_s']:>9.3f}{r['completions_per_cpu_s']:>13.2f}"
              f"{r['step_cpu_s']:>12.3f}{r['peak_rss_mb']:>13.0f}{r['mean_completion_length']:>10.1f}")
    for system in ("trl", "trl_default", "trl_lora"):
        if results.get(system):
            print(f"{system} settings: {json.dumps(results[system]['settings'])}")
    if results.get("readout"):
        r = results["readout"]
        print(f"\nlabel_probs on {r['prompts']} validation prompts ({r['precision']}, base weights {r['dtype']}): "
              f"{r['ours_s']:.1f} s, the plain way {r['plain_s']:.1f} s ({r['plain_s'] / r['ours_s']:.1f}x); largest "
              f"probability difference {r['max_abs_diff']:.1e}")
        if "fp32" in r:
            f = r["fp32"]
            print(f"  against fp32 ({f['seconds']:.1f} s): largest probability difference {f['max_abs_diff']:.1e}, "
                  f"mean JSD to the votes {r['mean_jsd']:.5f} vs {f['mean_jsd']:.5f}")
    rows = phase_table(results)
    if rows:
        print(f"\n{'system':<12}{'phase':<34}{'s/step':>8}{'achieved':>12}{'bound':>12}  {'unit':<8}{'of bound':>9}")
        for row in rows:
            rate = "" if row.get("rate") is None else f"{row['rate']:.1f}"
            bound = "" if row.get("bound_rate") is None else f"{row['bound_rate']:.1f}"
            print(f"{row['system']:<12}{row['phase']:<34}{row['seconds']:>8.3f}{rate:>12}{bound:>12}  "
                  f"{row.get('unit') or '':<8}{row['of_bound']:>8.0%}")
    lines = ratio_lines(results)
    if lines:
        print("\n" + "\n".join(lines))


def default_systems(args: argparse.Namespace) -> list[str]:
    systems = ["shala", "shala_label"] + (["trl", "trl_default"] if args.vs_trl else [])
    if args.lora:
        systems += ["shala_lora"] + (["trl_lora"] if args.vs_trl else [])
    return systems


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.child_settings.read_text()), args.child_out)
    settings = resolve_settings(args)
    systems = list(args.systems) if args.systems else default_systems(args)
    if any(s.startswith("trl") for s in systems):
        settings["trl_version"] = trl_version_or_exit()
    import torch
    import transformers

    from shala_pl.precision import native_bf16_flags

    settings.update(torch_version=torch.__version__, transformers_version=transformers.__version__,
                    python=platform.python_version(), cpu_count=os.cpu_count(), machine=platform.machine(),
                    cpu_model=cpu_model(), native_bf16_flags=native_bf16_flags(), load_average_start=load_average())
    print(settings["precision_note"], flush=True)
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
                      f"process {time.perf_counter() - start:.1f} s, load {result['load_average']}", flush=True)
        readout = time_readout(settings, model_dir) if settings["readout"] else None
    settings["load_average_end"] = load_average()
    results = {system: summarise(runs[system], settings) if runs.get(system) else None for system in SYSTEMS}
    if readout is not None:
        results["readout"] = readout
    results["phases"] = phase_table(results)
    results["settings"] = settings
    print_table(results, settings)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def compute_dtype(settings: dict):
    """The matmuls' dtype: bf16 under bf16 autocast, else fp32."""
    import torch

    return torch.bfloat16 if settings["precision"] == "bf16-mixed" else torch.float32


def autocast(settings: dict):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["precision"] == "bf16-mixed")


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
    """``label_probs`` on the validation prompts at the run's precision, the plain way beside it, fp32 as the
    reference under bf16; the evaluation phase against its matmul bound, measured here."""
    import torch

    from bench_bounds import ModelShape, flop_row, time_linears
    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.metrics.distribution import jensen_shannon_distance
    from shala_pl.modules.base import VoteModule

    torch.set_num_threads(settings["threads"])
    data = VoteDataModule(**datamodule_kwargs(settings, model_dir))
    if settings["readout"] > len(data.examples("val")):  # a larger validation split, drawn the same seeded way
        fraction = min(0.5, (settings["readout"] + 0.5) / len(data.examples("all")))
        data = VoteDataModule(**datamodule_kwargs(settings, model_dir), val_fraction=fraction)
    data.setup("validate")
    rows = [data._dataset("val")[i] for i in range(min(settings["readout"], len(data._dataset("val"))))]
    batches = [data.collate(rows[i : i + 16]) for i in range(0, len(rows), 16)]

    def load(dtype: str):
        module = VoteModule(name_or_path=str(model_dir), label_names=data.label_names, verbalizers=data.verbalizers,
                            dtype=dtype)
        module.configure_model()
        module.policy.eval()
        return module

    module = load(settings["base_dtype"])
    model = module.policy
    human = torch.cat([b.human for b in batches]).float()
    timings, probs = {}, {}
    passes = [("ours", lambda b: module.label_probs(b)),
              ("plain", lambda b: plain_label_probs(model, b.prompt_ids, b.prompt_mask, module.verbalizer_ids))]
    with torch.no_grad():
        for name, score in passes:
            start = time.perf_counter()
            with autocast(settings):
                probs[name] = torch.cat([score(b) for b in batches]).float()
            timings[name] = time.perf_counter() - start
        if settings["precision"] == "bf16-mixed" or settings["base_dtype"] != "float32":
            reference = load("float32")
            start = time.perf_counter()
            probs["fp32"] = torch.cat([reference.label_probs(b) for b in batches]).float()
            timings["fp32"] = time.perf_counter() - start
            del reference
    mean_jsd = lambda p: float(jensen_shannon_distance(human, p).pow(2).mean())  # noqa: E731
    result = {"prompts": len(rows), "precision": settings["precision"], "dtype": settings["base_dtype"],
              "ours_s": timings["ours"], "plain_s": timings["plain"],
              "label_tokens": [len(t) for t in module.verbalizer_ids],
              "max_abs_diff": float((probs["ours"] - probs["plain"]).abs().max()),
              "mean_jsd": mean_jsd(probs["ours"]), "load_average": load_average()}
    if "fp32" in probs:
        result["fp32"] = {"seconds": timings["fp32"], "mean_jsd": mean_jsd(probs["fp32"]),
                          "max_abs_diff": float((probs["ours"] - probs["fp32"]).abs().max()),
                          "mean_abs_diff": float((probs["ours"] - probs["fp32"]).abs().mean())}
    shape = ModelShape.of(model.config)
    tokens = sum(b.prompt_ids.numel() for b in batches)
    flops = shape.forward_flops(tokens, len(rows))  # one-token words; multi-token words add a few rows
    per_batch = time_linears(shape, tokens // len(batches), len(rows) // len(batches), compute_dtype(settings))
    result["phases"] = [flop_row("evaluation (label_probs forward)", timings["ours"], flops,
                                 per_batch * len(batches))]
    return result


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


class PhaseClock:
    """Seconds spent in named parts of each training step (summed within a step), and the step's shapes."""

    def __init__(self):
        self.steps: list[dict[str, float]] = [{}]
        self.shapes: dict[str, int] = {}

    @contextlib.contextmanager
    def time(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            step = self.steps[-1]
            step[name] = step.get(name, 0.0) + time.perf_counter() - start

    def end_step(self) -> None:
        self.steps.append({})

    def median(self, warmup: int) -> dict[str, float]:
        measured = self.steps[warmup:-1]
        return {name: statistics.median(step.get(name, 0.0) for step in measured) for name in measured[0]}


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
    load_at_start = load_average()
    profiler = None
    if settings.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
    clock = StepClock()
    if system.startswith("trl"):
        extra = run_trl(settings, clock, profiler, variant=system)
    else:
        mode = "label" if system == "shala_label" else "generate"
        extra = run_shala(settings, clock, profiler, mode=mode, lora=system == "shala_lora")
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
        "load_average": {"start": load_at_start, "end": load_average()},
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


def run_shala(settings: dict, clock: StepClock, profiler, mode: str, lora: bool) -> dict:
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything

    from shala_pl.data.datamodule import VoteDataModule
    from shala_pl.models.loading import LoraSettings
    from shala_pl.modules import GRPOModule
    from shala_pl.rl.losses import LossSettings
    from shala_pl.rl.rollout import RolloutSettings
    from shala_pl.rl.weighting import AmbiguityWeighting

    lengths: list[float] = []
    phases = PhaseClock()

    class MeasuredGRPOModule(GRPOModule):
        """Records completion lengths, shapes and each phase's time; everything else is the module as users run it."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizer_step = self.update.step  # the whole update: micro-batch losses, backward, clipping, step

            def timed_update(*step_args, **step_kwargs):
                with phases.time("update"):
                    return optimizer_step(*step_args, **step_kwargs)
            self.update.step = timed_update

        def make_rollout(self, batch):
            with phases.time("rollout"):
                rollout, training_logp = super().make_rollout(batch)
            phases.shapes.update(prompts=batch.prompt_ids.shape[0], prompt_len=batch.prompt_ids.shape[1])
            if rollout.completion_mask is not None:
                lengths.append(float(rollout.completion_mask.sum(-1).float().mean()))
                phases.shapes.update(rows=rollout.completion_mask.shape[0], answer_len=rollout.completion_mask.shape[1])
            return rollout, training_logp

        def micro_batch_loss(self, *args, **kwargs):
            with phases.time("loss_forward"):
                return super().micro_batch_loss(*args, **kwargs)

        def manual_backward(self, loss, *args, **kwargs):
            with phases.time("backward"):
                return super().manual_backward(loss, *args, **kwargs)

    class Clock(Callback):
        def on_train_start(self, trainer, pl_module):
            clock.start()
            if profiler is not None:
                profiler.enable()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.tick()
            phases.end_step()

        def on_train_end(self, trainer, pl_module):
            if profiler is not None:
                profiler.disable()

    seed_everything(settings["seed"], verbose=False)
    model_dir = settings["model_dir"]
    data = VoteDataModule(**datamodule_kwargs(settings, Path(model_dir)))
    lr, wd = settings["learning_rate"], settings["weight_decay"]
    module = MeasuredGRPOModule(
        name_or_path=model_dir, label_names=data.label_names, verbalizers=data.verbalizers,
        lora=LoraSettings(**settings["lora"]) if lora else None, dtype=settings["base_dtype"] if lora else "float32",
        attn_implementation=settings["attn_implementation"], gradient_checkpointing=settings["gradient_checkpointing"],
        rollout=RolloutSettings(mode=mode, num_generations=settings["num_generations"],
                                max_new_tokens=settings["max_new_tokens"], min_new_tokens=settings["max_new_tokens"],
                                temperature=settings["temperature"], top_p=settings["top_p"]),
        rewards={"vote_share": 1.0}, invalid_reward=0.0, advantage_scaling="none",
        weighting=AmbiguityWeighting(strength=0.0),
        loss=LossSettings(beta=settings["beta"], aggregation="dr_grpo", clip_eps_low=settings["clip_eps_low"],
                          clip_eps_high=settings["clip_eps_high"]),
        num_iterations=1, micro_batches=1, gradient_clip_val=settings["max_grad_norm"],
        optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True),
    )
    trainer = Trainer(
        max_steps=settings["warmup"] + settings["steps"], accelerator="cpu", devices=1,
        precision=settings["precision"], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        log_every_n_steps=settings["logging_every_n_steps"], callbacks=[Clock()],
    )
    trainer.fit(module, datamodule=data)
    length = statistics.mean(lengths) if lengths else 1.0  # label mode: one label per answer
    training_peak = peak_rss_mb()  # before the bound measurements, whose buffers are not the trainer's
    rows = shala_phases(module.policy, phases.median(settings["warmup"]), phases.shapes, mode, lora,
                        compute_dtype(settings))
    return {"mean_completion_length": length, "phases": rows, "peak_rss_mb": training_peak}


def shala_phases(model, seconds: dict, shapes: dict, mode: str, lora: bool, dtype) -> list[dict]:
    """Each phase's achieved rate against its bound, both measured in this process (``tools/bench_bounds.py``)."""
    from bench_bounds import (ADAMW_BYTES_PER_PARAM, ModelShape, bytes_row, copy_bandwidth, flop_row, read_bandwidth,
                              time_linears)

    shape = ModelShape.of(model.config)
    b, p = shapes["prompts"], shapes["prompt_len"]
    backward_factor = 1 if lora else 2  # frozen weights: input gradients only
    if mode == "generate":
        n, t = shapes["rows"], shapes["answer_len"]
        # the prompts once (LM head on their last position), then the answers on their cache (T - 1 tokens each)
        forward_parts = [(b * p, b), (n * (t - 1), n * (t - 1))]
        decoding_parts = [(b * p, b)] + [(n, n)] * (t - 1)
        forward_s = seconds["loss_forward"]
    else:
        forward_parts, decoding_parts = [(b * p, b)], []
        forward_s = seconds["rollout"] + seconds["loss_forward"]  # the rollout's forward is the training forward
    flops = lambda parts: sum(shape.forward_flops(rows, head) for rows, head in parts)  # noqa: E731
    bound = lambda parts, **kw: sum(time_linears(shape, rows, head, dtype, **kw) for rows, head in parts)  # noqa: E731
    table = []
    if decoding_parts:
        weight_bytes = sum(x.numel() * x.element_size() for x in model.parameters())
        table.append(flop_row("sampling/decoding: matmuls", seconds["rollout"], flops(decoding_parts),
                              bound(decoding_parts[:2]) + bound(decoding_parts[1:2]) * (len(decoding_parts) - 2)))
        table.append(bytes_row("sampling/decoding: weight bytes", seconds["rollout"], weight_bytes * t,
                               read_bandwidth()))
    table.append(flop_row("scoring forward", forward_s, flops(forward_parts), bound(forward_parts)))
    backward = flop_row("backward", seconds["backward"], backward_factor * flops(forward_parts),
                        bound(forward_parts, backward=True, weight_grads=not lora))
    trainable = sum(x.numel() for x in model.parameters() if x.requires_grad)
    optimizer_s = max(seconds["update"] - seconds["loss_forward"] - seconds["backward"], 1e-9)
    optimizer = bytes_row("optimizer (fused AdamW, clipping)", optimizer_s, trainable * ADAMW_BYTES_PER_PARAM,
                          copy_bandwidth())
    update_s = backward["seconds"] + optimizer["seconds"]
    update_bound = backward["bound_s"] + optimizer["bound_s"]
    table += [backward, optimizer, {"phase": "update (backward + optimizer)", "seconds": update_s, "rate": None,
                                    "bound_rate": None, "unit": None, "bound_s": update_bound,
                                    "of_bound": update_bound / update_s}]
    return table


def run_trl(settings: dict, clock: StepClock, profiler, variant: str) -> dict:
    """``trl``: TRL at the settings a user picks for speed, the same as ours (fused AdamW, our precision, sdpa, no
    gradient checkpointing); ``trl_lora``: the same with LoRA through ``peft_config``; ``trl_default``: TRL's own
    ``GRPOConfig`` defaults for optimizer, precision and gradient checkpointing, the model loaded by TRL."""
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
    B, G, T = settings["prompts_per_step"], settings["num_generations"], settings["max_new_tokens"]
    speed = {}  # trl_default: GRPOConfig's own defaults
    if variant != "trl_default":
        speed = dict(optim="adamw_torch_fused", bf16=settings["precision"] == "bf16-mixed", fp16=False,
                     gradient_checkpointing=settings["gradient_checkpointing"])
    config = GRPOConfig(
        output_dir=str(Path(settings["prompts_file"]).parent / "trl_out"),
        per_device_train_batch_size=B * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=T, generation_kwargs={"min_new_tokens": T},
        temperature=settings["temperature"], top_p=settings["top_p"], top_k=settings["top_k"],
        beta=settings["beta"], num_iterations=1, loss_type="dr_grpo", scale_rewards="none",
        epsilon=settings["clip_eps_low"], epsilon_high=settings["clip_eps_high"],
        learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"], lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=settings["max_grad_norm"], max_steps=settings["warmup"] + settings["steps"],
        use_cpu=True, seed=settings["seed"], report_to="none", save_strategy="no",
        logging_steps=settings["logging_every_n_steps"], disable_tqdm=True, dataloader_num_workers=0,
        dataloader_pin_memory=False, log_completions=False, remove_unused_columns=False, **speed,
    )
    if variant == "trl_default":
        model = model_dir
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                     attn_implementation=settings["attn_implementation"])
    peft_config = None
    if variant == "trl_lora":
        from peft import LoraConfig

        lora = settings["lora"]
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[vote_share], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()], peft_config=peft_config)
    holder["trainer"] = trainer
    torch.set_num_threads(settings["threads"])
    trainer.train()
    trained = trainer.model
    used = {"optim": str(getattr(config.optim, "value", config.optim)), "bf16": bool(config.bf16),
            "fp16": bool(config.fp16), "gradient_checkpointing": bool(config.gradient_checkpointing),
            "attn_implementation": trained.config._attn_implementation,
            "weights_dtype": str(next(trained.parameters()).dtype).removeprefix("torch."),
            "lora": settings["lora"] if peft_config is not None else None}
    return {"mean_completion_length": statistics.mean(lengths) if lengths else float("nan"),
            "trl_version": __import__("trl").__version__, "settings": used}


if __name__ == "__main__":
    sys.exit(main())
