"""Does a method learn the task with more passes over the data? Validation metrics after every epoch (#19).

One method at one learning rate (choose it on validation first, e.g. with ``benchmark_methods.py --profile real``)
trained on the real quick profile's sample and split (``tools/benchmark_real.py``: the same 400 / 100 / 300 pairs,
batches of 8 prompts, ``configs/smollm2/chaosnli_mnli.yaml`` composed with ``configs/method/<method>.yaml``),
validated before training and after every epoch. Printed, one row per validation: JSD, F1-macro, accuracy,
entropy correlation, contested AUROC; and on the same validation pairs what the constants fitted on the training
split score and the majority-class rate (the accuracy of always answering the training split's commonest label).
Validation only: the test split is not touched.

    python tools/learning_trend.py --model artifacts/smollm2-135m-instruct --source chaosnli_mnli \\
        --data chaosNLI_mnli_m.jsonl --method sft_soft --lr 2.5e-3 --epochs 3 [--json trend.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmark_common as shared  # noqa: E402
from benchmark_real import REAL_PROFILES, REAL_RUN_CONFIG, build_data, data_args, sample_file  # noqa: E402

SHOWN = ("jsd", "f1_macro", "accuracy", "entropy_corr", "contested_auroc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--method", required=True, help="a configs/method/<name>.yaml")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    shared.quiet()
    import lightning.pytorch as pl

    from shala_pl.cli import cli_main

    profile = REAL_PROFILES["quick"]
    with tempfile.TemporaryDirectory(prefix="shala-trend-") as tmp:
        sample, val_fraction, test_fraction = sample_file(args.data, profile, 0, Path(tmp) / "sample.jsonl")
        common = data_args(args.source, sample, val_fraction, test_fraction, profile, {})
        data, _ = build_data(common, str(args.model))
        train, val = data.examples("train"), data.examples("val")
        per_epoch = math.ceil(len(train) / profile.batch_size)
        spec = {"seed": args.seed, "model_dir": args.model, "steps": args.epochs * per_epoch,
                "workdir": Path(tmp) / "run", "data_args": common}
        command = shared.run_command(REAL_RUN_CONFIG, args.method, spec, [
            f"--model.init_args.optimizer.init_args.lr={args.lr}", "--trainer.limit_val_batches=1.0",
            f"--trainer.val_check_interval={per_epoch}", "--trainer.num_sanity_val_steps=0"])
        cli = cli_main(command, run=False)
        rows = []

        class Record(pl.Callback):
            def on_validation_end(self, trainer, module):
                metrics = {k.split("/")[-1]: float(v) for k, v in trainer.callback_metrics.items()
                           if k.startswith("val/") and k.count("/") == 1}
                rows.append({"epoch": trainer.global_step / per_epoch, "step": trainer.global_step,
                             **{k: metrics.get(k) for k in SHOWN}})

        cli.trainer.callbacks.append(Record())
        started = time.time()
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)  # epoch 0: before training
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        seconds = time.time() - started

    constants, constant_runs = shared.baseline_runs(train, val, args.source, "val")
    commonest = Counter(ex.majority for ex in train).most_common(1)[0][0]
    majority_rate = sum(ex.majority == commonest for ex in val) / len(val)
    print(f"{args.method} lr {args.lr}, {args.epochs} epochs of {len(train)} training pairs ({per_epoch} steps "
          f"each), validated on {len(val)} pairs, seed {args.seed}, {seconds:.0f} s")
    print(f"{'':16s}" + "".join(f"{k:>17s}" for k in SHOWN))
    for row in rows:
        print(f"epoch {row['epoch']:<4.1f} step {row['step']:<4d}" + "".join(
            f"{row[k]:17.4f}" if row[k] is not None else f"{'n/a':>17s}" for k in SHOWN))
    for run in constant_runs:
        print(f"{run['method']:16s}{run['jsd']:17.4f}{run['f1_macro']:17.4f}{run['accuracy']:17.4f}")
    print(f"majority-class rate on validation (always label {commonest}): {majority_rate:.3f}")
    if args.json:
        shared.write_json({"method": args.method, "lr": args.lr, "epochs": args.epochs, "seed": args.seed,
                           "seconds": seconds, "rows": rows, "constants": constants,
                           "constant_val": {r["method"]: {k: r.get(k) for k in SHOWN} for r in constant_runs},
                           "majority_rate_val": majority_rate}, args.json)


if __name__ == "__main__":
    main()
